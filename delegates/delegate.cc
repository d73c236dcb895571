// libwbmm_delegate.so: the glue between TFLite's external-delegate C ABI and
// the kernels in kernels/.
//
// Flow: tflite_plugin_create_delegate parses the options table; TFLite calls
// Prepare, where we check the runtime's struct layout (abi_check.cc), walk the
// execution plan, match -> check each node (a refusal carries its reason,
// printed with verbose:1) and hand the claimed nodes to
// ReplaceNodeSubsetsWithDelegateKernels. Each resulting partition becomes a
// Partition object: its Prepare resolves shapes and packs weights, its Invoke
// only runs kernels (no allocation).
//
// What is claimed: custom ops WBMM and WBMM_DEPTHWISE (converters/custom_ops.py),
// and with claim_depthwise:1 builtin DEPTHWISE_CONV_2D and the CONV_2D whose
// groups equal its channels (one input channel per group: how TFLite stores
// Keras Conv2D(groups=C), e.g. every 7x7 conv of keras.applications
// ConvNeXt). float32: float32 activations, float32 or float16 kernels,
// including a DEQUANTIZE (fp16 -> fp32) that feeds only the kernel input of a
// claimed node (the DEQUANTIZE is claimed too and folded into weight packing);
// stride 1, dilation 1. int8 (TFLite's int8 spec, kernels/int8_depthwise.h):
// per-tensor int8 activations, per-channel symmetric int8 weights on the
// channel axis (or per-tensor with zero point 0), int32 bias at
// x_scale * w_scale[c]; stride 1, any dilation; the custom ops are int8 when
// their input is (the WBMM shortcut must then be folded into the table).
// Other quantizations (uint8, int16, weights with a zero point, a bias at
// another scale) are left to TFLite with the reason; custom ops with them fail.
//
// Not for: strided depthwise, depth multiplier != 1, dynamic kernels.

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "abi_check.h"
#include "kernels/int8_depthwise.h"
#include "kernels/windowed_depthwise.h"
#include "options.h"
#include "threadpool.h"
#include "tflite_c_abi.h"
#include "wbmm_custom_ops.h"

#define WBMM_EXPORT extern "C" __attribute__((visibility("default")))

namespace wbmm {
namespace {

constexpr int kTfLiteBuiltinDelegate = 51;  // BuiltinOperator_DELEGATE

// What the matcher decided for one claimed convolution node.
struct ConvPlan {
  int node_index = -1;
  const char* op_label = "";  // for messages
  int input = -1, kernel = -1, bias = -1, output = -1;
  int kernel_source = -1;     // tensor that really holds the weights (DEQUANTIZE input or `kernel`)
  int dequantize_node = -1;   // the folded DEQUANTIZE of the kernel, if any
  int bias_source = -1;       // likewise for the bias
  int bias_dequantize_node = -1;
  bool int8 = false;  // int8 activations and weights (else float32)
  bool windowed = false;
  int window_h = 0, window_w = 0;
  bool shortcut = false;
  int kernel_h = 0, kernel_w = 0;
  int dilation_h = 1, dilation_w = 1;
  KernelLayout kernel_layout = KernelLayout::kTapsThenChannels;
  Padding padding = Padding::kSame;
  Activation activation = Activation::kNone;
};

struct Delegate;

std::string Describe(const TfLiteRegistration* reg) {
  if (reg->builtin_code == kTfLiteBuiltinCustom) return reg->custom_name ? reg->custom_name : "CUSTOM";
  if (reg->builtin_code == kTfLiteBuiltinDepthwiseConv2d) return "DEPTHWISE_CONV_2D";
  if (reg->builtin_code == kTfLiteBuiltinConv2d) return "CONV_2D";
  if (reg->builtin_code == kTfLiteBuiltinDequantize) return "DEQUANTIZE";
  return "builtin op " + std::to_string(reg->builtin_code);
}

const char* TypeName(TfLiteType type) {
  switch (type) {
    case kTfLiteFloat32: return "float32";
    case kTfLiteFloat16: return "float16";
    case kTfLiteInt32: return "int32";
    case kTfLiteUInt8: return "uint8";
    case kTfLiteInt16: return "int16";
    case kTfLiteInt8: return "int8";
    default: return "another type";
  }
}

bool IsConstant(const TfLiteTensor& t) {
  return (t.allocation_type == kTfLiteMmapRo || t.allocation_type == kTfLitePersistentRo) && t.data != nullptr;
}

std::string ShapeText(const TfLiteTensor& t) {
  if (t.dims == nullptr) return "(?)";
  std::string s = "(";
  for (int i = 0; i < t.dims->size; ++i) s += (i ? "," : "") + std::to_string(t.dims->data[i]);
  return s + ")";
}

// Everything the matcher needs to know about the graph around a node.
struct GraphView {
  TfLiteContext* context;
  std::map<int, int> producer;         // tensor -> node producing it
  std::map<int, int> consumer_count;   // tensor -> number of consuming nodes
};

GraphView ViewGraph(TfLiteContext* context, const TfLiteIntArray* plan) {
  GraphView g{context, {}, {}};
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode* node;
    TfLiteRegistration* reg;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &reg) != kTfLiteOk) continue;
    for (int k = 0; k < node->outputs->size; ++k) g.producer[node->outputs->data[k]] = plan->data[i];
    for (int k = 0; k < node->inputs->size; ++k)
      if (node->inputs->data[k] >= 0) g.consumer_count[node->inputs->data[k]] += 1;
  }
  return g;
}

// A weight input (kernel or bias): a constant float32/float16 tensor, or the
// sole use of a DEQUANTIZE of a constant float16 tensor (what the converter
// emits for float16 weights). Returns "" and the tensor holding the numbers.
std::string ResolveWeight(const GraphView& g, int tensor, const char* what, int* source, int* dequantize_node) {
  TfLiteContext* context = g.context;
  const TfLiteTensor& t = context->tensors[tensor];
  *dequantize_node = -1;
  if (IsConstant(t)) {
    if (t.type != kTfLiteFloat32 && t.type != kTfLiteFloat16) return std::string(what) + " is neither float32 nor float16";
    *source = tensor;
    return "";
  }
  auto producer = g.producer.find(tensor);
  if (producer == g.producer.end()) return std::string(what) + " is not a constant";
  TfLiteNode* node;
  TfLiteRegistration* reg;
  context->GetNodeAndRegistration(context, producer->second, &node, &reg);
  if (reg->builtin_code != kTfLiteBuiltinDequantize)
    return std::string(what) + " is produced by " + Describe(reg) + ", not a constant";
  const TfLiteTensor& src = context->tensors[node->inputs->data[0]];
  if (!IsConstant(src) || src.type != kTfLiteFloat16)
    return std::string(what) + " comes from a DEQUANTIZE of a non-constant or non-float16 tensor";
  *source = node->inputs->data[0];
  // Claim (and so remove) the DEQUANTIZE only when we are its sole consumer;
  // a shared one (the converter shares a zero bias) stays with TFLite and we
  // read its constant float16 input directly.
  auto uses = g.consumer_count.find(tensor);
  if (uses != g.consumer_count.end() && uses->second == 1) *dequantize_node = producer->second;
  return "";
}

// The kernel's channel axis: 3 in (1, kh, kw, C), 0 in a grouped CONV_2D's (C, kh, kw, 1).
int ChannelAxis(const ConvPlan& plan) { return plan.kernel_layout == KernelLayout::kChannelsThenTaps ? 0 : 3; }

// The affine quantization of t, or nullptr.
const TfLiteAffineQuantization* Affine(const TfLiteTensor& t) {
  if (t.quantization.type != kTfLiteAffineQuantization || t.quantization.params == nullptr) return nullptr;
  const auto* q = static_cast<const TfLiteAffineQuantization*>(t.quantization.params);
  return q->scale != nullptr && q->zero_point != nullptr && q->scale->size >= 1 ? q : nullptr;
}

// "" when t is per-tensor int8 with a positive scale (scale, zero point filled).
std::string PerTensorInt8(const TfLiteTensor& t, const char* what, float* scale, int* zero_point) {
  if (t.type != kTfLiteInt8) return std::string(what) + " is " + TypeName(t.type) + ", not int8";
  const TfLiteAffineQuantization* q = Affine(t);
  if (q == nullptr) return std::string(what) + " has no quantization parameters";
  if (q->scale->size != 1 || q->zero_point->size != 1) return std::string(what) + " is not quantized per tensor";
  if (!(q->scale->data[0] > 0.0f) || !std::isfinite(q->scale->data[0])) return std::string(what) + " scale is not positive";
  if (q->zero_point->data[0] < -128 || q->zero_point->data[0] > 127) return std::string(what) + " zero point is outside int8";
  *scale = q->scale->data[0];
  *zero_point = q->zero_point->data[0];
  return "";
}

// TFLite's int8 spec for the weights: constant int8, symmetric (every zero
// point 0), one scale per channel on the channel axis or one for all; the bias
// constant int32 at x_scale * w_scale[c] with zero point 0.
std::string CheckInt8Weights(const GraphView& g, ConvPlan* plan, float x_scale) {
  const TfLiteTensor* t = g.context->tensors;
  const TfLiteTensor& k = t[plan->kernel];
  const int channels = k.dims->data[ChannelAxis(*plan)];
  if (!IsConstant(k)) return "kernel is not a constant";
  if (k.type != kTfLiteInt8) return std::string("kernel is ") + TypeName(k.type) + ", input is int8";
  const TfLiteAffineQuantization* q = Affine(k);
  if (q == nullptr) return "kernel has no quantization parameters";
  const bool per_channel = q->scale->size > 1;
  if (per_channel && (q->scale->size != channels || q->quantized_dimension != ChannelAxis(*plan)))
    return "kernel is quantized along axis " + std::to_string(q->quantized_dimension) + " with " +
           std::to_string(q->scale->size) + " scales, not per channel";
  if (q->zero_point->size != q->scale->size) return "kernel has " + std::to_string(q->zero_point->size) + " zero points for " +
                                                    std::to_string(q->scale->size) + " scales";
  for (int c = 0; c < q->zero_point->size; ++c)
    if (q->zero_point->data[c] != 0) return "kernel has a nonzero zero point (not symmetric)";
  for (int c = 0; c < q->scale->size; ++c)
    if (!(q->scale->data[c] > 0.0f) || !std::isfinite(q->scale->data[c])) return "kernel scale is not positive";
  plan->kernel_source = plan->kernel;
  if (plan->bias < 0) return "";
  const TfLiteTensor& b = t[plan->bias];
  if (!IsConstant(b) || b.type != kTfLiteInt32) return "bias is not a constant int32 tensor";
  if (b.dims == nullptr || b.dims->size != 1 || b.dims->data[0] != channels) return "bias shape " + ShapeText(b) + " is not (C,)";
  const TfLiteAffineQuantization* bq = Affine(b);
  if (bq == nullptr) return "bias has no quantization parameters";
  for (int c = 0; c < channels; ++c) {
    const double want = double(x_scale) * q->scale->data[per_channel ? c : 0];
    const double got = bq->scale->data[bq->scale->size > 1 ? c : 0];
    if (std::fabs(got - want) > 1e-6 * want) return "bias scale is not input scale x kernel scale";
    if (bq->zero_point->data[bq->zero_point->size > 1 ? c : 0] != 0) return "bias has a nonzero zero point";
  }
  plan->bias_source = plan->bias;
  return "";
}

std::string CheckCommonTensors(const GraphView& g, ConvPlan* plan) {
  const TfLiteTensor* t = g.context->tensors;
  const TfLiteTensor& x = t[plan->input];
  if (x.type == kTfLiteInt8) plan->int8 = true;
  else if (x.type != kTfLiteFloat32) return std::string("input is ") + TypeName(x.type) + ", not float32 or int8";
  if (x.dims == nullptr || x.dims->size != 4) return "input " + ShapeText(x) + " is not NHWC";
  float x_scale = 0.0f, y_scale = 0.0f;
  int zero_point = 0;
  if (plan->int8) {
    std::string why = PerTensorInt8(x, "input", &x_scale, &zero_point);
    if (why.empty()) why = PerTensorInt8(t[plan->output], "output", &y_scale, &zero_point);
    if (!why.empty()) return why;
    if (plan->windowed && plan->shortcut)
      return "int8 WBMM takes no shortcut flag: the identity must be folded into the table's centre tap before it is "
             "quantized";
  } else {
    if (t[plan->output].type != kTfLiteFloat32) return "output is not float32";
    if (plan->dilation_h != 1 || plan->dilation_w != 1) return "dilation is not 1";
  }
  const TfLiteTensor& k = t[plan->kernel];
  // (1, kh, kw, C), or (C, kh, kw, 1) for a grouped CONV_2D: the unit axis and the channel axis.
  const bool channels_first = plan->kernel_layout == KernelLayout::kChannelsThenTaps;
  const int unit_axis = channels_first ? 3 : 0, channel_axis = ChannelAxis(*plan);
  if (k.dims == nullptr || k.dims->size != 4 || k.dims->data[unit_axis] != 1)
    return "kernel shape " + ShapeText(k) + (channels_first ? " is not (C, kh, kw, 1)" : " is not (1, kh, kw, C)");
  if (k.dims->data[1] != plan->kernel_h || k.dims->data[2] != plan->kernel_w)
    return "kernel " + ShapeText(k) + " does not match " + std::to_string(plan->kernel_h) + "x" +
           std::to_string(plan->kernel_w);
  if (k.dims->data[channel_axis] != x.dims->data[3])
    return "kernel channels " + std::to_string(k.dims->data[channel_axis]) + " differ from input channels " +
           std::to_string(x.dims->data[3]) + (channels_first ? " (groups != channels)" : " (depth multiplier != 1)");
  if (plan->int8) return CheckInt8Weights(g, plan, x_scale);
  std::string why = ResolveWeight(g, plan->kernel, "kernel", &plan->kernel_source, &plan->dequantize_node);
  if (!why.empty()) return why;
  if (plan->bias >= 0) {
    const TfLiteTensor& b = t[plan->bias];
    why = ResolveWeight(g, plan->bias, "bias", &plan->bias_source, &plan->bias_dequantize_node);
    if (!why.empty()) return why;
    if (b.dims == nullptr || b.dims->size != 1 || b.dims->data[0] != x.dims->data[3]) return "bias shape " + ShapeText(b) + " is not (C,)";
  }
  return "";
}

// Why a node is left alone when it is no depthwise conv at all: logged only at verbose:2.
const char kNotDepthwise[] = "not a depthwise op";

// The stride, dilation, padding and fused activation of a DEPTHWISE_CONV_2D or
// CONV_2D node (Params: TfLiteDepthwiseConvParams or TfLiteConvParams, whose
// fields share their names). Returns "" when the kernels can run them (plan
// filled), else why not.
template <class Params>
std::string ReadConvParams(const void* builtin_data, const char* op, ConvPlan* plan) {
  const auto* params = static_cast<const Params*>(builtin_data);
  if (params == nullptr) return std::string("no ") + op + " parameters";
  if (params->stride_width != 1 || params->stride_height != 1) return "stride is not 1";
  if (params->dilation_width_factor < 1 || params->dilation_height_factor < 1) return "dilation is not positive";
  plan->dilation_h = params->dilation_height_factor;  // float32 refuses > 1 (CheckCommonTensors)
  plan->dilation_w = params->dilation_width_factor;
  if (params->padding == kTfLitePaddingSame) plan->padding = Padding::kSame;
  else if (params->padding == kTfLitePaddingValid) plan->padding = Padding::kValid;
  else return "padding is neither SAME nor VALID";
  if (params->activation == kTfLiteActNone) plan->activation = Activation::kNone;
  else if (params->activation == kTfLiteActRelu) plan->activation = Activation::kRelu;
  else if (params->activation == kTfLiteActRelu6) plan->activation = Activation::kRelu6;
  else if (params->activation == kTfLiteActReluN1To1) plan->activation = Activation::kReluN1To1;
  else return "fused activation " + std::to_string(int(params->activation)) + " is not supported";
  plan->op_label = op;
  return "";
}

// match -> check for one node. Returns "" when claimed (plan filled), else the reason.
std::string MatchNode(const GraphView& g, const DelegateOptions& options, int node_index, TfLiteNode* node,
                      const TfLiteRegistration* reg, ConvPlan* plan) {
  plan->node_index = node_index;
  if (reg->builtin_code == kTfLiteBuiltinCustom && reg->custom_name != nullptr &&
      (!std::strcmp(reg->custom_name, kWbmmOpName) || !std::strcmp(reg->custom_name, kWbmmDepthwiseOpName))) {
    CustomOpOptions parsed;
    const std::string why =
        ParseCustomOptions(reg->custom_name, node->custom_initial_data, node->custom_initial_data_size, &parsed);
    if (!why.empty()) return why;
    if (node->inputs->size < 2 || node->inputs->size > 3 || node->outputs->size != 1)
      return "expects inputs (x, kernel[, bias]) and one output";
    plan->op_label = parsed.is_wbmm ? kWbmmOpName : kWbmmDepthwiseOpName;
    plan->windowed = parsed.is_wbmm;
    plan->window_h = parsed.window_h;
    plan->window_w = parsed.window_w;
    plan->shortcut = parsed.shortcut;
    plan->kernel_h = parsed.kernel_h;
    plan->kernel_w = parsed.kernel_w;
    plan->padding = parsed.padding;
    plan->activation = parsed.activation;
  } else if (reg->builtin_code == kTfLiteBuiltinDepthwiseConv2d || reg->builtin_code == kTfLiteBuiltinConv2d) {
    const bool grouped = reg->builtin_code == kTfLiteBuiltinConv2d;
    if (node->inputs->size < 2 || node->outputs->size != 1) return "unexpected arity";
    const TfLiteTensor& k = g.context->tensors[node->inputs->data[1]];
    if (k.dims == nullptr || k.dims->size != 4) return "kernel shape " + ShapeText(k) + " is not 4-D";
    // A CONV_2D is depthwise when each group reads one input channel: kernel (C, kh, kw, 1).
    if (grouped && k.dims->data[3] != 1)
      return std::string(kNotDepthwise) + " (CONV_2D with " + std::to_string(k.dims->data[3]) +
             " input channels per group)";
    if (!options.claim_depthwise) return "claim_depthwise is off";
    const std::string why =
        grouped ? ReadConvParams<TfLiteConvParams>(node->builtin_data, "CONV_2D", plan)
                : ReadConvParams<TfLiteDepthwiseConvParams>(node->builtin_data, "DEPTHWISE_CONV_2D", plan);
    if (!why.empty()) return why;
    if (grouped) plan->kernel_layout = KernelLayout::kChannelsThenTaps;
    plan->kernel_h = k.dims->data[1];
    plan->kernel_w = k.dims->data[2];
    if (std::max(plan->kernel_h, plan->kernel_w) < options.min_kernel)
      return "kernel " + std::to_string(plan->kernel_h) + "x" + std::to_string(plan->kernel_w) + " is below min_kernel " +
             std::to_string(options.min_kernel);
  } else {
    return kNotDepthwise;
  }
  plan->input = node->inputs->data[0];
  plan->kernel = node->inputs->data[1];
  plan->bias = node->inputs->size > 2 ? node->inputs->data[2] : -1;
  plan->output = node->outputs->data[0];
  if (plan->input < 0 || plan->kernel < 0) return "missing input or kernel";
  return CheckCommonTensors(g, plan);
}

struct Delegate {
  TfLiteDelegate base;  // handed to TFLite; base.data_ points back here
  DelegateOptions options;
  const KernelSet* kernels = nullptr;
  const Int8KernelSet* int8_kernels = nullptr;  // the int8 compilation of the same ISA family
  std::unique_ptr<ThreadPool> pool;
  std::map<int, ConvPlan> claimed;  // node -> plan, valid while TFLite builds partitions
  std::vector<int> claimed_nodes;   // of the last Prepare, including folded DEQUANTIZE nodes
};

void Log(const Delegate& d, int level, const char* format, ...) {
  if (d.options.verbose < level) return;
  std::fprintf(stderr, "wbmm delegate: ");
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fprintf(stderr, "\n");
}

// ---------------------------------------------------------------- partitions

struct ConvOp {
  ConvPlan plan;
  DepthwiseProblem problem;  // float32
  AlignedFloats weights, bias;
  Int8Problem int8_problem;  // int8
  Int8Packed int8_packed;
};

struct Partition {
  Delegate* delegate = nullptr;
  std::vector<ConvOp> ops;                // execution order
  std::map<int, AlignedFloats> own;  // tensors internal to the partition (any element type)
  AlignedFloats scratch;             // max over ops of their scratch: ops run one after another
};

void* TensorData(TfLiteContext* context, Partition* p, int index) {
  auto it = p->own.find(index);
  if (it != p->own.end()) return it->second.data();
  return context->tensors[index].data;
}

TfLiteIntArray* NewIntArray(std::initializer_list<int> values) {
  // TfLiteIntArrayCreate is not exported by the pip runtimes; TFLite frees
  // the array it takes ownership of with free().
  auto* array = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (1 + values.size())));
  array->size = int(values.size());
  int i = 0;
  for (int v : values) array->data[i++] = v;
  return array;
}

void* PartitionInit(TfLiteContext* context, const char* buffer, size_t) {
  const auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  auto* delegate = static_cast<Delegate*>(params->delegate->data_);
  auto* partition = new Partition;
  partition->delegate = delegate;
  std::vector<int> outputs(params->output_tensors->data, params->output_tensors->data + params->output_tensors->size);
  for (int i = 0; i < params->nodes_to_replace->size; ++i) {
    auto it = delegate->claimed.find(params->nodes_to_replace->data[i]);
    if (it == delegate->claimed.end()) continue;  // a folded DEQUANTIZE
    ConvOp op;
    op.plan = it->second;
    partition->ops.push_back(op);
    // An output no one outside the partition reads is not allocated by TFLite.
    bool external = false;
    for (int o : outputs) external |= o == op.plan.output;
    if (!external) partition->own[op.plan.output];
  }
  (void)context;
  return partition;
}

void PartitionFree(TfLiteContext*, void* buffer) { delete static_cast<Partition*>(buffer); }

TfLiteStatus Fail(TfLiteContext* context, const std::string& message) {
  context->ReportError(context, "wbmm delegate: %s", message.c_str());
  return kTfLiteError;
}

// TFLite's CalculateActivationRangeQuantized (XNNPACK's delegate takes the same): the activation's real bounds
// quantized with the output's scale and zero point (float division, rounded
// half away from zero), within int8.
void Int8ActivationRange(Activation activation, float scale, int zero_point, int* lo, int* hi) {
  auto quantize = [&](float f) {
    const double q = double(zero_point) + double(std::round(f / scale));
    return int(std::min(std::max(q, -1e6), 1e6));
  };
  *lo = -128;
  *hi = 127;
  if (activation == Activation::kRelu || activation == Activation::kRelu6) *lo = std::max(-128, quantize(0.0f));
  if (activation == Activation::kRelu6) *hi = std::min(127, quantize(6.0f));
  if (activation == Activation::kReluN1To1) {
    *lo = std::max(-128, quantize(-1.0f));
    *hi = std::min(127, quantize(1.0f));
  }
}

// The map, kernel, window and padding of plan's op on input x (DepthwiseProblem
// or Int8Problem): TF's SAME/VALID rule on the dilated kernel.
template <class Problem>
void FillGeometry(const ConvPlan& plan, const TfLiteTensor& x, Problem* p) {
  p->batch = x.dims->data[0];
  p->in_h = x.dims->data[1];
  p->in_w = x.dims->data[2];
  p->channels = x.dims->data[3];
  p->kernel_h = plan.kernel_h;
  p->kernel_w = plan.kernel_w;
  // In int64, saturated into int: a huge dilation's extent overflows int; the
  // validation refuses such a problem (dilated kernels past kMaxMapSide).
  const int64_t eff_h = (int64_t(p->kernel_h) - 1) * plan.dilation_h + 1;
  const int64_t eff_w = (int64_t(p->kernel_w) - 1) * plan.dilation_w + 1;
  auto to_int = [](int64_t v) { return int(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX)); };
  if (plan.windowed) {
    p->window_h = plan.window_h;
    p->window_w = plan.window_w;
    p->out_h = p->in_h;
    p->out_w = p->in_w;
  } else if (plan.padding == Padding::kSame) {  // TF: pad_total = effective kernel - 1, the smaller half on top/left
    p->out_h = p->in_h;
    p->out_w = p->in_w;
    p->pad_top = to_int((eff_h - 1) / 2);
    p->pad_left = to_int((eff_w - 1) / 2);
  } else {
    p->out_h = to_int(p->in_h - eff_h + 1);
    p->out_w = to_int(p->in_w - eff_w + 1);
  }
}

// The most scratch one thread's copy of an op's input may take. The plain
// kernels keep a band's input rows (kernel height + band, dilated) at the
// output's full width per thread: a map 2^24 wide or a dilation of millions
// asks for gigabytes, refused here with the figure rather than allocated (or
// failing to be) at Prepare.
constexpr size_t kMaxThreadScratchBytes = size_t(1) << 30;

std::string CheckThreadScratch(size_t bytes) {
  if (bytes <= kMaxThreadScratchBytes) return "";
  return "needs " + std::to_string(bytes >> 20) + " MiB of scratch per thread (the map's width, or the dilated "
         "kernel's height, is too large for the kernels' per-thread copy; the limit is " +
         std::to_string(kMaxThreadScratchBytes >> 20) + " MiB)";
}

// Shapes, requantization and packed weights of one int8 op. Returns "" or why not.
std::string PrepareInt8(TfLiteContext* context, const Delegate& delegate, ConvOp& op, size_t* scratch_bytes) {
  const ConvPlan& plan = op.plan;
  const TfLiteTensor& x = context->tensors[plan.input];
  const TfLiteTensor& y = context->tensors[plan.output];
  const TfLiteTensor& k = context->tensors[plan.kernel_source];
  const auto* xq = static_cast<const TfLiteAffineQuantization*>(x.quantization.params);
  const auto* yq = static_cast<const TfLiteAffineQuantization*>(y.quantization.params);
  const auto* kq = static_cast<const TfLiteAffineQuantization*>(k.quantization.params);
  Int8Problem& p = op.int8_problem;
  p = Int8Problem();
  FillGeometry(plan, x, &p);
  p.dilation_h = plan.dilation_h;
  p.dilation_w = plan.dilation_w;
  p.input_zero_point = xq->zero_point->data[0];
  p.output_zero_point = yq->zero_point->data[0];
  Int8ActivationRange(plan.activation, yq->scale->data[0], p.output_zero_point, &p.out_min, &p.out_max);
  const char* invalid = ValidateInt8Problem(p);
  if (*invalid) return invalid;
  const std::string too_big = CheckThreadScratch(Int8ThreadScratchBytes(p, *delegate.int8_kernels));
  if (!too_big.empty()) return too_big;
  // XNNPACK's requantization scale, in float32 and in its order (kernels/int8_depthwise.h).
  std::vector<float> scales(size_t(p.channels));
  for (int c = 0; c < p.channels; ++c) {
    const float input_times_kernel = xq->scale->data[0] * kq->scale->data[kq->scale->size > 1 ? c : 0];
    scales[c] = input_times_kernel / yq->scale->data[0];
  }
  const int32_t* bias = plan.bias >= 0 ? static_cast<const int32_t*>(context->tensors[plan.bias_source].data) : nullptr;
  PackInt8Weights(p, *delegate.int8_kernels, static_cast<const int8_t*>(k.data), plan.kernel_layout, bias, scales.data(),
                  &op.int8_packed);
  *scratch_bytes = std::max(*scratch_bytes, Int8ScratchBytes(p, *delegate.int8_kernels, delegate.pool->num_threads()));
  return "";
}

// Resizes the output to (B, OH, OW, C) if it differs, and sizes the
// partition's own copy when the output is internal. Returns "" or why not.
std::string ShapeOutput(TfLiteContext* context, Partition* partition, int output, int batch, int h, int w, int c,
                        size_t element_bytes) {
  TfLiteTensor& out = context->tensors[output];
  const bool same_shape = out.dims != nullptr && out.dims->size == 4 && out.dims->data[0] == batch &&
                          out.dims->data[1] == h && out.dims->data[2] == w && out.dims->data[3] == c;
  if (!same_shape && context->ResizeTensor(context, &out, NewIntArray({batch, h, w, c})) != kTfLiteOk)
    return "cannot resize the output";
  auto own = partition->own.find(output);
  if (own != partition->own.end())
    own->second.assign((size_t(batch) * h * w * c * element_bytes + sizeof(float) - 1) / sizeof(float), 0.0f);
  return "";
}

TfLiteStatus PreparePartition(TfLiteContext* context, TfLiteNode* node) {
  auto* partition = static_cast<Partition*>(node->user_data);
  Delegate* delegate = partition->delegate;
  const int lanes = delegate->kernels->lanes;
  size_t scratch = 0, int8_scratch_bytes = 0;
  for (ConvOp& op : partition->ops) {
    const ConvPlan& plan = op.plan;
    if (plan.int8) {
      std::string why = PrepareInt8(context, *delegate, op, &int8_scratch_bytes);
      const Int8Problem& p = op.int8_problem;
      if (why.empty()) why = ShapeOutput(context, partition, plan.output, p.batch, p.out_h, p.out_w, p.channels, 1);
      if (!why.empty()) return Fail(context, std::string(plan.op_label) + " node " + std::to_string(plan.node_index) + ": " + why);
      continue;
    }
    DepthwiseProblem& p = op.problem;
    p = DepthwiseProblem();
    FillGeometry(plan, context->tensors[plan.input], &p);
    if (plan.activation == Activation::kRelu) p.out_min = 0.0f;
    if (plan.activation == Activation::kRelu6) {
      p.out_min = 0.0f;
      p.out_max = 6.0f;
    }
    if (plan.activation == Activation::kReluN1To1) {
      p.out_min = -1.0f;
      p.out_max = 1.0f;
    }
    std::string invalid = ValidateProblem(p);
    if (invalid.empty()) invalid = CheckThreadScratch(ThreadScratchFloats(p, lanes) * sizeof(float));
    if (!invalid.empty())
      return Fail(context, std::string(plan.op_label) + " node " + std::to_string(plan.node_index) + ": " + invalid);

    const std::string why = ShapeOutput(context, partition, plan.output, p.batch, p.out_h, p.out_w, p.channels, sizeof(float));
    if (!why.empty()) return Fail(context, why + " of node " + std::to_string(plan.node_index));

    const TfLiteTensor& k = context->tensors[plan.kernel_source];
    op.weights.assign(PackedWeightFloats(p, lanes), 0.0f);
    op.bias.assign(PackedBiasFloats(p, lanes), 0.0f);
    std::vector<float> bias_values;  // widened float16 bias (prepare may allocate)
    if (plan.bias >= 0) {
      const TfLiteTensor& b = context->tensors[plan.bias_source];
      bias_values.resize(size_t(p.channels));
      for (int c = 0; c < p.channels; ++c)
        bias_values[c] = b.type == kTfLiteFloat16 ? HalfToFloat(static_cast<const uint16_t*>(b.data)[c])
                                                  : static_cast<const float*>(b.data)[c];
    }
    const float* bias = plan.bias >= 0 ? bias_values.data() : nullptr;
    PackDepthwiseWeights(p, lanes, k.data, k.type == kTfLiteFloat16 ? WeightType::kFloat16 : WeightType::kFloat32, bias,
                         plan.windowed && plan.shortcut, op.weights.data(), op.bias.data(), plan.kernel_layout);
    scratch = std::max(scratch, ScratchFloats(p, lanes, delegate->pool->num_threads()));
  }
  partition->scratch.assign(std::max(scratch, (int8_scratch_bytes + sizeof(float) - 1) / sizeof(float)), 0.0f);
  return kTfLiteOk;
}

// An allocation that fails (packed weights, the partition's own tensors,
// scratch) is a failed Prepare with a reason: an exception must not cross
// TFLite's C interface, where it would end the process.
TfLiteStatus PartitionPrepare(TfLiteContext* context, TfLiteNode* node) {
  try {
    return PreparePartition(context, node);
  } catch (const std::bad_alloc&) {
    return Fail(context, "out of memory while preparing a partition (packed weights, internal tensors or scratch)");
  }
}

TfLiteStatus PartitionInvoke(TfLiteContext* context, TfLiteNode* node) {
  auto* partition = static_cast<Partition*>(node->user_data);
  Delegate* delegate = partition->delegate;
  for (ConvOp& op : partition->ops) {
    const void* in = TensorData(context, partition, op.plan.input);
    void* out = TensorData(context, partition, op.plan.output);
    if (in == nullptr || out == nullptr) return Fail(context, "tensor data missing at invoke");
    if (op.plan.int8)
      delegate->int8_kernels->run(op.int8_problem, static_cast<const int8_t*>(in), op.int8_packed,
                                  static_cast<int8_t*>(out), reinterpret_cast<uint8_t*>(partition->scratch.data()),
                                  delegate->pool.get());
    else
      delegate->kernels->run(op.problem, static_cast<const float*>(in), op.weights.data(), op.bias.data(),
                             static_cast<float*>(out), partition->scratch.data(), delegate->pool.get());
  }
  return kTfLiteOk;
}

const char* PartitionProfilingString(const TfLiteContext*, const TfLiteNode*) { return "WbmmDelegate"; }

// ---------------------------------------------------------------- delegate

TfLiteStatus DelegatePrepare(TfLiteContext* context, TfLiteDelegate* base) {
  auto* delegate = static_cast<Delegate*>(base->data_);
  const std::string layout = CheckRuntimeLayout(context);
  if (!layout.empty())
    return Fail(context, "refusing to attach: this TFLite runtime's C structs differ from the layout the delegate was "
                         "built for (" + layout + "); rebuild against a matching tflite_c_abi.h");

  if (!delegate->pool) {
    int threads = delegate->options.num_threads;
    if (threads < 0) threads = context->recommended_num_threads > 0 ? context->recommended_num_threads : 1;
    delegate->pool.reset(new ThreadPool(threads, delegate->options.spin_us));
  }

  TfLiteIntArray* plan = nullptr;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk) return Fail(context, "GetExecutionPlan failed");
  // Copy: later runtime calls may invalidate `plan`.
  std::vector<int> nodes(plan->data, plan->data + plan->size);
  const GraphView graph = ViewGraph(context, plan);

  delegate->claimed.clear();
  delegate->claimed_nodes.clear();
  std::vector<int> to_replace;
  for (int node_index : nodes) {
    TfLiteNode* node;
    TfLiteRegistration* reg;
    context->GetNodeAndRegistration(context, node_index, &node, &reg);
    ConvPlan conv;
    const std::string why = MatchNode(graph, delegate->options, node_index, node, reg, &conv);
    if (!why.empty()) {
      const bool ours = reg->builtin_code == kTfLiteBuiltinCustom && reg->custom_name != nullptr &&
                        (!std::strcmp(reg->custom_name, kWbmmOpName) || !std::strcmp(reg->custom_name, kWbmmDepthwiseOpName));
      if (ours) {
        // Nothing else can run our custom ops: the model will fail to prepare, and
        // this line is what tells the user why.
        context->ReportError(context, "wbmm delegate: cannot run node %d (%s): %s", node_index, reg->custom_name,
                             why.c_str());
      } else if (reg->builtin_code != kTfLiteBuiltinDequantize) {
        Log(*delegate, why.compare(0, sizeof(kNotDepthwise) - 1, kNotDepthwise) == 0 ? 2 : 1, "node %d %s: left to TFLite: %s", node_index,
            Describe(reg).c_str(), why.c_str());
      }
      continue;
    }
    Log(*delegate, 1, "node %d %s: claimed (%s%dx%d kernel%s, isa %s, %d threads)", node_index, conv.op_label,
        conv.int8 ? "int8, " : "", conv.kernel_h, conv.kernel_w,
        conv.dequantize_node >= 0 ? ", float16 weights via DEQUANTIZE" : "",
        conv.int8 ? delegate->int8_kernels->isa : delegate->kernels->isa, delegate->pool->num_threads());
    delegate->claimed[node_index] = conv;
    if (conv.dequantize_node >= 0) to_replace.push_back(conv.dequantize_node);
    if (conv.bias_dequantize_node >= 0) to_replace.push_back(conv.bias_dequantize_node);
    to_replace.push_back(node_index);
  }
  std::sort(to_replace.begin(), to_replace.end());
  delegate->claimed_nodes = to_replace;
  if (to_replace.empty()) return kTfLiteOk;

  TfLiteIntArray* replace = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (1 + to_replace.size())));
  replace->size = int(to_replace.size());
  for (size_t i = 0; i < to_replace.size(); ++i) replace->data[i] = to_replace[i];

  TfLiteRegistration kernel_registration;
  std::memset(&kernel_registration, 0, sizeof(kernel_registration));
  kernel_registration.init = &PartitionInit;
  kernel_registration.free = &PartitionFree;
  kernel_registration.prepare = &PartitionPrepare;
  kernel_registration.invoke = &PartitionInvoke;
  kernel_registration.profiling_string = &PartitionProfilingString;
  kernel_registration.builtin_code = kTfLiteBuiltinDelegate;
  kernel_registration.custom_name = "WbmmDelegate";
  kernel_registration.version = 1;
  const TfLiteStatus status =
      context->ReplaceNodeSubsetsWithDelegateKernels(context, kernel_registration, replace, base);
  std::free(replace);  // not owned by the runtime
  return status;
}

}  // namespace
}  // namespace wbmm

WBMM_EXPORT TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t count,
                                                          void (*report_error)(const char*)) {
  auto delegate = std::make_unique<wbmm::Delegate>();
  std::string why = wbmm::ParseOptions(keys, values, count, &delegate->options);
  if (why.empty()) {
    delegate->kernels = wbmm::FindKernelSet(delegate->options.isa.c_str());
    delegate->int8_kernels = wbmm::FindInt8KernelSet(delegate->options.isa.c_str());
    if (delegate->kernels == nullptr || delegate->int8_kernels == nullptr)
      why = "no kernel set for isa " + delegate->options.isa;
  }
  if (!why.empty()) {
    const std::string message = "wbmm delegate: " + why;
    if (report_error != nullptr) report_error(message.c_str());
    else std::fprintf(stderr, "%s\n", message.c_str());
    return nullptr;
  }
  std::memset(&delegate->base, 0, sizeof(delegate->base));
  delegate->base.data_ = delegate.get();
  delegate->base.Prepare = &wbmm::DelegatePrepare;
  delegate->base.flags = kTfLiteDelegateFlagsAllowDynamicTensors;
  return &delegate.release()->base;
}

WBMM_EXPORT void tflite_plugin_destroy_delegate(TfLiteDelegate* base) {
  if (base != nullptr) delete static_cast<wbmm::Delegate*>(base->data_);
}

// Extras for the Python loader and tools (not part of TFLite's ABI).
WBMM_EXPORT const char* wbmm_delegate_options_help(void) { return wbmm::OptionsHelp().c_str(); }
WBMM_EXPORT const char* wbmm_delegate_available_isas(void) { return wbmm::AvailableIsas(); }

// Which nodes the last Prepare claimed, for tests and reports: the interpreter's
// own node list cannot tell our DELEGATE nodes from XNNPACK's.
WBMM_EXPORT int wbmm_delegate_claimed_count(const TfLiteDelegate* base) {
  return base == nullptr ? -1 : int(static_cast<const wbmm::Delegate*>(base->data_)->claimed_nodes.size());
}
WBMM_EXPORT int wbmm_delegate_claimed_node(const TfLiteDelegate* base, int i) {
  if (base == nullptr) return -1;
  const auto& nodes = static_cast<const wbmm::Delegate*>(base->data_)->claimed_nodes;
  return i >= 0 && size_t(i) < nodes.size() ? nodes[size_t(i)] : -1;
}
WBMM_EXPORT const char* wbmm_delegate_isa(const TfLiteDelegate* base) {
  return base == nullptr ? "" : static_cast<const wbmm::Delegate*>(base->data_)->kernels->isa;
}
WBMM_EXPORT const char* wbmm_delegate_int8_isa(const TfLiteDelegate* base) {
  return base == nullptr ? "" : static_cast<const wbmm::Delegate*>(base->data_)->int8_kernels->isa;
}
WBMM_EXPORT int wbmm_delegate_num_threads(const TfLiteDelegate* base) {
  const auto* d = base == nullptr ? nullptr : static_cast<const wbmm::Delegate*>(base->data_);
  return d == nullptr || !d->pool ? 0 : d->pool->num_threads();
}
