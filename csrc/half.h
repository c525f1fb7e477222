// Portable float32 <-> IEEE-754 binary16 ("half") conversion for the float16 storage mode of the state cache.
//
// Written as branch-free integer/float arithmetic so that the compiler can vectorise the row loops of
// row_kernels.h without F16C or any other instruction-set extension; the results equal numpy's astype(np.float16) /
// astype(np.float32) (round to nearest, ties to even) for every finite input inside the half range, which
// tests/cache/test_state_cache.py checks against numpy and csrc/test_state_cache.cpp checks exhaustively.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace t2arec {

// Largest finite half, 65504, as float32 bits. Callers refuse |x| above it before converting (see
// StateCache::put), so the encoder below never has to produce inf or NaN.
constexpr uint32_t kHalfMaxAsFloatBits = 0x477FE000u;

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// cond ? a : b without a branch. Written with masks because GCC does not if-convert the ternary here, and a
// branch inside the row loops stops vectorisation (measured: ~4x slower conversion).
inline uint32_t select_bits(bool cond, uint32_t a, uint32_t b) {
    const uint32_t mask = 0u - static_cast<uint32_t>(cond);
    return (a & mask) | (b & ~mask);
}

// float32 -> half, round to nearest even. Precondition: |f| <= 65504 (or NaN/inf never reach here).
inline uint16_t float_to_half(float f) {
    const uint32_t bits = float_bits(f);
    const uint32_t sign = (bits >> 16) & 0x8000u;
    const uint32_t abs_bits = bits & 0x7FFFFFFFu;

    // Normal halves (|f| >= 2^-14): rebias the exponent from 127 to 15 and drop 13 mantissa bits. Adding
    // 0xFFF plus the lowest kept bit before the shift rounds to nearest with ties to even; a mantissa carry
    // correctly bumps the exponent.
    const uint32_t odd = (abs_bits >> 13) & 1u;
    const uint32_t normal = (abs_bits - ((127u - 15u) << 23) + 0xFFFu + odd) >> 13;

    // Subnormal halves (|f| < 2^-14) are multiples of 2^-24. Adding 0.5f, whose unit in the last place is
    // exactly 2^-24, lets the FPU do the rounding (ties to even); the mantissa of the sum is the half's bits.
    const float shifted = bits_float(abs_bits) + 0.5f;
    const uint32_t subnormal = float_bits(shifted) - float_bits(0.5f);

    const uint32_t magnitude = select_bits(abs_bits < (113u << 23), subnormal, normal);  // 113 = 127 - 14
    return static_cast<uint16_t>(sign | magnitude);
}

// half -> float32, exact for every half including subnormals, infinities and NaN.
inline float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp_mant = static_cast<uint32_t>(h & 0x7FFFu) << 13;  // half mantissa into float position
    const uint32_t half_exp = exp_mant & (0x1Fu << 23);

    // Normal: rebias exponent 15 -> 127.
    const uint32_t normal = exp_mant + ((127u - 15u) << 23);
    // Inf/NaN: the exponent must become 255, not 15 + 112.
    const uint32_t special = exp_mant + ((255u - 31u) << 23);
    // Subnormal (or zero): value = m * 2^-24. Build 2^-14 * (1 + m/1024) with a normal exponent and subtract
    // 2^-14; both operands are normal floats, so no denormal arithmetic is involved.
    const float sub = bits_float(exp_mant + (113u << 23)) - bits_float(113u << 23);

    const uint32_t nonzero_exp = select_bits(half_exp == (0x1Fu << 23), special, normal);
    const uint32_t out = select_bits(half_exp == 0, float_bits(sub), nonzero_exp);
    return bits_float(sign | out);
}

}  // namespace t2arec
