// The int8 kernels' vector interface, one struct per compilation of
// kernels/int8_depthwise.cc (chosen by the WBMM_INT8_* macro the build sets):
//
//   Dot(acc, x, w)      acc[l] += sum over g < kGroup of x[l * kGroup + g] * w[l * kGroup + g]
//   PackColumn(src, s, dst)  dst[l * kGroup + g] = src[l + g * s] + kInputOffset (int8 -> TX)
//   Requantize(...)     RequantizeFp32 (int8_depthwise.h) on kLanes channels, n int8 stores
//
// How each ISA multiplies int8 (exactly, in int32, never saturating):
//   avx2, avx512   int8 widened to int16, madd over pairs of taps (vpmaddwd)
//   avx512-vnni    u8 x s8 over four taps (vpdpbusd): inputs + 128, whose
//                  128 * sum w is folded into the bias at Prepare like the zero point
//   neon-dotprod   s8 x s8 over four taps (sdot)
//   neon           int16 multiply-accumulate, one tap (smlal): CPUs without sdot
//   portable       plain C++ (also compiled with AVX-512 VNNI's layout for the tests)
//
// Not for: float32 (simd.h).

#ifndef WBMM_DELEGATES_KERNELS_SIMD_INT8_H_
#define WBMM_DELEGATES_KERNELS_SIMD_INT8_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "int8_depthwise.h"

namespace wbmm {

// The scalar form of every operation: the portable path, and the fallback the
// vector ISAs use for channel tails.
template <int L, int G, class TXT, class TWT, int Offset>
struct ScalarInt8 {
  using TX = TXT;
  using TW = TWT;
  struct Acc { int32_t v[L]; };
  static constexpr int kLanes = L, kGroup = G, kInputOffset = Offset, kMaxColumns = 8;
  static inline Acc Zero() { Acc a; for (int l = 0; l < L; ++l) a.v[l] = 0; return a; }
  static inline Acc Dot(Acc acc, const TX* x, const TW* w) {
    for (int l = 0; l < L; ++l)
      for (int g = 0; g < G; ++g) acc.v[l] += int32_t(x[l * G + g]) * int32_t(w[l * G + g]);
    return acc;
  }
  static inline void PackColumn(const int8_t* src, ptrdiff_t tap_stride, TX* dst) {
    for (int l = 0; l < L; ++l)
      for (int g = 0; g < G; ++g) dst[l * G + g] = TX(int(src[l + g * tap_stride]) + Offset);
  }
  static inline void Requantize(Acc acc, const int32_t* bias, const float* scale, int zp, int lo, int hi, int8_t* out,
                                int n) {
    for (int l = 0; l < n; ++l) out[l] = RequantizeFp32(acc.v[l] + bias[l], scale[l], zp, lo, hi);
  }
};

}  // namespace wbmm

#if defined(WBMM_INT8_AVX2) || defined(WBMM_INT8_AVX512) || defined(WBMM_INT8_AVX512_VNNI)
#include <immintrin.h>
#endif
#if defined(WBMM_INT8_NEON) || defined(WBMM_INT8_NEON_DOTPROD)
#include <arm_neon.h>
#endif

#if defined(WBMM_INT8_AVX2)
#define WBMM_INT8_NAMESPACE int8_avx2
namespace wbmm::int8_avx2 {
struct V8 {
  using TX = int16_t;
  using TW = int16_t;
  using Acc = __m256i;
  static constexpr int kLanes = 8, kGroup = 2, kInputOffset = 0, kMaxColumns = 12;
  static constexpr const char* kName = "avx2";
  static inline Acc Zero() { return _mm256_setzero_si256(); }
  static inline Acc Dot(Acc acc, const TX* x, const TW* w) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)),
                                                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))));
  }
  static inline void PackColumn(const int8_t* src, ptrdiff_t s, TX* dst) {
    const __m128i a = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + s));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b)));
  }
  static inline void Requantize(Acc acc, const int32_t* bias, const float* scale, int zp, int lo, int hi, int8_t* out,
                                int n) {
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias)))),
                             _mm256_loadu_ps(scale));
    f = _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(float(lo - zp))), _mm256_set1_ps(float(hi - zp)));
    const __m256i v = _mm256_add_epi32(_mm256_cvtps_epi32(f), _mm256_set1_epi32(zp));  // MXCSR: nearest, ties to even
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v, v), _mm256_setzero_si256());
    const __m128i bytes = _mm_unpacklo_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    if (n == 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out), bytes);
    } else {
      alignas(16) int8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
      std::memcpy(out, tmp, size_t(n));
    }
  }
};
}  // namespace wbmm::int8_avx2

#elif defined(WBMM_INT8_AVX512) || defined(WBMM_INT8_AVX512_VNNI)
namespace wbmm {
// The requantization and stores shared by both AVX-512 compilations.
struct Avx512Requantize {
  static inline void Requantize(__m512i acc, const int32_t* bias, const float* scale, int zp, int lo, int hi,
                                int8_t* out, int n) {
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc, _mm512_loadu_si512(bias))), _mm512_loadu_ps(scale));
    f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(float(lo - zp))), _mm512_set1_ps(float(hi - zp)));
    const __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(f), _mm512_set1_epi32(zp));  // nearest, ties to even
    _mm512_mask_cvtepi32_storeu_epi8(out, __mmask16((1u << n) - 1), v);
  }
};
}  // namespace wbmm
#if defined(WBMM_INT8_AVX512)
#define WBMM_INT8_NAMESPACE int8_avx512
namespace wbmm::int8_avx512 {
struct V8 : Avx512Requantize {
  using TX = int16_t;
  using TW = int16_t;
  using Acc = __m512i;
  static constexpr int kLanes = 16, kGroup = 2, kInputOffset = 0, kMaxColumns = 24;
  static constexpr const char* kName = "avx512";
  static inline Acc Zero() { return _mm512_setzero_si512(); }
  static inline Acc Dot(Acc acc, const TX* x, const TW* w) {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_loadu_si512(x), _mm512_loadu_si512(w)));
  }
  static inline void PackColumn(const int8_t* src, ptrdiff_t s, TX* dst) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + s));
    const __m256i lo = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b)), hi = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b));
    _mm512_storeu_si512(dst, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
  }
};
}  // namespace wbmm::int8_avx512
#else
#define WBMM_INT8_NAMESPACE int8_avx512_vnni
namespace wbmm::int8_avx512_vnni {
struct V8 : Avx512Requantize {
  using TX = uint8_t;
  using TW = int8_t;
  using Acc = __m512i;
  static constexpr int kLanes = 16, kGroup = 4, kInputOffset = 128, kMaxColumns = 24;
  static constexpr const char* kName = "avx512-vnni";
  static inline Acc Zero() { return _mm512_setzero_si512(); }
  static inline Acc Dot(Acc acc, const TX* x, const TW* w) {
    return _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(x), _mm512_loadu_si512(w));
  }
  static inline void PackColumn(const int8_t* src, ptrdiff_t s, TX* dst) {
    const __m128i flip = _mm_set1_epi8(char(0x80));  // x + 128 as uint8
    auto ld = [&](const int8_t* p) { return _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), flip); };
    const __m128i a = ld(src), b = ld(src + s), c = ld(src + 2 * s), d = ld(src + 3 * s);
    const __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
    const __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
    __m128i* out = reinterpret_cast<__m128i*>(dst);
    _mm_storeu_si128(out + 0, _mm_unpacklo_epi16(ab_lo, cd_lo));
    _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(ab_lo, cd_lo));
    _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(ab_hi, cd_hi));
    _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(ab_hi, cd_hi));
  }
};
}  // namespace wbmm::int8_avx512_vnni
#endif

#elif defined(WBMM_INT8_NEON) || defined(WBMM_INT8_NEON_DOTPROD)
namespace wbmm {
struct NeonRequantize {
  static inline void Requantize(int32x4_t acc, const int32_t* bias, const float* scale, int zp, int lo, int hi,
                                int8_t* out, int n) {
    float32x4_t f = vmulq_f32(vcvtq_f32_s32(vaddq_s32(acc, vld1q_s32(bias))), vld1q_f32(scale));
    f = vminq_f32(vmaxq_f32(f, vdupq_n_f32(float(lo - zp))), vdupq_n_f32(float(hi - zp)));
    const int32x4_t v = vaddq_s32(vcvtnq_s32_f32(f), vdupq_n_s32(zp));  // fcvtns: nearest, ties to even
    const int16x4_t h = vmovn_s32(v);
    const int8x8_t b = vmovn_s16(vcombine_s16(h, h));
    if (n == 4) {
      vst1_lane_s32(reinterpret_cast<int32_t*>(out), vreinterpret_s32_s8(b), 0);
    } else {
      int8_t tmp[8];
      vst1_s8(tmp, b);
      std::memcpy(out, tmp, size_t(n));
    }
  }
};
}  // namespace wbmm
#if defined(WBMM_INT8_NEON_DOTPROD)
#define WBMM_INT8_NAMESPACE int8_neon_dotprod
namespace wbmm::int8_neon_dotprod {
struct V8 : NeonRequantize {
  using TX = int8_t;
  using TW = int8_t;
  using Acc = int32x4_t;
  static constexpr int kLanes = 4, kGroup = 4, kInputOffset = 0, kMaxColumns = 24;
  static constexpr const char* kName = "neon-dotprod";
  static inline Acc Zero() { return vdupq_n_s32(0); }
  static inline Acc Dot(Acc acc, const TX* x, const TW* w) { return vdotq_s32(acc, vld1q_s8(x), vld1q_s8(w)); }
  static inline void PackColumn(const int8_t* src, ptrdiff_t s, TX* dst) {
    // Four taps of four channels: [c0 t0..t3, c1 t0..t3, ...] by two byte zips.
    int32_t a, b, c, d;
    std::memcpy(&a, src, 4);
    std::memcpy(&b, src + s, 4);
    std::memcpy(&c, src + 2 * s, 4);
    std::memcpy(&d, src + 3 * s, 4);
    const int8x8_t ab = vzip1_s8(vreinterpret_s8_s32(vdup_n_s32(a)), vreinterpret_s8_s32(vdup_n_s32(b)));
    const int8x8_t cd = vzip1_s8(vreinterpret_s8_s32(vdup_n_s32(c)), vreinterpret_s8_s32(vdup_n_s32(d)));
    const int16x4x2_t z = vzip_s16(vreinterpret_s16_s8(ab), vreinterpret_s16_s8(cd));
    vst1q_s8(dst, vreinterpretq_s8_s16(vcombine_s16(z.val[0], z.val[1])));
  }
};
}  // namespace wbmm::int8_neon_dotprod
#else
#define WBMM_INT8_NAMESPACE int8_neon
namespace wbmm::int8_neon {
struct V8 : NeonRequantize {
  using TX = int16_t;
  using TW = int16_t;
  using Acc = int32x4_t;
  static constexpr int kLanes = 4, kGroup = 1, kInputOffset = 0, kMaxColumns = 24;
  static constexpr const char* kName = "neon";
  static inline Acc Zero() { return vdupq_n_s32(0); }
  static inline Acc Dot(Acc acc, const TX* x, const TW* w) { return vmlal_s16(acc, vld1_s16(x), vld1_s16(w)); }
  static inline void PackColumn(const int8_t* src, ptrdiff_t, TX* dst) {
    int32_t a;
    std::memcpy(&a, src, 4);
    vst1_s16(dst, vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(a)))));
  }
};
}  // namespace wbmm::int8_neon
#endif

#elif defined(WBMM_INT8_VNNI_LAYOUT)
// Test-only (never in the library): AVX-512 VNNI's blocking (16 lanes, four
// taps, inputs offset by 128 as unsigned) in plain C++, so the C++ tests run
// that packing, its bias correction and its channel tails on any CPU.
#define WBMM_INT8_NAMESPACE int8_vnni_layout
namespace wbmm::int8_vnni_layout {
struct V8 : ScalarInt8<16, 4, uint8_t, int8_t, 128> {
  static constexpr const char* kName = "avx512-vnni-layout";
};
}  // namespace wbmm::int8_vnni_layout

#else  // portable: four channels, two taps of int16, so tails and tap groups run off the SIMD widths
#define WBMM_INT8_NAMESPACE int8_portable
namespace wbmm::int8_portable {
struct V8 : ScalarInt8<4, 2, int16_t, int16_t, 0> {
  static constexpr const char* kName = "portable";
};
}  // namespace wbmm::int8_portable
#endif

#endif  // WBMM_DELEGATES_KERNELS_SIMD_INT8_H_
