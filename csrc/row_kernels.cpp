#include "row_kernels.h"

#ifdef T2AREC_HAVE_AVX2_KERNELS
#include <immintrin.h>
#endif

namespace t2arec {

#ifdef T2AREC_HAVE_AVX2_KERNELS
namespace avx2 {

#define T2AREC_AVX2 __attribute__((target("avx2,f16c")))

bool cpu_supported() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

// vcvtps2ph with immediate 0 rounds to nearest even, like float_to_half. Inputs are within +-65504 (put()
// checks first), where the two agree bit for bit.
T2AREC_AVX2 void floats_to_halves(const float* src, uint16_t* dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
    }
    portable::floats_to_halves(src + i, dst + i, n - i);
}

T2AREC_AVX2 void halves_to_floats(const uint16_t* src, float* dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    portable::halves_to_floats(src + i, dst + i, n - i);
}

// The portable loop, inlined here and vectorised with 256-bit registers.
T2AREC_AVX2 bool any_abs_above(const float* x, size_t n, uint32_t limit_abs_bits) {
    return portable::any_abs_above(x, n, limit_abs_bits);
}

#undef T2AREC_AVX2

}  // namespace avx2
#endif

namespace {

struct RowKernels {
    const char* isa;
    void (*to_halves)(const float*, uint16_t*, size_t);
    void (*to_floats)(const uint16_t*, float*, size_t);
    bool (*abs_above)(const float*, size_t, uint32_t);
};

RowKernels pick_kernels() {
#ifdef T2AREC_HAVE_AVX2_KERNELS
    if (avx2::cpu_supported())
        return {"avx2+f16c", avx2::floats_to_halves, avx2::halves_to_floats, avx2::any_abs_above};
#endif
    return {"portable", portable::floats_to_halves, portable::halves_to_floats, portable::any_abs_above};
}

// Chosen once, at first use (a thread-safe static since C++11).
const RowKernels& kernels() {
    static const RowKernels chosen = pick_kernels();
    return chosen;
}

}  // namespace

const char* row_kernels_isa() { return kernels().isa; }

void floats_to_halves(const float* src, uint16_t* dst, size_t n) { kernels().to_halves(src, dst, n); }

void halves_to_floats(const uint16_t* src, float* dst, size_t n) { kernels().to_floats(src, dst, n); }

bool any_abs_above(const float* x, size_t n, uint32_t limit_abs_bits) {
    return kernels().abs_above(x, n, limit_abs_bits);
}

}  // namespace t2arec
