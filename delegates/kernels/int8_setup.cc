// The ISA-independent half of the int8 kernels: validation, weight and per-channel parameter packing (with the
// zero-point correction folded into the bias), scratch sizes, and choosing
// which compilation of int8_depthwise.cc runs.
//
// Dispatch on arm64 asks the kernel for the dot-product extension
// (getauxval(AT_HWCAP) & HWCAP_ASIMDDP on Linux and Android): sdot is an
// ARMv8.2 option that phones from Cortex-A55/A75 on have and older ones lack.

#include <cmath>
#include <cstring>
#include <string>

#include "int8_depthwise.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace wbmm {

namespace int8_portable { extern const Int8KernelSet kKernelSet; }
#if defined(WBMM_HAVE_AVX2)
namespace int8_avx2 { extern const Int8KernelSet kKernelSet; }
#endif
#if defined(WBMM_HAVE_AVX512)
namespace int8_avx512 { extern const Int8KernelSet kKernelSet; }
namespace int8_avx512_vnni { extern const Int8KernelSet kKernelSet; }
#endif
#if defined(WBMM_HAVE_NEON)
namespace int8_neon { extern const Int8KernelSet kKernelSet; }
namespace int8_neon_dotprod { extern const Int8KernelSet kKernelSet; }
#endif

const char* ValidateInt8Problem(const Int8Problem& p) {
  if (p.batch < 1 || p.in_h < 1 || p.in_w < 1 || p.channels < 1) return "input must be a non-empty NHWC map";
  if (p.kernel_h < 1 || p.kernel_w < 1) return "kernel must be at least 1x1";
  if (p.kernel_h > 255 || p.kernel_w > 255) return "kernels larger than 255 taps per side are not supported";
  if (p.dilation_h < 1 || p.dilation_w < 1) return "dilation must be positive";
  if (p.in_h > kMaxMapSide || p.in_w > kMaxMapSide || p.out_h > kMaxMapSide || p.out_w > kMaxMapSide)
    return "maps longer than 16,777,216 pixels a side are not supported";
  // The dilated kernel's extent, in int64: (kernel - 1) * dilation may not fit an int.
  if ((int64_t(p.kernel_h) - 1) * p.dilation_h >= kMaxMapSide || (int64_t(p.kernel_w) - 1) * p.dilation_w >= kMaxMapSide)
    return "dilated kernels longer than 16,777,216 pixels a side are not supported";
  if (p.input_zero_point < -128 || p.input_zero_point > 127 || p.output_zero_point < -128 || p.output_zero_point > 127)
    return "zero points must be int8 values";
  if (p.out_min > p.out_max) return "activation range is empty";
  if (p.windowed()) {
    if (p.window_w < 1) return "window must be positive";
    if (p.kernel_h != 2 * p.window_h - 1 || p.kernel_w != 2 * p.window_w - 1) return "a WBMM kernel must be (2wh-1, 2ww-1)";
    if (p.dilation_h != 1 || p.dilation_w != 1) return "a WBMM kernel has no dilation";
    if (p.out_h != p.in_h || p.out_w != p.in_w) return "WBMM output must have the input's size";
    return "";
  }
  const int eff_h = (p.kernel_h - 1) * p.dilation_h + 1, eff_w = (p.kernel_w - 1) * p.dilation_w + 1;
  if (p.out_h < 1 || p.out_w < 1) return "output map is empty (kernel larger than the input with VALID padding)";
  if (p.pad_top < 0 || p.pad_left < 0 || p.pad_top >= eff_h || p.pad_left >= eff_w) return "padding must be in [0, kernel)";
  return "";
}

static int Groups(int taps, int group) { return (taps + group - 1) / group; }

void PackInt8Weights(const Int8Problem& p, const Int8KernelSet& set, const int8_t* kernel, KernelLayout layout,
                     const int32_t* bias, const float* scales, Int8Packed* packed) {
  const int L = set.lanes, G = set.group, C = p.channels, kh = p.kernel_h, kw = p.kernel_w;
  const int blocks = (C + L - 1) / L;
  auto weight = [&](int c, int i, int j) -> int32_t {
    if (c >= C || j >= kw) return 0;
    return layout == KernelLayout::kTapsThenChannels ? kernel[(size_t(i) * kw + j) * C + c]
                                                     : kernel[(size_t(c) * kh + i) * kw + j];
  };
  // Entries per kernel row: P tap groups (plain), or S group starts (windowed).
  const int P = Groups(p.windowed() ? p.window_w : kw, G);
  const int per_row = p.windowed() ? (P - 1) * G + p.window_w : P;
  const size_t values = size_t(blocks) * kh * per_row * L * G;
  packed->weights.assign(values * size_t(set.element_bytes), 0);
  auto put = [&](size_t index, int32_t v) {
    if (set.element_bytes == 2) {
      const int16_t h = int16_t(v);
      std::memcpy(packed->weights.data() + 2 * index, &h, 2);
    } else {
      packed->weights[index] = uint8_t(int8_t(v));
    }
  };
  for (int cb = 0; cb < blocks; ++cb)
    for (int i = 0; i < kh; ++i)
      for (int e = 0; e < per_row; ++e)
        for (int l = 0; l < L; ++l)
          for (int g = 0; g < G; ++g) {
            const int j = p.windowed() ? e + g : e * G + g;  // windowed: entry e starts at tap e
            put((((size_t(cb) * kh + i) * per_row + e) * L + l) * G + g, weight(cb * L + l, i, j));
          }

  // Per channel: the scale; bias minus (zp + input offset) * the
  // weights each output multiplies (padding included, where x is the zero point).
  const int32_t x_offset = p.input_zero_point + set.input_offset;
  packed->positions = p.windowed() ? p.window_h * p.window_w : 1;
  packed->scale.assign(size_t(blocks) * L, 0.0f);
  packed->bias.assign(size_t(blocks) * packed->positions * L, 0);
  for (int c = 0; c < blocks * L; ++c) {
    const int cb = c / L, l = c % L;
    if (c < C) packed->scale[c] = scales[c];
    const int32_t b = c < C && bias != nullptr ? bias[c] : 0;
    for (int pos = 0; pos < packed->positions; ++pos) {
      int64_t sum = 0;
      if (!p.windowed()) {
        for (int i = 0; i < kh; ++i)
          for (int j = 0; j < kw; ++j) sum += weight(c, i, j);
      } else {
        const int oy = pos / p.window_w, ox = pos % p.window_w;
        for (int iy = 0; iy < p.window_h; ++iy)
          for (int xi = 0; xi < P * G; ++xi) {
            const int j = xi - ox + p.window_w - 1;
            sum += weight(c, iy - oy + p.window_h - 1, j);
          }
      }
      packed->bias[(size_t(cb) * packed->positions + pos) * L + l] = int32_t(b - int64_t(x_offset) * sum);
    }
  }
}

size_t Int8ThreadScratchBytes(const Int8Problem& p, const Int8KernelSet& set) {
  const int L = set.lanes, G = set.group;
  const size_t entry = size_t(L) * G * set.element_bytes;
  if (p.windowed()) {
    const int P = Groups(p.window_w, G);
    return size_t(p.window_h) * P * entry + size_t(P) * G * L + 64;
  }
  const int P = Groups(p.kernel_w, G);
  const size_t strip_rows = size_t(kInt8BandRows) + size_t(p.kernel_h - 1) * p.dilation_h;
  const size_t entries = size_t(p.out_w) + size_t(P - 1) * G * p.dilation_w;
  const size_t src_cols = entries + size_t(G - 1) * p.dilation_w;
  // Rounded to a cache line so every thread's strip starts on one.
  return (strip_rows * entries * entry + src_cols * L + 63) / 64 * 64;
}

size_t Int8ScratchBytes(const Int8Problem& p, const Int8KernelSet& set, int num_threads) {
  return Int8ThreadScratchBytes(p, set) * size_t(num_threads > 0 ? num_threads : 1);
}

static bool CpuHas(const char* isa) {
#if defined(__x86_64__) || defined(__i386__)
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2");
  if (std::strcmp(isa, "avx512") == 0) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  if (std::strcmp(isa, "avx512-vnni") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
#endif
  if (std::strcmp(isa, "neon-dotprod") == 0) {
#if defined(__aarch64__) && defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    return false;
#endif
  }
  return true;  // portable always runs; NEON is baseline on arm64
}

// Best last; `family` is the float ISA name each belongs to.
struct Int8Entry {
  const char* family;
  const Int8KernelSet* set;
};
static const Int8Entry kBuiltIn[] = {
    {"portable", &int8_portable::kKernelSet},
#if defined(WBMM_HAVE_NEON)
    {"neon", &int8_neon::kKernelSet},
    {"neon", &int8_neon_dotprod::kKernelSet},
#endif
#if defined(WBMM_HAVE_AVX2)
    {"avx2", &int8_avx2::kKernelSet},
#endif
#if defined(WBMM_HAVE_AVX512)
    {"avx512", &int8_avx512::kKernelSet},
    {"avx512", &int8_avx512_vnni::kKernelSet},
#endif
};

const Int8KernelSet* FindInt8KernelSet(const char* isa) {
  const bool automatic = isa == nullptr || std::strcmp(isa, "auto") == 0;
  const Int8KernelSet* best = nullptr;
  for (const Int8Entry& e : kBuiltIn) {
    if (!CpuHas(e.set->isa)) continue;
    if (automatic || std::strcmp(e.family, isa) == 0) best = e.set;
    else if (std::strcmp(e.set->isa, isa) == 0) return e.set;
  }
  return best;
}

std::vector<const Int8KernelSet*> Int8KernelSets() {
  std::vector<const Int8KernelSet*> sets;
  for (const Int8Entry& e : kBuiltIn)
    if (CpuHas(e.set->isa)) sets.push_back(e.set);
  return sets;
}

}  // namespace wbmm
