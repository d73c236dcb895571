// wbmm_kernel_bench: times one WBMM or exact large-depthwise kernel directly,
// without a TFLite runtime, on this machine or on a phone (the NDK build puts
// it next to libwbmm_delegate.so; adb push it and run it in adb shell).
//
// Three variants run round-robin in one process, so a change of load hits
// them alike: the kernel on 1 thread, on N threads, and "capacity", N
// independent 1-thread runs on the same pool. N threads against 1 says how
// the kernel scales; capacity says how far the machine lets any work scale
// at that moment (a shared VM, a phone's big and little cores), so compare
// the two rather than read N-thread speed alone. Medians and bests, plus the
// kernel's rate in GFMA/s counted as the dense form counts it (d = wh*ww
// taps per output of a WBMM, K*K of a depthwise conv).
//
// This is the tool behind BENCHMARKS.md's "C++ harness" figures that need no
// modified kernel; the per-variant experiments there patched the kernels.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "../kernels/windowed_depthwise.h"
#include "../threadpool.h"

namespace {

struct Options {
  int height = 56, width = 56, channels = 96;
  int window = 0;  // > 0: WBMM with this window
  int kernel = 0;  // > 0: exact 'same' depthwise with this kernel
  int threads = 2;
  int runs = 300;
  bool cold = false;
  std::string isa = "auto";
  std::string json;
};

constexpr char kUsage[] =
    "usage: wbmm_kernel_bench [--shape HxWxC] (--window W | --kernel K) [--threads N] [--runs R]\n"
    "                         [--isa auto|portable|avx2|avx512|neon] [--cold] [--json PATH]\n"
    "\n"
    "Times one kernel of libwbmm_delegate directly: on 1 thread, on N threads, and N independent\n"
    "1-thread runs on the same pool (the machine's capacity to scale at that moment), round-robin.\n"
    "  --shape HxWxC   input map (default 56x56x96)\n"
    "  --window W      the WBMM operator with W x W windows (its kernel is (2W-1) x (2W-1))\n"
    "  --kernel K      an exact K x K 'same' depthwise conv (odd K)\n"
    "  --threads N     threads of the multi-thread variant (default 2)\n"
    "  --runs R        timed runs per variant, after 10 untimed (default 300)\n"
    "  --isa NAME      kernel set (default auto: the best this CPU supports)\n"
    "  --cold          write 16 MB between runs, so each run starts with cold caches\n"
    "  --json PATH     also write the results as JSON\n";

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "wbmm_kernel_bench: %s\n", message.c_str());
  std::exit(2);
}

int ParsePositive(const char* flag, const char* text) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || value <= 0 || value > 1 << 20)
    Fail(std::string(flag) + " wants a positive integer, got '" + text + "'");
  return int(value);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--cold") {
      o.cold = true;
      continue;
    }
    static const char* const kValueFlags[] = {"--shape", "--window", "--kernel", "--threads", "--runs", "--isa",
                                              "--json"};
    if (std::none_of(std::begin(kValueFlags), std::end(kValueFlags), [&](const char* f) { return flag == f; }))
      Fail("unknown option " + flag + " (see --help)");
    if (i + 1 >= argc) Fail(flag + " needs a value (see --help)");
    const char* value = argv[++i];
    if (flag == "--shape") {
      if (std::sscanf(value, "%dx%dx%d", &o.height, &o.width, &o.channels) != 3 || o.height <= 0 || o.width <= 0 ||
          o.channels <= 0)
        Fail(std::string("--shape wants HxWxC, e.g. 56x56x96, got '") + value + "'");
    } else if (flag == "--window") {
      o.window = ParsePositive("--window", value);
    } else if (flag == "--kernel") {
      o.kernel = ParsePositive("--kernel", value);
    } else if (flag == "--threads") {
      o.threads = ParsePositive("--threads", value);
    } else if (flag == "--runs") {
      o.runs = ParsePositive("--runs", value);
    } else if (flag == "--isa") {
      o.isa = value;
    } else {  // --json
      o.json = value;
    }
  }
  if ((o.window > 0) == (o.kernel > 0)) Fail("give exactly one of --window W and --kernel K");
  if (o.kernel > 0 && o.kernel % 2 == 0) Fail("--kernel wants an odd size for a 'same' conv, got " +
                                              std::to_string(o.kernel));
  return o;
}

wbmm::DepthwiseProblem Problem(const Options& o) {
  wbmm::DepthwiseProblem p;
  p.in_h = p.out_h = o.height;
  p.in_w = p.out_w = o.width;
  p.channels = o.channels;
  if (o.window > 0) {
    p.window_h = p.window_w = o.window;
    p.kernel_h = p.kernel_w = 2 * o.window - 1;
  } else {
    p.kernel_h = p.kernel_w = o.kernel;
    p.pad_top = p.pad_left = o.kernel / 2;
  }
  return p;
}

struct Variant {
  const char* name;
  std::vector<double> ms;
  double median = 0, best = 0;
};

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  const wbmm::KernelSet* set = wbmm::FindKernelSet(o.isa.c_str());
  if (set == nullptr) Fail("kernel set '" + o.isa + "' is not usable here (usable: " + wbmm::AvailableIsas() + ")");
  const wbmm::DepthwiseProblem p = Problem(o);
  if (const char* why = wbmm::ValidateProblem(p); *why != '\0') Fail(std::string("bad problem: ") + why);

  // Opened before the timing, so an unwritable path fails before minutes of runs, not after.
  FILE* json = o.json.empty() ? nullptr : std::fopen(o.json.c_str(), "w");
  if (!o.json.empty() && json == nullptr) Fail("cannot write " + o.json + ": " + std::strerror(errno));

  // One input, weights and scratch per independent run of the capacity variant.
  const int lanes = set->lanes;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::vector<float> kernel(size_t(p.kernel_h) * p.kernel_w * p.channels), bias(p.channels);
  for (float& v : kernel) v = uniform(rng) * 0.1f;
  for (float& v : bias) v = uniform(rng);
  wbmm::AlignedFloats weights(wbmm::PackedWeightFloats(p, lanes)), packed_bias(wbmm::PackedBiasFloats(p, lanes));
  wbmm::PackDepthwiseWeights(p, lanes, kernel.data(), wbmm::WeightType::kFloat32, bias.data(), p.windowed(),
                             weights.data(), packed_bias.data());
  const size_t map = size_t(p.in_h) * p.in_w * p.channels;
  std::vector<wbmm::AlignedFloats> inputs(o.threads, wbmm::AlignedFloats(map)), outputs(o.threads,
                                                                                       wbmm::AlignedFloats(map));
  for (auto& input : inputs)
    for (float& v : input) v = uniform(rng);
  std::vector<wbmm::AlignedFloats> scratch(o.threads, wbmm::AlignedFloats(wbmm::ScratchFloats(p, lanes, o.threads)));
  wbmm::AlignedFloats single_output(map);
  std::vector<float> evict(o.cold ? 4 << 20 : 0);

  wbmm::ThreadPool pool(o.threads);
  auto independent = [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i)
      set->run(p, inputs[i].data(), weights.data(), packed_bias.data(), outputs[i].data(), scratch[i].data(), nullptr);
  };
  const std::string threads_name = std::to_string(o.threads) + " threads";
  const std::string capacity_name = std::to_string(o.threads) + " x 1 thread, independent";
  std::vector<Variant> variants = {{"1 thread", {}}, {threads_name.c_str(), {}}, {capacity_name.c_str(), {}}};
  constexpr int kWarmup = 10;
  for (int round = 0; round < kWarmup + o.runs; ++round) {
    for (size_t k = 0; k < variants.size(); ++k) {
      const size_t v = (k + round) % variants.size();  // each round starts one further along
      if (o.cold) std::fill(evict.begin(), evict.end(), float(round));
      const double start = NowMs();
      if (v == 0)
        set->run(p, inputs[0].data(), weights.data(), packed_bias.data(), single_output.data(), scratch[0].data(),
                 nullptr);
      else if (v == 1)
        set->run(p, inputs[0].data(), weights.data(), packed_bias.data(), outputs[0].data(), scratch[0].data(), &pool);
      else
        pool.ParallelFor(o.threads, independent);
      const double elapsed = NowMs() - start;
      if (round >= kWarmup) variants[v].ms.push_back(elapsed);
    }
    if (round == 0) {  // 1 and N threads sum in the same order: their outputs must match bit for bit
      set->run(p, inputs[0].data(), weights.data(), packed_bias.data(), outputs[0].data(), scratch[0].data(), &pool);
      if (std::memcmp(single_output.data(), outputs[0].data(), map * sizeof(float)) != 0)
        Fail("the " + threads_name + " output differs from the 1-thread output");
    }
  }

  // The dense form's count: a WBMM output takes wh * ww taps, a depthwise output K * K.
  const double taps = p.windowed() ? double(p.window_h) * p.window_w : double(p.kernel_h) * p.kernel_w;
  const double fmas = double(map) * taps;
  for (Variant& v : variants) {
    std::sort(v.ms.begin(), v.ms.end());
    v.median = v.ms[v.ms.size() / 2];
    v.best = v.ms.front();
  }
  const double speedup = variants[0].median / variants[1].median;
  const double capacity = o.threads * variants[0].median / variants[2].median;
  const std::string what = p.windowed() ? "WBMM window " + std::to_string(o.window)
                                        : "depthwise kernel " + std::to_string(o.kernel);
  std::printf("%s, %dx%dx%d, %s kernels, %d runs%s\n", what.c_str(), o.height, o.width, o.channels, set->isa, o.runs,
              o.cold ? ", cold caches" : "");
  for (size_t i = 0; i < variants.size(); ++i) {
    const double work = (i == 2 ? o.threads : 1) * fmas;  // the capacity variant does N runs' work
    std::printf("  %-28s median %8.3f ms  best %8.3f ms  %6.1f GFMA/s\n", variants[i].name, variants[i].median,
                variants[i].best, work / variants[i].median / 1e6);
  }
  std::printf("  %d threads vs 1: %.2fx; capacity: %.2fx (%.0f%% of it)\n", o.threads, speedup, capacity,
              100 * speedup / capacity);

  if (json != nullptr) {
    std::fprintf(json, "{\"isa\": \"%s\", \"shape\": [%d, %d, %d], \"%s\": %d, \"threads\": %d, \"runs\": %d, "
                 "\"cold\": %s, \"fmas\": %.0f, \"variants\": [",
                 set->isa, o.height, o.width, o.channels, p.windowed() ? "window" : "kernel",
                 p.windowed() ? o.window : o.kernel, o.threads, o.runs, o.cold ? "true" : "false", fmas);
    for (size_t i = 0; i < variants.size(); ++i)
      std::fprintf(json, "%s{\"name\": \"%s\", \"median_ms\": %.6f, \"best_ms\": %.6f}", i ? ", " : "",
                   variants[i].name, variants[i].median, variants[i].best);
    std::fprintf(json, "], \"threads_speedup\": %.4f, \"capacity\": %.4f}\n", speedup, capacity);
    if (std::fclose(json) != 0) Fail("cannot write " + o.json + ": " + std::strerror(errno));
  }
  return 0;
}
