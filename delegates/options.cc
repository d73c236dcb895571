// See options.h. kOptionTable is the single list of options.
#include "options.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "kernels/windowed_depthwise.h"

namespace wbmm {
namespace {

bool ParseInt(const char* text, long low, long high, long* out) {
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || v < low || v > high) return false;
  *out = v;
  return true;
}

std::string SetNumThreads(const char* v, DelegateOptions* o) {
  long n;
  if (!ParseInt(v, -1, 256, &n) || n == 0) return "must be an integer in 1..256, or -1";
  o->num_threads = int(n);
  return "";
}

std::string SetSpinMicros(const char* v, DelegateOptions* o) {
  long n;
  if (!ParseInt(v, 0, 1000000, &n)) return "must be an integer in 0..1000000 (microseconds)";
  o->spin_us = int(n);
  return "";
}

std::string SetClaimDepthwise(const char* v, DelegateOptions* o) {
  if (!std::strcmp(v, "1") || !std::strcmp(v, "true")) o->claim_depthwise = true;
  else if (!std::strcmp(v, "0") || !std::strcmp(v, "false")) o->claim_depthwise = false;
  else return "must be 0, 1, true or false";
  return "";
}

std::string SetMinKernel(const char* v, DelegateOptions* o) {
  long n;
  if (!ParseInt(v, 1, 255, &n)) return "must be an integer in 1..255";
  o->min_kernel = int(n);
  return "";
}

std::string SetVerbose(const char* v, DelegateOptions* o) {
  long n;
  if (!ParseInt(v, 0, 2, &n)) return "must be 0, 1 or 2";
  o->verbose = int(n);
  return "";
}

std::string SetIsa(const char* v, DelegateOptions* o) {
  if (FindKernelSet(v) == nullptr)
    return std::string("'") + v + "' is not available on this CPU (available: auto," + AvailableIsas() + ")";
  o->isa = v;
  return "";
}

struct OptionSpec {
  const char* key;
  const char* default_text;
  const char* help;
  std::string (*apply)(const char* value, DelegateOptions* options);
};

const OptionSpec kOptionTable[] = {
    {"num_threads", "1", "threads for the kernels; -1 uses the interpreter's recommended count", &SetNumThreads},
    {"spin_us", "1000",
     "microseconds an idle worker thread polls for the next layer before it sleeps; 0 sleeps at once (least "
     "energy; every multithreaded layer then pays a thread wake-up)",
     &SetSpinMicros},
    {"claim_depthwise", "0",
     "1: also run builtin DEPTHWISE_CONV_2D (float, stride 1, dilation 1, multiplier 1) and CONV_2D whose groups "
     "equal its channels (Keras Conv2D(groups=C), as in ConvNeXt) with a kernel side >= min_kernel",
     &SetClaimDepthwise},
    {"min_kernel", "7", "smallest kernel height or width claimed by claim_depthwise", &SetMinKernel},
    {"verbose", "0",
     "1: print each claimed or refused WBMM/depthwise node with the reason to stderr; 2: every node", &SetVerbose},
    {"isa", "auto", "kernel instruction set: auto, portable, avx2, avx512 or neon", &SetIsa},
};

std::string Apply(const char* key, const char* value, DelegateOptions* options) {
  if (key == nullptr || value == nullptr) return "option key or value is missing";
  for (const OptionSpec& spec : kOptionTable) {
    if (std::strcmp(spec.key, key) != 0) continue;
    const std::string why = spec.apply(value, options);
    return why.empty() ? "" : std::string("option ") + key + "=" + value + ": " + why;
  }
  std::string known;
  for (const OptionSpec& spec : kOptionTable) known += std::string(known.empty() ? "" : ", ") + spec.key;
  return std::string("unknown option '") + key + "' (known: " + known + ")";
}

}  // namespace

std::string ParseOptions(const char* const* keys, const char* const* values, size_t count,
                         DelegateOptions* options) {
  for (size_t i = 0; i < count; ++i) {
    const std::string why = Apply(keys[i], values[i], options);
    if (!why.empty()) return why;
  }
  return "";
}

std::string ParseOptionString(const std::string& text, DelegateOptions* options) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t stop = text.find(';', start);
    if (stop == std::string::npos) stop = text.size();
    const std::string item = text.substr(start, stop - start);
    if (!item.empty()) {
      const size_t colon = item.find(':');
      if (colon == std::string::npos) return "option '" + item + "' is not key:value";
      const std::string why = Apply(item.substr(0, colon).c_str(), item.substr(colon + 1).c_str(), options);
      if (!why.empty()) return why;
    }
    start = stop + 1;
  }
  return "";
}

const std::string& OptionsHelp() {
  static const std::string help = [] {
    std::string s = "wbmm delegate options (key:value;key:value):\n";
    for (const OptionSpec& spec : kOptionTable) {
      s += "  ";
      s += spec.key;
      s += std::string(18 - std::strlen(spec.key), ' ');
      s += "(default ";
      s += spec.default_text;
      s += ") ";
      s += spec.help;
      s += "\n";
    }
    return s;
  }();
  return help;
}

}  // namespace wbmm
