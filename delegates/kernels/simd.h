// One vector type per instruction set, chosen by the WBMM_ISA_* macro the build
// sets for each compilation of kernels/windowed_depthwise.cc.
//
// The kernels are written once against this tiny interface (Load, Store,
// Fma, Set1, Min, Max) and compiled once per ISA; dispatch.cc picks the best
// compilation the CPU supports at run time. kMaxColumns is how many output
// accumulators a register file holds with room left for the input vector
// (16 ymm on AVX2, 32 zmm on AVX-512, 32 q-registers on NEON); kAccumulators
// is the register budget for a block of several output rows. kFullWindowBlocks
// selects the tap-stationary kernel for full windows (fewer loads per FMA);
// measured no faster on AVX2, whose FMA takes its weight as a memory operand,
// and needed on NEON, which has no memory operands.
//
// Not for: anything but float32 lanes.

#ifndef WBMM_DELEGATES_KERNELS_SIMD_H_
#define WBMM_DELEGATES_KERNELS_SIMD_H_

#if defined(WBMM_ISA_AVX512)
#include <immintrin.h>
#define WBMM_ISA_NAMESPACE avx512
namespace wbmm::avx512 {
struct Vec {
  using Reg = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kMaxColumns = 16;
  static constexpr int kAccumulators = 28;
  static constexpr bool kFullWindowBlocks = true;
  static constexpr const char* kName = "avx512";
  static inline Reg Load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void Store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  static inline Reg Fma(Reg a, Reg b, Reg acc) { return _mm512_fmadd_ps(a, b, acc); }
  static inline Reg Set1(float v) { return _mm512_set1_ps(v); }
  static inline Reg Min(Reg a, Reg b) { return _mm512_min_ps(a, b); }
  static inline Reg Max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
};
}  // namespace wbmm::avx512

#elif defined(WBMM_ISA_AVX2)
#include <immintrin.h>
#define WBMM_ISA_NAMESPACE avx2
namespace wbmm::avx2 {
struct Vec {
  using Reg = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kMaxColumns = 14;
  static constexpr int kAccumulators = 14;
  static constexpr bool kFullWindowBlocks = false;
  static constexpr const char* kName = "avx2";
  static inline Reg Load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void Store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static inline Reg Fma(Reg a, Reg b, Reg acc) { return _mm256_fmadd_ps(a, b, acc); }
  static inline Reg Set1(float v) { return _mm256_set1_ps(v); }
  static inline Reg Min(Reg a, Reg b) { return _mm256_min_ps(a, b); }
  static inline Reg Max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
};
}  // namespace wbmm::avx2

#elif defined(WBMM_ISA_NEON)
#include <arm_neon.h>
#define WBMM_ISA_NAMESPACE neon
namespace wbmm::neon {
struct Vec {
  using Reg = float32x4_t;
  static constexpr int kLanes = 4;
  static constexpr int kMaxColumns = 16;
  static constexpr int kAccumulators = 28;
  static constexpr bool kFullWindowBlocks = true;
  static constexpr const char* kName = "neon";
  static inline Reg Load(const float* p) { return vld1q_f32(p); }
  static inline void Store(float* p, Reg v) { vst1q_f32(p, v); }
  static inline Reg Fma(Reg a, Reg b, Reg acc) { return vfmaq_f32(acc, a, b); }
  static inline Reg Set1(float v) { return vdupq_n_f32(v); }
  static inline Reg Min(Reg a, Reg b) { return vminq_f32(a, b); }
  static inline Reg Max(Reg a, Reg b) { return vmaxq_f32(a, b); }
};
}  // namespace wbmm::neon

#elif defined(WBMM_ISA_AVX512_LAYOUT)
// Test-only (never in the library): AVX-512's lanes and register budget on GCC's
// generic 64-byte vectors, so the C++ tests run every path the avx512
// compilation takes (16-lane blocks and channel tails, 28 accumulators,
// tap-stationary full windows) on CPUs without AVX-512 -- this VM hides it and
// qemu-user does not emulate it. Only the six intrinsics differ from avx512.
#define WBMM_ISA_NAMESPACE avx512_layout
namespace wbmm::avx512_layout {
struct Vec {
  typedef float Reg __attribute__((vector_size(64)));
  static constexpr int kLanes = 16;
  static constexpr int kMaxColumns = 16;
  static constexpr int kAccumulators = 28;
  static constexpr bool kFullWindowBlocks = true;
  static constexpr const char* kName = "avx512-layout";
  static inline Reg Load(const float* p) { Reg r; __builtin_memcpy(&r, p, sizeof(r)); return r; }
  static inline void Store(float* p, Reg v) { __builtin_memcpy(p, &v, sizeof(v)); }
  static inline Reg Fma(Reg a, Reg b, Reg acc) { return a * b + acc; }
  static inline Reg Set1(float v) { return Reg{} + v; }
  static inline Reg Min(Reg a, Reg b) { return b < a ? b : a; }
  static inline Reg Max(Reg a, Reg b) { return b > a ? b : a; }
};
}  // namespace wbmm::avx512_layout

#else  // portable C++: four lanes in a plain array, so the channel-tail logic
       // is exercised with a width other than the SIMD ones.
#define WBMM_ISA_NAMESPACE portable
namespace wbmm::portable {
struct Vec {
  struct Reg { float v[4]; };
  static constexpr int kLanes = 4;
  static constexpr int kMaxColumns = 8;
  static constexpr int kAccumulators = 8;
  static constexpr bool kFullWindowBlocks = true;
  static constexpr const char* kName = "portable";
  static inline Reg Load(const float* p) { Reg r; for (int i = 0; i < 4; ++i) r.v[i] = p[i]; return r; }
  static inline void Store(float* p, Reg v) { for (int i = 0; i < 4; ++i) p[i] = v.v[i]; }
  static inline Reg Fma(Reg a, Reg b, Reg acc) {
    for (int i = 0; i < 4; ++i) acc.v[i] += a.v[i] * b.v[i];
    return acc;
  }
  static inline Reg Set1(float x) { Reg r; for (int i = 0; i < 4; ++i) r.v[i] = x; return r; }
  static inline Reg Min(Reg a, Reg b) { for (int i = 0; i < 4; ++i) a.v[i] = b.v[i] < a.v[i] ? b.v[i] : a.v[i]; return a; }
  static inline Reg Max(Reg a, Reg b) { for (int i = 0; i < 4; ++i) a.v[i] = b.v[i] > a.v[i] ? b.v[i] : a.v[i]; return a; }
};
}  // namespace wbmm::portable
#endif

#endif  // WBMM_DELEGATES_KERNELS_SIMD_H_
