// Every compiled kernel set (portable, AVX2, AVX-512, NEON: whichever this CPU
// runs, plus AVX-512's blocking on generic vectors) against a direct C++ transcription of the definitions: WBMM as
// Y_c = X_c @ R_c[I] per window (the dense-M form, docs/WBMM.md) and depthwise
// cross-correlation with TF's SAME/VALID rule. Shapes are drawn from a fixed
// pseudo-random stream covering channel counts that are not multiples of any
// lane width, maps not divisible by the window, kernels wider than the map,
// float16 weights, activations, batch > 1 and 1-4 threads.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "kernels/int8_depthwise.h"
#include "kernels/windowed_depthwise.h"
#include "test_main.h"
#include "threadpool.h"

// The test-only compilation of kernels/windowed_depthwise.cc (CMakeLists.txt).
namespace wbmm::avx512_layout {
extern const KernelSet kKernelSet;
}

namespace {

using wbmm::DepthwiseProblem;

using wbmm_test::Rng;

// y[b, oy, ox, c], WBMM by the index matrix: I[i,j] = (r_i - r_j + wh-1)(2ww-1) + (c_i - c_j + ww-1),
// clamped to [out_min, out_max].
std::vector<float> ReferenceWbmm(const DepthwiseProblem& p, const std::vector<float>& x, const std::vector<float>& k,
                                 const std::vector<float>& bias, bool shortcut) {
  const int wh = p.window_h, ww = p.window_w, C = p.channels, H = p.in_h, W = p.in_w;
  std::vector<float> y(x.size(), 0.0f);
  for (int b = 0; b < p.batch; ++b)
    for (int y0 = 0; y0 < H; y0 += wh)
      for (int x0 = 0; x0 < W; x0 += ww)
        for (int j = 0; j < wh * ww; ++j) {
          const int rj = j / ww, cj = j % ww;
          if (y0 + rj >= H || x0 + cj >= W) continue;  // cropped
          for (int c = 0; c < C; ++c) {
            double acc = bias.empty() ? 0.0 : bias[c];
            for (int i = 0; i < wh * ww; ++i) {
              const int ri = i / ww, ci = i % ww;
              if (y0 + ri >= H || x0 + ci >= W) continue;  // zero padding
              const int index = (ri - rj + wh - 1) * (2 * ww - 1) + (ci - cj + ww - 1);
              double m = k[size_t(index) * C + c];
              if (shortcut && i == j) m += 1.0;
              acc += m * x[((size_t(b) * H + y0 + ri) * W + x0 + ci) * C + c];
            }
            acc = std::min<double>(std::max<double>(acc, p.out_min), p.out_max);
            y[((size_t(b) * H + y0 + rj) * W + x0 + cj) * C + c] = float(acc);
          }
        }
  return y;
}

std::vector<float> ReferenceDepthwise(const DepthwiseProblem& p, const std::vector<float>& x,
                                      const std::vector<float>& k, const std::vector<float>& bias) {
  const int C = p.channels;
  std::vector<float> y(size_t(p.batch) * p.out_h * p.out_w * C);
  for (int b = 0; b < p.batch; ++b)
    for (int oy = 0; oy < p.out_h; ++oy)
      for (int ox = 0; ox < p.out_w; ++ox)
        for (int c = 0; c < C; ++c) {
          double acc = bias.empty() ? 0.0 : bias[c];
          for (int i = 0; i < p.kernel_h; ++i)
            for (int j = 0; j < p.kernel_w; ++j) {
              const int iy = oy - p.pad_top + i, ix = ox - p.pad_left + j;
              if (iy < 0 || iy >= p.in_h || ix < 0 || ix >= p.in_w) continue;
              acc += double(k[(size_t(i) * p.kernel_w + j) * C + c]) * x[((size_t(b) * p.in_h + iy) * p.in_w + ix) * C + c];
            }
          acc = std::min<double>(std::max<double>(acc, p.out_min), p.out_max);
          y[((size_t(b) * p.out_h + oy) * p.out_w + ox) * C + c] = float(acc);
        }
  return y;
}

uint16_t FloatToHalfTruncating(float f) {  // test data only: values in fp16 range, no rounding subtleties
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const int exponent = int((bits >> 23) & 0xFF) - 127 + 15;
  if (exponent <= 0) return uint16_t(sign);
  return uint16_t(sign | (uint32_t(exponent) << 10) | ((bits >> 13) & 0x3FF));
}

struct RunResult {
  std::vector<float> y;
};

std::vector<float> RunKernel(const wbmm::KernelSet& set, const DepthwiseProblem& p, const std::vector<float>& x,
                             const void* kernel, wbmm::WeightType type, const std::vector<float>& bias, bool shortcut,
                             int threads) {
  std::vector<float> w(wbmm::PackedWeightFloats(p, set.lanes)), b(wbmm::PackedBiasFloats(p, set.lanes));
  wbmm::PackDepthwiseWeights(p, set.lanes, kernel, type, bias.empty() ? nullptr : bias.data(), shortcut, w.data(),
                             b.data());
  std::vector<float> scratch(wbmm::ScratchFloats(p, set.lanes, threads) + 1);
  // Poison the output so a pixel the kernel forgets to write shows up.
  std::vector<float> y(size_t(p.batch) * p.out_h * p.out_w * p.channels, NAN);
  wbmm::ThreadPool pool(threads);
  set.run(p, x.data(), w.data(), b.data(), y.data(), scratch.data(), &pool);
  return y;
}

double MaxError(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(double(a[i]) - b[i]);
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}

// Every compilation this CPU can run, plus the test-only one with AVX-512's
// lanes and register budget on generic vectors (simd.h).
std::vector<const wbmm::KernelSet*> AllKernelSets() {
  std::vector<const wbmm::KernelSet*> sets;
  for (const char* isa : {"portable", "avx2", "avx512", "neon"})
    if (const wbmm::KernelSet* set = wbmm::FindKernelSet(isa)) sets.push_back(set);
  sets.push_back(&wbmm::avx512_layout::kKernelSet);
  return sets;
}

// Tolerance: float32 accumulation of n products of magnitude <= 1.
double Tolerance(int taps) { return 2e-6 * taps + 1e-5; }

struct Operands {
  std::vector<float> x, k, bias;
};

// Input, kernel and (half the time) bias for p, uniform in [-1, 1].
Operands RandomOperands(Rng& rng, const DepthwiseProblem& p) {
  Operands o{std::vector<float>(size_t(p.batch) * p.in_h * p.in_w * p.channels),
             std::vector<float>(size_t(p.kernel_h) * p.kernel_w * p.channels),
             std::vector<float>(rng.Int(0, 1) ? p.channels : 0)};
  for (float& v : o.x) v = rng.Uniform();
  for (float& v : o.k) v = rng.Uniform();
  for (float& v : o.bias) v = rng.Uniform();
  return o;
}

}  // namespace

WBMM_TEST(WindowedMatchesDenseMForm) {
  Rng rng{42};
  for (const wbmm::KernelSet* set : AllKernelSets()) {
    for (int trial = 0; trial < 40; ++trial) {
      DepthwiseProblem p;
      p.batch = rng.Int(1, 2);
      p.window_h = rng.Int(1, 8);
      p.window_w = rng.Int(1, 15);
      p.in_h = rng.Int(1, 3 * p.window_h + 2);
      p.in_w = rng.Int(1, 5 * p.window_w + 2);  // up to 5 windows across: the 4-window blocks run too
      p.channels = rng.Int(1, 37);
      p.kernel_h = 2 * p.window_h - 1;
      p.kernel_w = 2 * p.window_w - 1;
      p.out_h = p.in_h;
      p.out_w = p.in_w;
      const bool shortcut = rng.Int(0, 1) == 1;
      const bool half = rng.Int(0, 3) == 0;
      const int threads = rng.Int(1, 4);
      CHECK(*wbmm::ValidateProblem(p) == '\0');
      auto [x, k, bias] = RandomOperands(rng, p);
      std::vector<uint16_t> k16(k.size());
      if (half) {
        for (size_t i = 0; i < k.size(); ++i) {
          k16[i] = FloatToHalfTruncating(k[i]);
          k[i] = wbmm::HalfToFloat(k16[i]);  // the reference sees exactly the fp16 values
        }
      }
      const auto want = ReferenceWbmm(p, x, k, bias, shortcut);
      const auto got = half ? RunKernel(*set, p, x, k16.data(), wbmm::WeightType::kFloat16, bias, shortcut, threads)
                            : RunKernel(*set, p, x, k.data(), wbmm::WeightType::kFloat32, bias, shortcut, threads);
      const double err = MaxError(got, want);
      CHECK_MSG(err <= Tolerance(p.window_h * p.window_w), "%s B%d %dx%dx%d window %dx%d shortcut %d fp16 %d threads %d: max error %g",
                set->isa, p.batch, p.in_h, p.in_w, p.channels, p.window_h, p.window_w, shortcut, half, threads, err);
    }
  }
}

// The AVX2 multi-window path (4 whole windows per group, their outputs in
// row-major tiles of up to 3) for every tile width it uses: 1 (1x1 windows),
// 2 (2 outputs, and the 2+2 end of 4, 7 or 49 outputs), 3; up to w=14, whose
// group only fits with the 32 KB limit. Each shape runs without and with a
// fused activation clamp (the clamp is applied in the tile's epilogue), with
// a channel tail (its last block goes window by window), bands of 4, 5 and 9
// windows (groups plus leftovers), maps 2 or 3 windows wide, whose groups
// are 2 x 2 windows (with a window column, a window row or a map edge left
// over), and maps one window wide or tall, whose windows go one by one (as
// same-row tiles where the width splits into 4-7 outputs), on 1 and 2 threads.
WBMM_TEST(MultiWindowTilesAndClampMatchReference) {
  struct Layout {
    int across, down, extra_h, extra_w, channels, threads;
  };
  const Layout layouts[] = {{4, 2, 0, 0, 16, 1}, {4, 2, 0, 0, 16, 1}, {5, 2, 0, 0, 19, 2}, {9, 2, 0, 0, 19, 2},
                            {2, 2, 0, 0, 16, 1}, {3, 3, 0, 0, 16, 1}, {2, 2, 1, 0, 19, 2}, {3, 4, 0, 1, 19, 2},
                            {1, 1, 0, 0, 16, 1}, {1, 2, 0, 1, 19, 2}, {3, 1, 1, 0, 16, 1}, {1, 1, 0, 0, 24, 2}};
  Rng rng{2024};
  const int windows[][2] = {{1, 1}, {1, 2}, {2, 2}, {1, 3}, {2, 3}, {7, 7}, {3, 5}, {8, 15}, {14, 14}};
  for (const wbmm::KernelSet* set : AllKernelSets()) {
    for (const auto& window : windows) {
      for (int variant = 0; variant < int(std::size(layouts)); ++variant) {
        const Layout& layout = layouts[variant];
        const bool clamp = variant % 2 == 1;
        DepthwiseProblem p;
        p.window_h = window[0];
        p.window_w = window[1];
        p.in_h = layout.down * p.window_h + layout.extra_h;
        p.in_w = layout.across * p.window_w + layout.extra_w;
        p.channels = layout.channels;
        p.kernel_h = 2 * p.window_h - 1;
        p.kernel_w = 2 * p.window_w - 1;
        p.out_h = p.in_h;
        p.out_w = p.in_w;
        if (clamp) {  // bounds inside the outputs' range, so both sides clip
          p.out_min = -0.5f;
          p.out_max = 0.75f;
        }
        const int threads = layout.threads;
        auto [x, k, bias] = RandomOperands(rng, p);
        const auto want = ReferenceWbmm(p, x, k, bias, true);
        const auto got = RunKernel(*set, p, x, k.data(), wbmm::WeightType::kFloat32, bias, true, threads);
        const double err = MaxError(got, want);
        CHECK_MSG(err <= Tolerance(p.window_h * p.window_w), "%s %dx%dx%d window %dx%d clamp %d threads %d: max error %g",
                  set->isa, p.in_h, p.in_w, p.channels, p.window_h, p.window_w, clamp, threads, err);
        if (clamp) {  // the clamp did something: some reference outputs sit on each bound
          CHECK(std::count(want.begin(), want.end(), -0.5f) > 0 && std::count(want.begin(), want.end(), 0.75f) > 0);
        }
      }
    }
  }
}

WBMM_TEST(PlainDepthwiseMatchesDirectLoops) {
  Rng rng{7};
  for (const wbmm::KernelSet* set : AllKernelSets()) {
    for (int trial = 0; trial < 40; ++trial) {
      DepthwiseProblem p;
      p.batch = rng.Int(1, 2);
      p.kernel_h = rng.Int(1, 17);
      p.kernel_w = rng.Int(1, 33);
      p.in_h = rng.Int(1, 24);
      p.in_w = rng.Int(1, 40);
      p.channels = rng.Int(1, 37);
      const bool same = rng.Int(0, 2) != 0;
      if (!same && (p.in_h < p.kernel_h || p.in_w < p.kernel_w)) {
        p.in_h = std::max(p.in_h, p.kernel_h);
        p.in_w = std::max(p.in_w, p.kernel_w);
      }
      if (same) {
        p.out_h = p.in_h;
        p.out_w = p.in_w;
        p.pad_top = (p.kernel_h - 1) / 2;
        p.pad_left = (p.kernel_w - 1) / 2;
      } else {
        p.out_h = p.in_h - p.kernel_h + 1;
        p.out_w = p.in_w - p.kernel_w + 1;
      }
      const int act = rng.Int(0, 2);
      if (act >= 1) p.out_min = 0.0f;
      if (act == 2) p.out_max = 0.5f;
      const int threads = rng.Int(1, 3);
      CHECK(*wbmm::ValidateProblem(p) == '\0');
      auto [x, k, bias] = RandomOperands(rng, p);
      const auto want = ReferenceDepthwise(p, x, k, bias);
      const auto got = RunKernel(*set, p, x, k.data(), wbmm::WeightType::kFloat32, bias, false, threads);
      const double err = MaxError(got, want);
      CHECK_MSG(err <= Tolerance(p.kernel_h * p.kernel_w), "%s B%d %dx%dx%d kernel %dx%d %s act %d threads %d: max error %g",
                set->isa, p.batch, p.in_h, p.in_w, p.channels, p.kernel_h, p.kernel_w, same ? "SAME" : "VALID", act,
                threads, err);
    }
  }
}

// Rows wider than the 64 column pieces the plain kernels' split once had room
// for (64 * kMaxColumns: 512 columns portable, 896 AVX2, 1,024 AVX-512 and
// NEON): such a row called through pointers past the end of the block tables
// (on AVX-512 a crash from 3,073 columns). Each width is a few columns past a
// multiple of every ISA's piece width, so the split leaves pieces of two
// sizes; 7x7 SAME, a channel tail, 9 rows (two bands), and a 13x13 kernel that
// takes the kernel-rows-outermost path on 16 lanes; 2 threads.
WBMM_TEST(PlainRowsWiderThanSixtyFourPiecesMatchDirectLoops) {
  Rng rng{3073};
  const int shapes[][4] = {{3, 3073, 8, 7}, {2, 4099, 19, 7}, {2, 1537, 8, 13}, {9, 1025, 16, 7}};
  for (const auto& shape : shapes) {
    DepthwiseProblem p;
    p.in_h = p.out_h = shape[0];
    p.in_w = p.out_w = shape[1];
    p.channels = shape[2];
    p.kernel_h = p.kernel_w = shape[3];
    p.pad_top = p.pad_left = (shape[3] - 1) / 2;
    CHECK(*wbmm::ValidateProblem(p) == '\0');
    auto [x, k, bias] = RandomOperands(rng, p);
    const auto want = ReferenceDepthwise(p, x, k, bias);
    for (const wbmm::KernelSet* set : AllKernelSets()) {
      const auto got = RunKernel(*set, p, x, k.data(), wbmm::WeightType::kFloat32, bias, false, 2);
      const double err = MaxError(got, want);
      CHECK_MSG(err <= Tolerance(p.kernel_h * p.kernel_w), "%s %dx%dx%d kernel %d: max error %g", set->isa, p.in_h,
                p.in_w, p.channels, p.kernel_h, err);
    }
  }
}

// Maps whose sides the kernels' int indexing cannot take are refused with a
// reason, not run; the largest side allowed still validates.
WBMM_TEST(MapsLongerThanTheLimitAreRefused) {
  DepthwiseProblem p;
  p.in_h = p.out_h = 1;
  p.in_w = p.out_w = wbmm::kMaxMapSide;
  p.channels = 8;
  p.kernel_h = p.kernel_w = 7;
  p.pad_top = p.pad_left = 3;
  CHECK(*wbmm::ValidateProblem(p) == '\0');
  p.in_w = p.out_w = wbmm::kMaxMapSide + 1;
  CHECK(std::string(wbmm::ValidateProblem(p)).find("not supported") != std::string::npos);
  wbmm::Int8Problem q;
  q.in_h = q.out_h = wbmm::kMaxMapSide + 1;
  q.in_w = q.out_w = 1;
  q.channels = 8;
  q.kernel_h = q.kernel_w = 7;
  q.pad_top = q.pad_left = 3;
  CHECK(std::string(wbmm::ValidateInt8Problem(q)).find("not supported") != std::string::npos);
  q.in_h = q.out_h = 8;
  CHECK(*wbmm::ValidateInt8Problem(q) == '\0');
  q.dilation_w = 1 << 30;  // (7 - 1) * 2^30 overflows int
  CHECK(std::string(wbmm::ValidateInt8Problem(q)).find("dilated kernels") != std::string::npos);
}

WBMM_TEST(ExpectedKernelSetsAreBuilt) {
  CHECK(wbmm::FindKernelSet("portable") != nullptr);
  CHECK(wbmm::FindKernelSet("no-such-isa") == nullptr);
  const wbmm::KernelSet* best = wbmm::FindKernelSet("auto");
  CHECK(best != nullptr);
#if defined(__aarch64__)
  CHECK(best != nullptr && std::string(best->isa) == "neon");  // arm64 must not fall back to portable
  CHECK(best != nullptr && best->lanes == 4);
#endif
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) CHECK(wbmm::FindKernelSet("avx2") != nullptr);
  if (!__builtin_cpu_supports("avx512f")) {
    std::printf("  note: this CPU has no AVX-512; the avx512 kernels are built but not run here (their blocking "
                "runs as avx512-layout)\n");
    CHECK(wbmm::FindKernelSet("avx512") == nullptr);
  }
#endif
  std::printf("  kernel sets usable here: %s\n", wbmm::AvailableIsas());
}

WBMM_TEST(HalfToFloatKnownValues) {
  CHECK(wbmm::HalfToFloat(0x3C00) == 1.0f);
  CHECK(wbmm::HalfToFloat(0xC000) == -2.0f);
  CHECK(wbmm::HalfToFloat(0x7BFF) == 65504.0f);
  CHECK(wbmm::HalfToFloat(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(wbmm::HalfToFloat(0x0200) == std::ldexp(1.0f, -15));
  CHECK(std::isinf(wbmm::HalfToFloat(0x7C00)));
  CHECK(std::isnan(wbmm::HalfToFloat(0x7E00)));
  CHECK(std::signbit(wbmm::HalfToFloat(0x8000)));
}

WBMM_TEST(PackingFoldsShortcutIntoCentreAndPadsTail) {
  DepthwiseProblem p;
  p.in_h = p.in_w = 3;
  p.out_h = p.out_w = 3;
  p.window_h = p.window_w = 2;
  p.kernel_h = p.kernel_w = 3;
  p.channels = 5;
  std::vector<float> k(9 * 5, 0.25f), bias = {1, 2, 3, 4, 5};
  const int lanes = 4;
  std::vector<float> w(wbmm::PackedWeightFloats(p, lanes)), b(wbmm::PackedBiasFloats(p, lanes));
  CHECK(w.size() == 2 * 9 * 4 && b.size() == 8);
  wbmm::PackDepthwiseWeights(p, lanes, k.data(), wbmm::WeightType::kFloat32, bias.data(), true, w.data(), b.data());
  CHECK(w[4 * 4 + 0] == 1.25f);           // centre tap (1,1) of block 0, channel 0
  CHECK(w[0] == 0.25f);
  CHECK(w[(9 + 4) * 4 + 0] == 1.25f);     // block 1, channel 4
  CHECK(w[(9 + 4) * 4 + 1] == 0.0f);      // padding lane
  CHECK(b[4] == 5.0f && b[5] == 0.0f);
}

WBMM_TEST(ThreadPoolCoversRangeOnce) {
  for (int threads : {1, 2, 3, 5}) for (int spin_us : {0, wbmm::ThreadPool::kDefaultSpinMicros}) {
    wbmm::ThreadPool pool(threads, spin_us);
    for (int64_t n : {1, 2, 7, 100, 1001}) {
      std::vector<int> hits(n, 0);
      std::vector<int> bad_thread(1, 0);
      auto fn = [&](int64_t begin, int64_t end, int t) {
        if (t < 0 || t >= threads) bad_thread[0] = 1;
        for (int64_t i = begin; i < end; ++i) __atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
      };
      for (int repeat = 0; repeat < 3; ++repeat) pool.ParallelFor(n, fn);
      bool ok = bad_thread[0] == 0;
      for (int h : hits) ok &= h == 3;
      CHECK_MSG(ok, "threads %d spin %d n %lld", threads, spin_us, (long long)n);
    }
  }
}

// Jobs of alternating sizes back to back: a worker still draining the small
// job must never claim a chunk of the large one under the old epoch (that ran
// a chunk twice, returned early or waited forever). With spin_us=0 the
// workers go to sleep between jobs, so the wake-up path runs every call.
WBMM_TEST(ThreadPoolAlternatingJobSizes) {
  for (int spin_us : {0, wbmm::ThreadPool::kDefaultSpinMicros}) {
    wbmm::ThreadPool pool(3, spin_us);
    std::vector<int> hits(2048, 0);
    int incomplete_calls = 0;
    for (int call = 0; call < (spin_us == 0 ? 4000 : 20000); ++call) {
      const int64_t n = (call & 1) ? 2048 : 12;
      for (int64_t i = 0; i < n; ++i) hits[i] = 0;
      auto fn = [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) __atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
      };
      pool.ParallelFor(n, fn);
      for (int64_t i = 0; i < n; ++i) {
        if (__atomic_load_n(&hits[i], __ATOMIC_RELAXED) != 1) { ++incomplete_calls; break; }
      }
    }
    CHECK_MSG(incomplete_calls == 0, "spin %d: %d calls returned with a chunk missing or run twice", spin_us,
              incomplete_calls);
  }
}

// Invoke must not allocate: count operator new calls while the kernels run.
namespace {
std::atomic<long> g_allocations{0};
std::atomic<bool> g_counting{false};
}  // namespace

void* operator new(size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

WBMM_TEST(KernelsDoNotAllocateWhileRunning) {
  for (const wbmm::KernelSet* set : AllKernelSets()) {
    for (bool windowed : {true, false}) {
      DepthwiseProblem p;
      p.batch = 1;
      p.in_h = p.in_w = p.out_h = p.out_w = 20;
      p.channels = 13;  // a channel tail: the scratch paths run too
      if (windowed) {
        p.window_h = p.window_w = 5;
        p.kernel_h = p.kernel_w = 9;
      } else {
        p.kernel_h = p.kernel_w = 7;
        p.pad_top = p.pad_left = 3;
      }
      std::vector<float> x(20 * 20 * 13, 1.0f), k(size_t(p.kernel_h) * p.kernel_w * 13, 0.5f);
      std::vector<float> w(wbmm::PackedWeightFloats(p, set->lanes)), b(wbmm::PackedBiasFloats(p, set->lanes));
      wbmm::PackDepthwiseWeights(p, set->lanes, k.data(), wbmm::WeightType::kFloat32, nullptr, false, w.data(), b.data());
      std::vector<float> y(x.size()), scratch(wbmm::ScratchFloats(p, set->lanes, 3));
      wbmm::ThreadPool pool(3);
      set->run(p, x.data(), w.data(), b.data(), y.data(), scratch.data(), &pool);  // warm: threads started
      g_allocations = 0;
      g_counting = true;
      for (int i = 0; i < 5; ++i) set->run(p, x.data(), w.data(), b.data(), y.data(), scratch.data(), &pool);
      g_counting = false;
      CHECK_MSG(g_allocations.load() == 0, "%s %s: %ld allocations", set->isa, windowed ? "windowed" : "plain",
                g_allocations.load());
    }
  }  // The int8 kernels, every compilation this CPU runs.
  for (const wbmm::Int8KernelSet* set : wbmm::Int8KernelSets()) {
    for (bool windowed : {true, false}) {
      wbmm::Int8Problem p;
      p.in_h = p.in_w = p.out_h = p.out_w = 20;
      p.channels = 13;
      if (windowed) {
        p.window_h = p.window_w = 5;
        p.kernel_h = p.kernel_w = 9;
      } else {
        p.kernel_h = p.kernel_w = 7;
        p.dilation_h = 2;
        p.pad_top = 6;
        p.pad_left = 3;
      }
      std::vector<int8_t> x(20 * 20 * 13, 3), k(size_t(p.kernel_h) * p.kernel_w * 13, 2), y(x.size());
      std::vector<float> scales(13, 0.01f);
      wbmm::Int8Packed packed;
      wbmm::PackInt8Weights(p, *set, k.data(), wbmm::KernelLayout::kTapsThenChannels, nullptr, scales.data(), &packed);
      std::vector<uint8_t> scratch(wbmm::Int8ScratchBytes(p, *set, 3));
      wbmm::ThreadPool pool(3);
      set->run(p, x.data(), packed, y.data(), scratch.data(), &pool);
      g_allocations = 0;
      g_counting = true;
      for (int i = 0; i < 5; ++i) set->run(p, x.data(), packed, y.data(), scratch.data(), &pool);
      g_counting = false;
      CHECK_MSG(g_allocations.load() == 0, "int8 %s %s: %ld allocations", set->isa, windowed ? "windowed" : "plain",
                g_allocations.load());
    }
  }
}
