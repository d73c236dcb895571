// The custom ops WBMM and WBMM_DEPTHWISE as the delegate reads them.
//
// Mirrors converters/custom_ops.py, the single definition of the format
// (inputs, kernel layout (1, kh, kw, C), custom_options = 6 little-endian int32
// words [MAGIC, FORMAT_VERSION, a, b, c, d]). tests/test_delegate_custom_ops.py
// parses the constants below and compares them with the Python module, so keep
// the `constexpr <type> kName = value;` form. The ops are int8 when their input
// is (the int8 form is in converters/custom_ops.py and docs/USAGE.md; delegate.cc
// checks it): no word here says so.

#ifndef WBMM_DELEGATES_WBMM_CUSTOM_OPS_H_
#define WBMM_DELEGATES_WBMM_CUSTOM_OPS_H_

#include <cstdint>
#include <cstring>
#include <string>

namespace wbmm {

constexpr const char* kWbmmOpName = "WBMM";
constexpr const char* kWbmmDepthwiseOpName = "WBMM_DEPTHWISE";

constexpr int32_t kMagic = 0x314D4257;  // b"WBM1" read as a little-endian int32
constexpr int32_t kFormatVersion = 1;
constexpr int32_t kOptionWords = 6;

constexpr int32_t kFlagShortcut = 1;

constexpr int32_t kPaddingSame = 0;
constexpr int32_t kPaddingValid = 1;

constexpr int32_t kActivationNone = 0;
constexpr int32_t kActivationRelu = 1;
constexpr int32_t kActivationRelu6 = 3;
// TFLite's RELU_N1_TO_1 (clamp to [-1, 1]): builtin convs carry it; converters/
// custom_ops.py does not emit it in the custom ops.
constexpr int32_t kActivationReluN1To1 = 2;

// Input slots shared by both ops.
constexpr int kInputX = 0;
constexpr int kInputKernel = 1;
constexpr int kInputBias = 2;

enum class Padding { kSame, kValid };
enum class Activation { kNone, kRelu, kRelu6, kReluN1To1 };

// Parsed custom_options of either op.
struct CustomOpOptions {
  bool is_wbmm = false;
  int window_h = 0, window_w = 0;  // WBMM
  bool shortcut = false;           // WBMM
  int kernel_h = 0, kernel_w = 0;  // WBMM_DEPTHWISE
  Padding padding = Padding::kSame;
  Activation activation = Activation::kNone;
};

inline bool ActivationFromCode(int32_t code, Activation* out) {
  switch (code) {
    case kActivationNone: *out = Activation::kNone; return true;
    case kActivationRelu: *out = Activation::kRelu; return true;
    case kActivationRelu6: *out = Activation::kRelu6; return true;
    case kActivationReluN1To1: *out = Activation::kReluN1To1; return true;
    default: return false;
  }
}

// Returns "" on success, else why the options cannot be read.
inline std::string ParseCustomOptions(const char* op_name, const void* data, int size,
                                      CustomOpOptions* out) {
  const bool is_wbmm = std::strcmp(op_name, kWbmmOpName) == 0;
  if (!is_wbmm && std::strcmp(op_name, kWbmmDepthwiseOpName) != 0)
    return std::string("custom op ") + op_name + " is not a wbmm-mobile op";
  if (data == nullptr || size != kOptionWords * 4)
    return std::string(op_name) + " options are " + std::to_string(size) + " bytes, expected " +
           std::to_string(kOptionWords * 4);
  int32_t w[kOptionWords];
  const unsigned char* bytes = static_cast<const unsigned char*>(data);
  for (int i = 0; i < kOptionWords; ++i)  // little-endian regardless of the host
    w[i] = static_cast<int32_t>(uint32_t(bytes[4 * i]) | uint32_t(bytes[4 * i + 1]) << 8 |
                                uint32_t(bytes[4 * i + 2]) << 16 | uint32_t(bytes[4 * i + 3]) << 24);
  if (w[0] != kMagic) return std::string(op_name) + " options have a wrong magic number";
  if (w[1] != kFormatVersion)
    return std::string(op_name) + " options are format version " + std::to_string(w[1]) +
           ", this delegate reads " + std::to_string(kFormatVersion);
  out->is_wbmm = is_wbmm;
  if (is_wbmm) {
    if (w[2] < 1 || w[3] < 1) return "WBMM window must be positive";
    out->window_h = w[2];
    out->window_w = w[3];
    out->shortcut = (w[4] & kFlagShortcut) != 0;
    out->kernel_h = 2 * w[2] - 1;
    out->kernel_w = 2 * w[3] - 1;
    return "";
  }
  if (w[2] < 1 || w[3] < 1) return "WBMM_DEPTHWISE kernel size must be positive";
  out->kernel_h = w[2];
  out->kernel_w = w[3];
  if (w[4] == kPaddingSame) out->padding = Padding::kSame;
  else if (w[4] == kPaddingValid) out->padding = Padding::kValid;
  else return "WBMM_DEPTHWISE padding code " + std::to_string(w[4]) + " is unknown";
  if (!ActivationFromCode(w[5], &out->activation))
    return "WBMM_DEPTHWISE activation code " + std::to_string(w[5]) + " is not supported";
  return "";
}

}  // namespace wbmm

#endif  // WBMM_DELEGATES_WBMM_CUSTOM_OPS_H_
