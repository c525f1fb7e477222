// The three loops that touch every float of a state row: float32 -> half, half -> float32, and the "is every value
// finite and in range" check that put() runs over a whole batch before writing anything.
//
// `portable::` versions are plain C++ the compiler vectorises for any target. On x86-64 (GCC/Clang) an
// `avx2::` version is compiled as well (AVX2 + F16C conversion instructions) and picked at run time when the CPU
// has them; the rest of the cache calls the dispatching functions at the bottom and never knows which ran.
// Both versions give identical results (csrc/test_state_cache.cpp checks them against each other).
#pragma once

#include <cstddef>
#include <cstdint>

#include "half.h"

namespace t2arec {
namespace portable {

inline void floats_to_halves(const float* src, uint16_t* dst, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
}

inline void halves_to_floats(const uint16_t* src, float* dst, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}

// True when some |x[i]| (as float bits, so NaN and inf count as huge) exceeds limit_abs_bits. The comparison
// is done on the bits as signed integers (they are non-negative once the sign is cleared), which SSE2 has.
inline bool any_abs_above(const float* x, size_t n, uint32_t limit_abs_bits) {
    const int32_t limit = static_cast<int32_t>(limit_abs_bits);
    int32_t above = 0;
    for (size_t i = 0; i < n; ++i) above |= static_cast<int32_t>(float_bits(x[i]) & 0x7FFFFFFFu) > limit;
    return above != 0;
}

}  // namespace portable

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define T2AREC_HAVE_AVX2_KERNELS 1
namespace avx2 {
bool cpu_supported();  // AVX2 and F16C present
void floats_to_halves(const float* src, uint16_t* dst, size_t n);
void halves_to_floats(const uint16_t* src, float* dst, size_t n);
bool any_abs_above(const float* x, size_t n, uint32_t limit_abs_bits);
}  // namespace avx2
#endif

// Dispatching entry points used by the cache.
const char* row_kernels_isa();  // "avx2+f16c" or "portable"
void floats_to_halves(const float* src, uint16_t* dst, size_t n);
void halves_to_floats(const uint16_t* src, float* dst, size_t n);
bool any_abs_above(const float* x, size_t n, uint32_t limit_abs_bits);

}  // namespace t2arec
