// Every int8 compilation this CPU runs (portable, AVX2, AVX-512 / VNNI, NEON /
// NEON dot product: under qemu the dot-product one runs with -cpu max and not
// with -cpu cortex-a53), plus VNNI's blocking in plain C++, against a direct
// transcription of the definitions: sum of w * (x - zp) over the taps inside
// the map (plain, any dilation) or inside the window (WBMM), + bias, then
// XNNPACK's fp32 requantization written out here, not taken from the library. The Python tests check the same kernels
// against TFLite's own int8 kernels.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/int8_depthwise.h"
#include "test_main.h"
#include "threadpool.h"

namespace wbmm::int8_vnni_layout {
extern const Int8KernelSet kKernelSet;
}

namespace {

using wbmm::Int8Problem;

using wbmm_test::Rng;

// Requantization as XNNPACK's "fp32" scheme: float(acc) * scale, rounded to
// nearest with ties to even (rint in the default rounding mode), clamped.
int32_t ReferenceRequantize(int64_t acc, float scale, int zp, int lo, int hi) {
  const double v = std::rint(double(float(float(acc) * scale)));
  return int32_t(std::min<double>(std::max<double>(v + zp, lo), hi));
}

struct Case {
  Int8Problem p;
  std::vector<int8_t> x, k;
  std::vector<int32_t> bias;
  std::vector<float> scales;
};

std::vector<int8_t> Reference(const Case& t) {
  const Int8Problem& p = t.p;
  const int C = p.channels;
  std::vector<int8_t> y(size_t(p.batch) * p.out_h * p.out_w * C);
  for (int b = 0; b < p.batch; ++b)
    for (int oy = 0; oy < p.out_h; ++oy)
      for (int ox = 0; ox < p.out_w; ++ox)
        for (int c = 0; c < C; ++c) {
          int64_t acc = t.bias.empty() ? 0 : t.bias[c];
          for (int i = 0; i < p.kernel_h; ++i)
            for (int j = 0; j < p.kernel_w; ++j) {
              int iy, ix;
              if (p.windowed()) {  // 'same' inside the window, nothing outside it
                iy = oy + i - (p.window_h - 1);
                ix = ox + j - (p.window_w - 1);
                if (iy / p.window_h != oy / p.window_h || iy < 0 || ix / p.window_w != ox / p.window_w || ix < 0) continue;
              } else {
                iy = oy - p.pad_top + i * p.dilation_h;
                ix = ox - p.pad_left + j * p.dilation_w;
              }
              if (iy < 0 || iy >= p.in_h || ix < 0 || ix >= p.in_w) continue;  // x - zp = 0
              const int xv = t.x[((size_t(b) * p.in_h + iy) * p.in_w + ix) * C + c];
              acc += int64_t(t.k[(size_t(i) * p.kernel_w + j) * C + c]) * (xv - p.input_zero_point);
            }
          y[((size_t(b) * p.out_h + oy) * p.out_w + ox) * C + c] =
              int8_t(ReferenceRequantize(acc, t.scales[c], p.output_zero_point, p.out_min, p.out_max));
        }
  return y;
}

std::vector<int8_t> RunKernel(const wbmm::Int8KernelSet& set, const Case& t, int threads) {
  wbmm::Int8Packed packed;
  wbmm::PackInt8Weights(t.p, set, t.k.data(), wbmm::KernelLayout::kTapsThenChannels,
                        t.bias.empty() ? nullptr : t.bias.data(), t.scales.data(), &packed);
  std::vector<uint8_t> scratch(wbmm::Int8ScratchBytes(t.p, set, threads) + 64);
  std::vector<int8_t> y(size_t(t.p.batch) * t.p.out_h * t.p.out_w * t.p.channels, 0x55);
  wbmm::ThreadPool pool(threads);
  set.run(t.p, t.x.data(), packed, y.data(), scratch.data(), &pool);
  return y;
}

std::vector<const wbmm::Int8KernelSet*> AllSets() {
  std::vector<const wbmm::Int8KernelSet*> sets = wbmm::Int8KernelSets();
  sets.push_back(&wbmm::int8_vnni_layout::kKernelSet);
  return sets;
}

// Quantization drawn across its range: zero points at the int8 extremes,
// per-channel scales from 1e-4 to 1 (so multipliers from ~1e-7 to ~10),
// full-range weights, and a clamp from an activation half the time.
void RandomQuantization(Rng& rng, Case& t) {
  Int8Problem& p = t.p;
  const int zps[] = {-128, 127, 0, -5};
  p.input_zero_point = rng.Int(0, 1) ? zps[rng.Int(0, 3)] : rng.Int(-128, 127);
  p.output_zero_point = rng.Int(0, 1) ? zps[rng.Int(0, 3)] : rng.Int(-128, 127);
  if (rng.Int(0, 1)) {
    p.out_min = std::max(-128, p.output_zero_point);  // RELU
    p.out_max = rng.Int(0, 1) ? 127 : std::min(127, p.output_zero_point + rng.Int(1, 100));
  }
  const int taps = p.kernel_h * p.kernel_w;
  t.x.resize(size_t(p.batch) * p.in_h * p.in_w * p.channels);
  t.k.resize(size_t(taps) * p.channels);
  for (auto& v : t.x) v = int8_t(rng.Int(-128, 127));
  for (auto& v : t.k) v = int8_t(rng.Int(-127, 127));
  t.bias.assign(rng.Int(0, 3) ? p.channels : 0, 0);
  for (auto& v : t.bias) v = rng.Int(-50000, 50000);
  t.scales.resize(p.channels);
  for (auto& s : t.scales) {
    // Output spans about +-taps * 128 * 128 * scale: keep most outputs in range
    // while some saturate.
    const double w_scale = std::pow(10.0, -4.0 + 4.0 * rng.Int(0, 1000) / 1000.0);
    s = float(std::min(w_scale * 0.05 / (1e-4 * std::sqrt(double(taps)) * 128.0) * (rng.Int(0, 4) == 0 ? 30.0 : 1.0), 8.0));
    if (rng.Int(0, 20) == 0) s = 1e-10f;  // every output the zero point
  }
}

// Runs `set` on t against the reference; prints the first three cases that
// differ (with `what` describing the case) and counts them in *bad_cases.
template <class Describe>
void Compare(const wbmm::Int8KernelSet& set, const Case& t, int threads, int* bad_cases, Describe what) {
  CHECK_MSG(*wbmm::ValidateInt8Problem(t.p) == '\0', "%s", wbmm::ValidateInt8Problem(t.p));
  const auto want = Reference(t);
  const auto got = RunKernel(set, t, threads);
  size_t diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff += want[i] != got[i];
  if (diff != 0 && ++*bad_cases <= 3) {
    ++::wbmm_test::CurrentFailures();
    std::printf("  %s threads %d zp %d/%d: %zu of %zu outputs differ: ", set.isa, threads, t.p.input_zero_point,
                t.p.output_zero_point, diff, want.size());
    what();
  }
}

}  // namespace

WBMM_TEST(Int8PlainDepthwiseMatchesDefinition) {
  Rng rng{7};
  for (const wbmm::Int8KernelSet* set : AllSets()) {
    int bad_cases = 0;
    for (int trial = 0; trial < 60; ++trial) {
      Case t;
      Int8Problem& p = t.p;
      p.batch = rng.Int(1, 2);
      p.kernel_h = rng.Int(1, 15);
      p.kernel_w = rng.Int(1, 31);
      if (trial % 7 == 0) p.kernel_h = p.kernel_w = 31;
      p.dilation_h = rng.Int(1, 3);
      p.dilation_w = rng.Int(1, 3);
      const int eh = (p.kernel_h - 1) * p.dilation_h + 1, ew = (p.kernel_w - 1) * p.dilation_w + 1;
      const bool same = rng.Int(0, 1) == 1;
      p.in_h = rng.Int(same ? 1 : eh, eh + 20);
      p.in_w = rng.Int(same ? 1 : ew, ew + 40);
      p.channels = rng.Int(1, 37);
      p.out_h = same ? p.in_h : p.in_h - eh + 1;
      p.out_w = same ? p.in_w : p.in_w - ew + 1;
      p.pad_top = same ? (eh - 1) / 2 : 0;
      p.pad_left = same ? (ew - 1) / 2 : 0;
      RandomQuantization(rng, t);
      Compare(*set, t, rng.Int(1, 3), &bad_cases, [&] {
        std::printf("B%d %dx%dx%d kernel %dx%d dilation %dx%d %s\n", p.batch, p.in_h, p.in_w, p.channels, p.kernel_h,
                    p.kernel_w, p.dilation_h, p.dilation_w, same ? "same" : "valid");
      });
    }
    if (bad_cases > 3) std::printf("  %s: %d cases differ in all\n", set->isa, bad_cases);
  }
}

WBMM_TEST(Int8WindowedMatchesDefinition) {
  Rng rng{11};
  for (const wbmm::Int8KernelSet* set : AllSets()) {
    int bad_cases = 0;
    for (int trial = 0; trial < 50; ++trial) {
      Case t;
      Int8Problem& p = t.p;
      p.batch = rng.Int(1, 2);
      p.window_h = rng.Int(1, 8);
      p.window_w = rng.Int(1, 15);
      if (trial % 5 == 0) p.window_h = p.window_w = trial % 10 == 0 ? 7 : 14;
      p.in_h = rng.Int(1, 3 * p.window_h + 2);
      p.in_w = rng.Int(1, 3 * p.window_w + 2);
      p.channels = rng.Int(1, 37);
      p.kernel_h = 2 * p.window_h - 1;
      p.kernel_w = 2 * p.window_w - 1;
      p.out_h = p.in_h;
      p.out_w = p.in_w;
      RandomQuantization(rng, t);
      Compare(*set, t, rng.Int(1, 3), &bad_cases, [&] {
        std::printf("B%d %dx%dx%d window %dx%d\n", p.batch, p.in_h, p.in_w, p.channels, p.window_h, p.window_w);
      });
    }
    if (bad_cases > 3) std::printf("  %s: %d cases differ in all\n", set->isa, bad_cases);
  }
}

WBMM_TEST(Int8KernelSetsAreBuilt) {
  std::string names;
  for (const wbmm::Int8KernelSet* set : wbmm::Int8KernelSets()) names += std::string(names.empty() ? "" : ",") + set->isa;
  std::printf("  int8 kernel sets usable here: %s\n", names.c_str());
  CHECK(wbmm::FindInt8KernelSet("portable") != nullptr);
  CHECK(wbmm::FindInt8KernelSet("no-such-isa") == nullptr);
#if defined(__aarch64__)
  const wbmm::Int8KernelSet* neon = wbmm::FindInt8KernelSet("neon");
  CHECK(neon != nullptr && std::string(neon->isa).compare(0, 4, "neon") == 0);
  CHECK(wbmm::FindInt8KernelSet("int8-no") == nullptr);
  // Both NEON compilations exist; which one "neon" means depends on the CPU (HWCAP_ASIMDDP).
  std::printf("  neon int8 path on this CPU: %s\n", neon ? neon->isa : "none");
#endif
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) CHECK(wbmm::FindInt8KernelSet("avx2") != nullptr);
  if (!__builtin_cpu_supports("avx512bw"))
    std::printf("  note: no AVX-512 here; the avx512 and avx512-vnni int8 kernels are built but not run "
                "(VNNI's blocking runs as avx512-vnni-layout)\n");
#endif
}

WBMM_TEST(Int8RequantizationRoundsTiesToEven) {
  // XNNPACK's fp32 scheme: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, clamped after rounding.
  CHECK(wbmm::RequantizeFp32(5, 0.5f, 0, -128, 127) == 2);
  CHECK(wbmm::RequantizeFp32(7, 0.5f, 0, -128, 127) == 4);
  CHECK(wbmm::RequantizeFp32(-5, 0.5f, 0, -128, 127) == -2);
  CHECK(wbmm::RequantizeFp32(-5, 0.5f, 10, -128, 127) == 8);
  CHECK(wbmm::RequantizeFp32(1 << 30, 200.0f, -128, -128, 127) == 127);   // no int32 overflow on the way
  CHECK(wbmm::RequantizeFp32(-(1 << 30), 200.0f, 127, -128, 127) == -128);
  CHECK(wbmm::RequantizeFp32(100, 1.0f, 0, 0, 50) == 50);
}
