// The delegate's options: one table (options.cc) that both parses them and
// prints their help, so the documented keys and the accepted keys can never
// disagree.
//
// Options arrive as TFLite's external-delegate key/value pairs; on the command
// line of benchmark_model they are written `key:value;key:value`
// (--external_delegate_options), which ParseOptionString also reads.

#ifndef WBMM_DELEGATES_OPTIONS_H_
#define WBMM_DELEGATES_OPTIONS_H_

#include <cstddef>
#include <string>

namespace wbmm {

struct DelegateOptions {
  int num_threads = 1;           // -1: the interpreter's recommended count
  int spin_us = 1000;            // an idle worker polls this long for the next job, then sleeps
  bool claim_depthwise = false;  // also take builtin DEPTHWISE_CONV_2D
  int min_kernel = 7;            // smallest kh or kw claimed with claim_depthwise
  int verbose = 0;               // 1: one line per claimed/refused node on stderr
  std::string isa = "auto";      // force a kernel compilation (tests, benchmarks)
};

// Returns "" or a one-line error naming the key and why.
std::string ParseOptions(const char* const* keys, const char* const* values, size_t count,
                         DelegateOptions* options);
std::string ParseOptionString(const std::string& text, DelegateOptions* options);

// One line per option: key, default, meaning.
const std::string& OptionsHelp();

}  // namespace wbmm

#endif  // WBMM_DELEGATES_OPTIONS_H_
