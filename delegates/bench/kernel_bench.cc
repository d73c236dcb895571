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
// --int8 times the int8 kernels (kernels/int8_depthwise.h) the same way:
// random int8 input, per-channel symmetric int8 weights and an int32 bias
// quantized from random float ones, an output scale that fits the output's
// spread, all packed before the timing as the delegate's Prepare packs them;
// the rate is in GMAC/s (int8 multiply-accumulates, the same tap count).
//
// This is the tool behind BENCHMARKS.md's "C++ harness" figures that need no
// modified kernel; the per-variant experiments there patched the kernels.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "../kernels/int8_depthwise.h"
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
  bool int8 = false;
  std::string isa = "auto";
  std::string json;
};

constexpr char kUsage[] =
    "usage: wbmm_kernel_bench [--shape HxWxC] (--window W | --kernel K) [--int8] [--threads N] [--runs R]\n"
    "                         [--isa auto|portable|avx2|avx512|neon] [--cold] [--json PATH]\n"
    "\n"
    "Times one kernel of libwbmm_delegate directly: on 1 thread, on N threads, and N independent\n"
    "1-thread runs on the same pool (the machine's capacity to scale at that moment), round-robin.\n"
    "  --shape HxWxC   input map (default 56x56x96)\n"
    "  --window W      the WBMM operator with W x W windows (its kernel is (2W-1) x (2W-1))\n"
    "  --kernel K      an exact K x K 'same' depthwise conv (odd K)\n"
    "  --int8          the int8 kernel (int8 input and output, per-channel int8 weights, int32 bias)\n"
    "                  instead of the float32 one; its rate is in GMAC/s\n"
    "  --threads N     threads of the multi-thread variant (default 2)\n"
    "  --runs R        timed runs per variant, after 10 untimed (default 300)\n"
    "  --isa NAME      kernel set (default auto: the best this CPU supports); with --int8 also an\n"
    "                  int8 compilation's own name, e.g. avx512-vnni or neon-dotprod\n"
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
    if (flag == "--int8") {
      o.int8 = true;
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

// The map, kernel, window and padding of the timed op, for either dtype's problem.
template <class Problem>
Problem Geometry(const Options& o) {
  Problem p;
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
  std::string name;
  std::vector<double> ms;
  double median = 0, best = 0;
};

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One kernel's three ways to run, whatever its dtype: all the round-robin and
// the bit-for-bit check need to know of it.
struct Runs {
  std::function<void()> one_thread;   // writes *reference
  std::function<void()> n_threads;    // writes *threaded, on the pool
  std::function<void()> independent;  // N independent 1-thread runs on the pool
  const void* reference = nullptr;
  const void* threaded = nullptr;
  size_t output_bytes = 0;
};

// The three variants round-robin, each round starting one further along, after
// 10 untimed rounds; medians and bests in ms.
std::vector<Variant> TimeRoundRobin(const Options& o, const Runs& r) {
  const std::string threads_name = std::to_string(o.threads) + " threads";
  std::vector<Variant> variants = {{"1 thread", {}}, {threads_name, {}},
                                   {std::to_string(o.threads) + " x 1 thread, independent", {}}};
  std::vector<float> evict(o.cold ? 4 << 20 : 0);
  constexpr int kWarmup = 10;
  for (int round = 0; round < kWarmup + o.runs; ++round) {
    for (size_t k = 0; k < variants.size(); ++k) {
      const size_t v = (k + round) % variants.size();  // each round starts one further along
      if (o.cold) std::fill(evict.begin(), evict.end(), float(round));
      const double start = NowMs();
      if (v == 0)
        r.one_thread();
      else if (v == 1)
        r.n_threads();
      else
        r.independent();
      const double elapsed = NowMs() - start;
      if (round >= kWarmup) variants[v].ms.push_back(elapsed);
    }
    if (round == 0) {  // 1 and N threads sum in the same order: their outputs must match bit for bit
      r.n_threads();
      if (std::memcmp(r.reference, r.threaded, r.output_bytes) != 0)
        Fail("the " + threads_name + " output differs from the 1-thread output");
    }
  }
  for (Variant& v : variants) {
    std::sort(v.ms.begin(), v.ms.end());
    v.median = v.ms[v.ms.size() / 2];
    v.best = v.ms.front();
  }
  return variants;
}

// What the report says of the timed kernel besides its times.
struct Kernel {
  const char* dtype;      // "float32" or "int8"
  const char* isa;        // the compilation that ran
  double ops;             // FMAs (float32) or MACs (int8) of one run, counted as the dense form counts them
  const char* ops_key;    // the JSON key of that count
  const char* rate_unit;  // GFMA/s or GMAC/s
};

void Report(const Options& o, const Kernel& kernel, const std::vector<Variant>& variants, FILE* json) {
  const double speedup = variants[0].median / variants[1].median;
  const double capacity = o.threads * variants[0].median / variants[2].median;
  std::string what = o.window > 0 ? "WBMM window " + std::to_string(o.window)
                                  : "depthwise kernel " + std::to_string(o.kernel);
  if (o.int8) what = "int8 " + what;
  std::printf("%s, %dx%dx%d, %s kernels, %d runs%s\n", what.c_str(), o.height, o.width, o.channels, kernel.isa, o.runs,
              o.cold ? ", cold caches" : "");
  for (size_t i = 0; i < variants.size(); ++i) {
    const double work = (i == 2 ? o.threads : 1) * kernel.ops;  // the capacity variant does N runs' work
    std::printf("  %-28s median %8.3f ms  best %8.3f ms  %6.1f %s\n", variants[i].name.c_str(), variants[i].median,
                variants[i].best, work / variants[i].median / 1e6, kernel.rate_unit);
  }
  std::printf("  %d threads vs 1: %.2fx; capacity: %.2fx (%.0f%% of it)\n", o.threads, speedup, capacity,
              100 * speedup / capacity);

  if (json != nullptr) {
    std::fprintf(json, "{\"dtype\": \"%s\", \"isa\": \"%s\", \"shape\": [%d, %d, %d], \"%s\": %d, \"threads\": %d, "
                 "\"runs\": %d, \"cold\": %s, \"%s\": %.0f, \"variants\": [",
                 kernel.dtype, kernel.isa, o.height, o.width, o.channels, o.window > 0 ? "window" : "kernel",
                 o.window > 0 ? o.window : o.kernel, o.threads, o.runs, o.cold ? "true" : "false", kernel.ops_key,
                 kernel.ops);
    for (size_t i = 0; i < variants.size(); ++i)
      std::fprintf(json, "%s{\"name\": \"%s\", \"median_ms\": %.6f, \"best_ms\": %.6f}", i ? ", " : "",
                   variants[i].name.c_str(), variants[i].median, variants[i].best);
    std::fprintf(json, "], \"threads_speedup\": %.4f, \"capacity\": %.4f}\n", speedup, capacity);
    if (std::fclose(json) != 0) Fail("cannot write " + o.json + ": " + std::strerror(errno));
  }
}

// A WBMM output takes wh * ww taps, a depthwise output K * K.
double DenseTaps(const Options& o) { return o.window > 0 ? double(o.window) * o.window : double(o.kernel) * o.kernel; }

void BenchFloat32(const Options& o, FILE* json) {
  const wbmm::KernelSet* set = wbmm::FindKernelSet(o.isa.c_str());
  if (set == nullptr) Fail("kernel set '" + o.isa + "' is not usable here (usable: " + wbmm::AvailableIsas() + ")");
  const auto p = Geometry<wbmm::DepthwiseProblem>(o);
  if (const char* why = wbmm::ValidateProblem(p); *why != '\0') Fail(std::string("bad problem: ") + why);

  // One input, output and scratch per independent run of the capacity variant.
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

  wbmm::ThreadPool pool(o.threads);
  auto independent = [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i)
      set->run(p, inputs[i].data(), weights.data(), packed_bias.data(), outputs[i].data(), scratch[i].data(), nullptr);
  };
  Runs runs;
  runs.one_thread = [&] {
    set->run(p, inputs[0].data(), weights.data(), packed_bias.data(), single_output.data(), scratch[0].data(), nullptr);
  };
  runs.n_threads = [&] {
    set->run(p, inputs[0].data(), weights.data(), packed_bias.data(), outputs[0].data(), scratch[0].data(), &pool);
  };
  runs.independent = [&] { pool.ParallelFor(o.threads, independent); };
  runs.reference = single_output.data();
  runs.threaded = outputs[0].data();
  runs.output_bytes = map * sizeof(float);
  Report(o, {"float32", set->isa, double(map) * DenseTaps(o), "fmas", "GFMA/s"}, TimeRoundRobin(o, runs), json);
}

// The int8 quantization a converted model would carry, from random float weights:
// per-tensor asymmetric input (scale 0.02, zero point -5: a calibrated range of
// about [-2.5, 2.7]), per-channel symmetric weights (scale = max |w| / 127, each
// channel with its own gain so the scales differ), bias at scale x_scale *
// w_scale[c], and an output range calibrated as TF's converter does (the
// smallest and largest channel mean -/+ 4 standard deviations, zero point from
// its minimum), so outputs spread over int8 rather than saturate.
struct Int8Model {
  std::vector<int8_t> kernel;  // (kh, kw, C)
  std::vector<int32_t> bias;
  std::vector<float> scales;   // x_scale * w_scale[c] / y_scale, in float32 and that order (the delegate's)
  int input_zero_point = -5, output_zero_point = 0;
};

Int8Model QuantizedModel(const wbmm::Int8Problem& p, std::mt19937& rng) {
  constexpr float kInputScale = 0.02f;
  Int8Model m;
  const int C = p.channels, taps = p.kernel_h * p.kernel_w;
  std::uniform_real_distribution<float> uniform(-1.f, 1.f), gain(0.5f, 2.f);
  std::vector<float> w(size_t(taps) * C), b(C), w_scale(C, 0.f), gains(C);
  for (float& g : gains) g = gain(rng);
  for (size_t i = 0; i < w.size(); ++i) w[i] = uniform(rng) * 0.1f * gains[i % C];
  for (float& v : b) v = uniform(rng);
  for (size_t i = 0; i < w.size(); ++i) w_scale[i % C] = std::max(w_scale[i % C], std::fabs(w[i]) / 127.f);
  m.kernel.resize(w.size());
  for (size_t i = 0; i < w.size(); ++i)
    m.kernel[i] = int8_t(std::clamp(std::lround(w[i] / w_scale[i % C]), -127L, 127L));
  // The input's real values are uniform over the int8 range: variance (255 * scale)^2 / 12.
  const double x_var = std::pow(255.0 * kInputScale, 2) / 12;
  double y_min = 0, y_max = 0;
  for (int c = 0; c < C; ++c) {
    double sum_w2 = 0;
    for (int t = 0; t < taps; ++t) sum_w2 += double(w[size_t(t) * C + c]) * w[size_t(t) * C + c];
    const double spread = 4 * std::sqrt(sum_w2 * x_var);
    y_min = std::min(y_min, b[c] - spread);
    y_max = std::max(y_max, b[c] + spread);
  }
  const float y_scale = float((y_max - y_min) / 255);
  m.output_zero_point = int(std::clamp(std::lround(-128 - y_min / y_scale), -128L, 127L));
  m.bias.resize(C);
  m.scales.resize(C);
  for (int c = 0; c < C; ++c) {
    const float input_times_kernel = kInputScale * w_scale[c];
    m.bias[c] = int32_t(std::lround(b[c] / input_times_kernel));
    m.scales[c] = input_times_kernel / y_scale;
  }
  return m;
}

using AlignedInt8s = std::vector<int8_t, wbmm::CacheLineAllocator<int8_t>>;

std::string Int8IsaNames() {
  std::string names;
  for (const wbmm::Int8KernelSet* set : wbmm::Int8KernelSets()) names += (names.empty() ? "" : ",") + std::string(set->isa);
  return names;
}

void BenchInt8(const Options& o, FILE* json) {
  const wbmm::Int8KernelSet* set = wbmm::FindInt8KernelSet(o.isa.c_str());
  if (set == nullptr)
    Fail("kernel set '" + o.isa + "' is not usable here for int8 (usable: auto, " + wbmm::AvailableIsas() +
         ", or an int8 compilation: " + Int8IsaNames() + ")");
  auto p = Geometry<wbmm::Int8Problem>(o);
  std::mt19937 rng(7);
  const Int8Model model = QuantizedModel(p, rng);
  p.input_zero_point = model.input_zero_point;
  p.output_zero_point = model.output_zero_point;
  if (const char* why = wbmm::ValidateInt8Problem(p); *why != '\0') Fail(std::string("bad problem: ") + why);
  wbmm::Int8Packed packed;  // as the delegate's Prepare packs it
  wbmm::PackInt8Weights(p, *set, model.kernel.data(), wbmm::KernelLayout::kTapsThenChannels, model.bias.data(),
                        model.scales.data(), &packed);

  // One input, output and scratch per independent run of the capacity variant.
  const size_t map = size_t(p.in_h) * p.in_w * p.channels;
  std::uniform_int_distribution<int> byte(-128, 127);
  std::vector<AlignedInt8s> inputs(o.threads, AlignedInt8s(map)), outputs(o.threads, AlignedInt8s(map));
  for (auto& input : inputs)
    for (int8_t& v : input) v = int8_t(byte(rng));
  std::vector<wbmm::AlignedBytes> scratch(o.threads, wbmm::AlignedBytes(wbmm::Int8ScratchBytes(p, *set, o.threads)));
  AlignedInt8s single_output(map);

  wbmm::ThreadPool pool(o.threads);
  auto independent = [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) set->run(p, inputs[i].data(), packed, outputs[i].data(), scratch[i].data(), nullptr);
  };
  Runs runs;
  runs.one_thread = [&] { set->run(p, inputs[0].data(), packed, single_output.data(), scratch[0].data(), nullptr); };
  runs.n_threads = [&] { set->run(p, inputs[0].data(), packed, outputs[0].data(), scratch[0].data(), &pool); };
  runs.independent = [&] { pool.ParallelFor(o.threads, independent); };
  runs.reference = single_output.data();
  runs.threaded = outputs[0].data();
  runs.output_bytes = map;
  Report(o, {"int8", set->isa, double(map) * DenseTaps(o), "macs", "GMAC/s"}, TimeRoundRobin(o, runs), json);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  // Opened before the timing, so an unwritable path fails before minutes of runs, not after.
  FILE* json = o.json.empty() ? nullptr : std::fopen(o.json.c_str(), "w");
  if (!o.json.empty() && json == nullptr) Fail("cannot write " + o.json + ": " + std::strerror(errno));
  if (o.int8)
    BenchInt8(o, json);
  else
    BenchFloat32(o, json);
  return 0;
}
