// The ISA-independent half of the depthwise kernels: problem validation,
// weight packing (float16 widening, WBMM shortcut folding, lane padding),
// scratch sizes, and choosing which compilation of windowed_depthwise.cc runs.
//
// Dispatch is a run-time CPUID check (__builtin_cpu_supports) rather than GCC
// function multiversioning so the same table also serves arm64/Android, where
// NEON is the baseline, and so tests can force any built-in ISA by name.

#include <cstring>
#include <string>

#include "windowed_depthwise.h"

namespace wbmm {

namespace portable { extern const KernelSet kKernelSet; }
#if defined(WBMM_HAVE_AVX2)
namespace avx2 { extern const KernelSet kKernelSet; }
#endif
#if defined(WBMM_HAVE_AVX512)
namespace avx512 { extern const KernelSet kKernelSet; }
#endif
#if defined(WBMM_HAVE_NEON)
namespace neon { extern const KernelSet kKernelSet; }
#endif

const char* ValidateProblem(const DepthwiseProblem& p) {
  if (p.batch < 1 || p.in_h < 1 || p.in_w < 1 || p.channels < 1) return "input must be a non-empty NHWC map";
  if (p.kernel_h < 1 || p.kernel_w < 1) return "kernel must be at least 1x1";
  if (p.kernel_h > 255 || p.kernel_w > 255) return "kernels larger than 255 taps per side are not supported";
  if (p.in_h > kMaxMapSide || p.in_w > kMaxMapSide || p.out_h > kMaxMapSide || p.out_w > kMaxMapSide)
    return "maps longer than 16,777,216 pixels a side are not supported";
  if (p.windowed()) {
    if (p.window_w < 1) return "window must be positive";
    if (p.kernel_h != 2 * p.window_h - 1 || p.kernel_w != 2 * p.window_w - 1)
      return "a WBMM kernel must be (2wh-1, 2ww-1)";
    if (p.out_h != p.in_h || p.out_w != p.in_w) return "WBMM output must have the input's size";
    return "";
  }
  if (p.out_h < 1 || p.out_w < 1) return "output map is empty (kernel larger than the input with VALID padding)";
  if (p.pad_top < 0 || p.pad_left < 0 || p.pad_top >= p.kernel_h || p.pad_left >= p.kernel_w)
    return "padding must be in [0, kernel)";
  // Output column xo reads input columns xo - pad_left + [0, kw): the last output must not need more.
  if (p.pad_left + p.in_w > p.out_w + p.kernel_w - 1) return "output is narrower than the input allows";
  return "";
}

static size_t Blocks(const DepthwiseProblem& p, int lanes) { return size_t(p.channels + lanes - 1) / lanes; }

size_t PackedWeightFloats(const DepthwiseProblem& p, int lanes) {
  return Blocks(p, lanes) * p.kernel_h * p.kernel_w * lanes;
}

size_t PackedBiasFloats(const DepthwiseProblem& p, int lanes) { return Blocks(p, lanes) * lanes; }

size_t SharedScratchFloats(const DepthwiseProblem& p, int lanes) {
  (void)p;
  (void)lanes;
  return 0;  // every copy is per thread
}

size_t ThreadScratchFloats(const DepthwiseProblem& p, int lanes) {
  // Windowed: a channel tail's window in and out (2 windows), or the packed
  // input of a group of 4 windows (MultiWindowTile).
  if (p.windowed()) return 4 * size_t(p.window_h) * p.window_w * lanes;
  // The zero-padded strip of a band's input rows, and the lane-padded output
  // row of a channel-tail block.
  return (size_t(kPlainBandRows + p.kernel_h - 1) * (p.out_w + p.kernel_w - 1) + p.out_w) * lanes;
}

size_t ScratchFloats(const DepthwiseProblem& p, int lanes, int num_threads) {
  return SharedScratchFloats(p, lanes) + ThreadScratchFloats(p, lanes) * size_t(num_threads > 0 ? num_threads : 1);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {  // inf / nan
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // zero
    bits = sign;
  } else {  // subnormal: renormalise
    exponent = 113;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

void PackDepthwiseWeights(const DepthwiseProblem& p, int lanes, const void* kernel, WeightType type,
                          const float* bias, bool add_identity, float* packed_weights, float* packed_bias,
                          KernelLayout layout) {
  const int C = p.channels, taps = p.kernel_h * p.kernel_w;
  const int centre = (p.kernel_h / 2) * p.kernel_w + p.kernel_w / 2;
  const size_t blocks = Blocks(p, lanes);
  for (size_t cb = 0; cb < blocks; ++cb) {
    for (int t = 0; t < taps; ++t) {
      float* dst = packed_weights + (cb * taps + t) * lanes;
      for (int l = 0; l < lanes; ++l) {
        const int c = int(cb) * lanes + l;
        float v = 0.0f;
        if (c < C) {
          const size_t src = layout == KernelLayout::kTapsThenChannels ? size_t(t) * C + c : size_t(c) * taps + t;
          v = type == WeightType::kFloat32 ? static_cast<const float*>(kernel)[src]
                                           : HalfToFloat(static_cast<const uint16_t*>(kernel)[src]);
          // Y = X @ R[I] + X: the identity is +1 at the zero offset (docs/WBMM.md).
          if (add_identity && t == centre) v += 1.0f;
        }
        dst[l] = v;
      }
    }
    for (int l = 0; l < lanes; ++l) {
      const int c = int(cb) * lanes + l;
      packed_bias[cb * lanes + l] = (c < C && bias != nullptr) ? bias[c] : 0.0f;
    }
  }
}

static bool CpuHas(const char* isa) {
#if defined(__x86_64__) || defined(__i386__)
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (std::strcmp(isa, "avx512") == 0) return __builtin_cpu_supports("avx512f");
#endif
  (void)isa;
  return true;  // portable always runs; NEON is baseline on arm64
}

// Best last.
static const KernelSet* const kBuiltIn[] = {
    &portable::kKernelSet,
#if defined(WBMM_HAVE_NEON)
    &neon::kKernelSet,
#endif
#if defined(WBMM_HAVE_AVX2)
    &avx2::kKernelSet,
#endif
#if defined(WBMM_HAVE_AVX512)
    &avx512::kKernelSet,
#endif
};

const KernelSet* FindKernelSet(const char* isa) {
  const bool automatic = isa == nullptr || std::strcmp(isa, "auto") == 0;
  const KernelSet* best = nullptr;
  for (const KernelSet* set : kBuiltIn) {
    if (!CpuHas(set->isa)) continue;
    if (automatic) best = set;
    else if (std::strcmp(set->isa, isa) == 0) return set;
  }
  return best;
}

const char* AvailableIsas() {
  static const std::string names = [] {
    std::string s;
    for (const KernelSet* set : kBuiltIn) {
      if (!CpuHas(set->isa)) continue;
      if (!s.empty()) s += ",";
      s += set->isa;
    }
    return s;
  }();
  return names.c_str();
}

}  // namespace wbmm
