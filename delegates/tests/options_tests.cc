// The option table (options.cc) and the custom_options reader (wbmm_custom_ops.h).
#include <cstring>
#include <string>

#include "options.h"
#include "test_main.h"
#include "threadpool.h"
#include "wbmm_custom_ops.h"

WBMM_TEST(OptionStringParsesEveryKey) {
  wbmm::DelegateOptions o;
  const std::string why = wbmm::ParseOptionString("num_threads:4;claim_depthwise:1;min_kernel:13;verbose:1;isa:portable", &o);
  CHECK_MSG(why.empty(), "%s", why.c_str());
  CHECK(o.num_threads == 4 && o.claim_depthwise && o.min_kernel == 13 && o.verbose == 1 && o.isa == "portable");
  wbmm::DelegateOptions d;
  CHECK(wbmm::ParseOptionString("", &d).empty());
  CHECK(wbmm::ParseOptionString("claim_depthwise:true;", &d).empty() && d.claim_depthwise);
}

WBMM_TEST(OptionErrorsNameTheKey) {
  wbmm::DelegateOptions o;
  CHECK(wbmm::ParseOptionString("num_threads:0", &o).find("num_threads") != std::string::npos);
  CHECK(wbmm::ParseOptionString("num_threads:4x", &o).find("num_threads") != std::string::npos);
  CHECK(wbmm::ParseOptionString("min_kernel:-3", &o).find("min_kernel") != std::string::npos);
  CHECK(wbmm::ParseOptionString("claim_depthwise:yes", &o).find("claim_depthwise") != std::string::npos);
  CHECK(wbmm::ParseOptionString("isa:sse9", &o).find("not available") != std::string::npos);
  // TFLite documents ',' for this flag but splits on ';': a comma list is one bad value.
  CHECK(!wbmm::ParseOptionString("num_threads:2,verbose:1", &o).empty());
  const std::string unknown = wbmm::ParseOptionString("threads:2", &o);
  CHECK(unknown.find("unknown option 'threads'") != std::string::npos && unknown.find("num_threads") != std::string::npos);
  CHECK(wbmm::ParseOptionString("num_threads", &o).find("key:value") != std::string::npos);
}

WBMM_TEST(HelpComesFromTheSameTable) {
  const std::string& help = wbmm::OptionsHelp();
  for (const char* key : {"num_threads", "spin_us", "claim_depthwise", "min_kernel", "verbose", "isa"}) {
    CHECK_MSG(help.find(std::string("  ") + key) != std::string::npos, "%s missing from help", key);
    // every documented key is accepted
    wbmm::DelegateOptions o;
    const char* value = std::strcmp(key, "isa") == 0 ? "auto" : "1";
    const char* keys[] = {key};
    const char* values[] = {value};
    CHECK_MSG(wbmm::ParseOptions(keys, values, 1, &o).empty(), "%s rejected", key);
  }
  const wbmm::DelegateOptions defaults;
  CHECK(help.find("(default 7)") != std::string::npos && defaults.min_kernel == 7);
  CHECK(help.find("(default 1)") != std::string::npos && defaults.num_threads == 1);
  // The documented spin default is the one the thread pool gets.
  CHECK(help.find("spin_us           (default " + std::to_string(wbmm::ThreadPool::kDefaultSpinMicros) + ")") !=
            std::string::npos &&
        defaults.spin_us == wbmm::ThreadPool::kDefaultSpinMicros);
}

WBMM_TEST(SpinMicrosRange) {
  wbmm::DelegateOptions o;
  CHECK(wbmm::ParseOptionString("spin_us:0", &o).empty() && o.spin_us == 0);
  CHECK(wbmm::ParseOptionString("spin_us:250", &o).empty() && o.spin_us == 250);
  CHECK(wbmm::ParseOptionString("spin_us:-1", &o).find("spin_us") != std::string::npos);
  CHECK(wbmm::ParseOptionString("spin_us:1000001", &o).find("spin_us") != std::string::npos);
}

namespace {
std::string Words(int a, int b, int c, int d, int e, int f) {
  const int w[6] = {a, b, c, d, e, f};
  std::string bytes(24, '\0');
  for (int i = 0; i < 6; ++i)
    for (int k = 0; k < 4; ++k) bytes[4 * i + k] = char((unsigned(w[i]) >> (8 * k)) & 0xFF);
  return bytes;
}
}  // namespace

WBMM_TEST(CustomOptionsReader) {
  wbmm::CustomOpOptions o;
  std::string b = Words(wbmm::kMagic, 1, 7, 5, 1, 0);
  CHECK(wbmm::ParseCustomOptions("WBMM", b.data(), int(b.size()), &o).empty());
  CHECK(o.is_wbmm && o.window_h == 7 && o.window_w == 5 && o.shortcut && o.kernel_h == 13 && o.kernel_w == 9);
  b = Words(wbmm::kMagic, 1, 31, 31, wbmm::kPaddingValid, wbmm::kActivationRelu6);
  CHECK(wbmm::ParseCustomOptions("WBMM_DEPTHWISE", b.data(), int(b.size()), &o).empty());
  CHECK(!o.is_wbmm && o.kernel_h == 31 && o.padding == wbmm::Padding::kValid && o.activation == wbmm::Activation::kRelu6);
  b = Words(0x12345678, 1, 7, 7, 1, 0);
  CHECK(wbmm::ParseCustomOptions("WBMM", b.data(), int(b.size()), &o).find("magic") != std::string::npos);
  b = Words(wbmm::kMagic, 2, 7, 7, 1, 0);
  CHECK(wbmm::ParseCustomOptions("WBMM", b.data(), int(b.size()), &o).find("version 2") != std::string::npos);
  CHECK(wbmm::ParseCustomOptions("WBMM", b.data(), 20, &o).find("20 bytes") != std::string::npos);
  b = Words(wbmm::kMagic, 1, 7, 7, 0, 2);  // RELU_N1_TO_1: a clamp to [-1, 1]
  CHECK(wbmm::ParseCustomOptions("WBMM_DEPTHWISE", b.data(), int(b.size()), &o).empty());
  CHECK(o.activation == wbmm::Activation::kReluN1To1);
  b = Words(wbmm::kMagic, 1, 7, 7, 0, 4);  // TANH is not a clamp
  CHECK(wbmm::ParseCustomOptions("WBMM_DEPTHWISE", b.data(), int(b.size()), &o).find("activation") != std::string::npos);
}
