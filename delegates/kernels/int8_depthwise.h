// int8 depthwise kernels, following TFLite's int8 quantization spec: per-tensor
// asymmetric int8 activations (scale, zero point), per-channel symmetric int8
// weights (zero point 0), int32 bias with scale x_scale * w_scale[c], fused
// activations as clamps on the quantized output. Two modes, as in float32
// (windowed_depthwise.h):
//
//  * plain: an exact stride-1 depthwise conv with any dilation, explicit
//    top/left padding (SAME or VALID decided by the caller); padded pixels are
//    the input zero point (real 0).
//  * windowed (the WBMM op): the map is padded bottom/right to a multiple of
//    the window with the input zero point; inside each window the
//    (2wh-1) x (2ww-1) kernel is applied 'same' with the zero point at every
//    window border; outputs past the map are cropped.
//
// Arithmetic: int32 accumulation of raw int8 x times int8 w over every tap
// the kernel multiplies, padded taps included (their x is the zero point).
// sum w * (x - zp) = sum w * x - zp * sum w, and the second term depends only
// on the channel (plain) or the position inside the window (windowed), so it
// is folded into the bias at Prepare (PackInt8Weights): the inner loops never
// subtract the zero point, and the result is exact at every border because
// padding holds the zero point itself.
//
// Requantization, one scheme for every ISA (RequantizeFp32): XNNPACK's "fp32"
// scheme, the one its int8 convolutions use: scale[c] = x_scale * w_scale[c]
// / y_scale in float32 (computed in that order, as XNNPACK computes it),
// float(acc) * scale[c], clamped to the activation range less the zero point,
// rounded to nearest with ties to even, + the output zero point. Why this one:
// XNNPACK is LiteRT's default CPU path, and its results do not depend on the
// shape. TFLite's builtin int8 kernel (ai-edge-litert 2.3, x86-64) does:
// measured here, its vectorized output stage rounds twice (a Q31 doubling
// high multiply, then a right shift, both rounding half up: TFLite's "upward"
// depthwise rounding) while the leftover values of a row go through
// MultiplyByQuantizedMultiplier built with TFLITE_SINGLE_ROUNDING (one
// rounding), so which of its outputs round twice depends on the map width and
// channel count. Measured on the test models: this scheme is bit-identical to
// XNNPACK and within one step of the builtin kernel, which it matches on about
// 99.9-99.97% of outputs (the double rounding's share).
//
// Packing (once, at Prepare): channels in blocks of the ISA's lanes; taps in
// groups of `group` consecutive taps of a kernel row, interleaved per channel
// ([lane][tap] within a group) so one instruction multiplies `group` taps of
// `lanes` channels and adds them into `lanes` int32 accumulators (AVX2 madd over
// tap pairs, AVX-512 VNNI / NEON sdot over four taps, plain NEON one tap).
// Per-channel multiplier, shifts and the corrected bias sit next to the weights.
//
// Not for: strides, depth multiplier != 1, uint8 or int16 activations,
// per-tensor weights with a zero point (the delegate leaves those to TFLite).

#ifndef WBMM_DELEGATES_KERNELS_INT8_DEPTHWISE_H_
#define WBMM_DELEGATES_KERNELS_INT8_DEPTHWISE_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "windowed_depthwise.h"

namespace wbmm {

// Plain mode works on bands of this many output rows (one packed strip each).
constexpr int kInt8BandRows = 16;

struct Int8Problem {
  int batch = 1, in_h = 0, in_w = 0, channels = 0;
  int out_h = 0, out_w = 0;
  int kernel_h = 0, kernel_w = 0;
  int dilation_h = 1, dilation_w = 1;
  // Plain mode: output (oy, ox) reads input (oy - pad_top + i * dh, ox - pad_left + j * dw).
  int pad_top = 0, pad_left = 0;
  // Windowed mode when window_h > 0 (then kernel = (2wh-1, 2ww-1), dilation 1, out = in).
  int window_h = 0, window_w = 0;
  int input_zero_point = 0, output_zero_point = 0;
  int out_min = -128, out_max = 127;  // the activation clamp, quantized

  bool windowed() const { return window_h > 0; }
};

// Returns "" if the problem is well-formed, else why not.
const char* ValidateInt8Problem(const Int8Problem& p);

using AlignedInts = std::vector<int32_t, CacheLineAllocator<int32_t>>;
using AlignedBytes = std::vector<uint8_t, CacheLineAllocator<uint8_t>>;

// The requantization every compilation implements (this scalar form is the
// portable path's): see the file comment.
inline int8_t RequantizeFp32(int32_t acc, float scale, int zero_point, int lo, int hi) {
  float f = float(acc) * scale;
  f = std::min(std::max(f, float(lo - zero_point)), float(hi - zero_point));
  return int8_t(int(std::nearbyint(f)) + zero_point);  // default rounding mode: nearest, ties to even
}

// Everything Prepare builds for one int8 conv: the packed weights and, per
// channel block of `lanes`, the requantization scales and corrected bias.
struct Int8Packed {
  AlignedBytes weights;  // element_bytes per value, see PackInt8Weights
  AlignedInts bias;      // [block][position][lane]: bias - (zp + input_offset) * sum of multiplied weights
  AlignedFloats scale;   // [block][lane]: x_scale * w_scale[c] / y_scale
  int positions = 1;     // 1 (plain) or wh * ww (windowed)
};

// One compilation of the int8 kernels.
struct Int8KernelSet {
  const char* isa;     // "portable", "avx2", "avx512", "avx512-vnni", "neon", "neon-dotprod", ...
  int lanes;           // channels per block (int32 accumulators per vector)
  int group;           // taps multiplied per instruction
  int element_bytes;   // 2: int16 weights and inputs; 1: int8 weights, int8/uint8 inputs
  int input_offset;    // added to every input value when packed (128: unsigned input for VNNI)
  void (*run)(const Int8Problem& p, const int8_t* input, const Int8Packed& packed, int8_t* output,
              uint8_t* scratch, ThreadPool* pool);
};

// kernel: (kh, kw, C) int8 (or (C, kh, kw) with kChannelsThenTaps); bias (C,)
// int32 or nullptr; scales[c] = x_scale * w_scale[c] / y_scale in float32.
void PackInt8Weights(const Int8Problem& p, const Int8KernelSet& set, const int8_t* kernel, KernelLayout layout,
                     const int32_t* bias, const float* scales, Int8Packed* packed);

size_t Int8ScratchBytes(const Int8Problem& p, const Int8KernelSet& set, int num_threads);
size_t Int8ThreadScratchBytes(const Int8Problem& p, const Int8KernelSet& set);

// The int8 kernels that go with a float ISA name ("auto", "portable", "avx2",
// "avx512", "neon"): the best int8 compilation of that family this CPU runs
// (VNNI within avx512, dot product within neon). Or an int8 name exactly.
const Int8KernelSet* FindInt8KernelSet(const char* isa);
// Every int8 compilation this CPU runs (tests).
std::vector<const Int8KernelSet*> Int8KernelSets();

}  // namespace wbmm

#endif  // WBMM_DELEGATES_KERNELS_INT8_DEPTHWISE_H_
