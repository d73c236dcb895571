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
// ConvNeXt); float32 activations,
// float32 or float16 kernels, including a DEQUANTIZE (fp16 -> fp32) that feeds
// only the kernel input of a claimed node (the DEQUANTIZE is claimed too and
// folded into weight packing).
//
// Not for: quantised models, strided/dilated depthwise, dynamic kernels.

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "abi_check.h"
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
  bool windowed = false;
  int window_h = 0, window_w = 0;
  bool shortcut = false;
  int kernel_h = 0, kernel_w = 0;
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

std::string CheckCommonTensors(const GraphView& g, ConvPlan* plan) {
  const TfLiteTensor* t = g.context->tensors;
  const TfLiteTensor& x = t[plan->input];
  if (x.type != kTfLiteFloat32) return "input is not float32";
  if (x.dims == nullptr || x.dims->size != 4) return "input " + ShapeText(x) + " is not NHWC";
  if (t[plan->output].type != kTfLiteFloat32) return "output is not float32";
  const TfLiteTensor& k = t[plan->kernel];
  // (1, kh, kw, C), or (C, kh, kw, 1) for a grouped CONV_2D: the unit axis and the channel axis.
  const bool channels_first = plan->kernel_layout == KernelLayout::kChannelsThenTaps;
  const int unit_axis = channels_first ? 3 : 0, channel_axis = channels_first ? 0 : 3;
  if (k.dims == nullptr || k.dims->size != 4 || k.dims->data[unit_axis] != 1)
    return "kernel shape " + ShapeText(k) + (channels_first ? " is not (C, kh, kw, 1)" : " is not (1, kh, kw, C)");
  std::string why = ResolveWeight(g, plan->kernel, "kernel", &plan->kernel_source, &plan->dequantize_node);
  if (!why.empty()) return why;
  if (k.dims->data[1] != plan->kernel_h || k.dims->data[2] != plan->kernel_w)
    return "kernel " + ShapeText(k) + " does not match " + std::to_string(plan->kernel_h) + "x" +
           std::to_string(plan->kernel_w);
  if (k.dims->data[channel_axis] != x.dims->data[3])
    return "kernel channels " + std::to_string(k.dims->data[channel_axis]) + " differ from input channels " +
           std::to_string(x.dims->data[3]) + (channels_first ? " (groups != channels)" : " (depth multiplier != 1)");
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
  if (params->dilation_width_factor != 1 || params->dilation_height_factor != 1) return "dilation is not 1";
  if (params->padding == kTfLitePaddingSame) plan->padding = Padding::kSame;
  else if (params->padding == kTfLitePaddingValid) plan->padding = Padding::kValid;
  else return "padding is neither SAME nor VALID";
  if (params->activation == kTfLiteActNone) plan->activation = Activation::kNone;
  else if (params->activation == kTfLiteActRelu) plan->activation = Activation::kRelu;
  else if (params->activation == kTfLiteActRelu6) plan->activation = Activation::kRelu6;
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
  DepthwiseProblem problem;
  AlignedFloats weights, bias;
};

struct Partition {
  Delegate* delegate = nullptr;
  std::vector<ConvOp> ops;                // execution order
  std::map<int, AlignedFloats> own;  // tensors internal to the partition
  AlignedFloats scratch;             // max over ops of ScratchFloats: ops run one after another
};

float* TensorData(TfLiteContext* context, Partition* p, int index) {
  auto it = p->own.find(index);
  if (it != p->own.end()) return it->second.data();
  return static_cast<float*>(context->tensors[index].data);
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

TfLiteStatus PartitionPrepare(TfLiteContext* context, TfLiteNode* node) {
  auto* partition = static_cast<Partition*>(node->user_data);
  Delegate* delegate = partition->delegate;
  const int lanes = delegate->kernels->lanes;
  size_t scratch = 0;
  for (ConvOp& op : partition->ops) {
    const ConvPlan& plan = op.plan;
    const TfLiteTensor& x = context->tensors[plan.input];
    DepthwiseProblem& p = op.problem;
    p = DepthwiseProblem();
    p.batch = x.dims->data[0];
    p.in_h = x.dims->data[1];
    p.in_w = x.dims->data[2];
    p.channels = x.dims->data[3];
    p.kernel_h = plan.kernel_h;
    p.kernel_w = plan.kernel_w;
    if (plan.windowed) {
      p.window_h = plan.window_h;
      p.window_w = plan.window_w;
      p.out_h = p.in_h;
      p.out_w = p.in_w;
    } else if (plan.padding == Padding::kSame) {  // TF: pad_total = k - 1, the smaller half on top/left
      p.out_h = p.in_h;
      p.out_w = p.in_w;
      p.pad_top = (p.kernel_h - 1) / 2;
      p.pad_left = (p.kernel_w - 1) / 2;
    } else {
      p.out_h = p.in_h - p.kernel_h + 1;
      p.out_w = p.in_w - p.kernel_w + 1;
    }
    if (plan.activation == Activation::kRelu) p.out_min = 0.0f;
    if (plan.activation == Activation::kRelu6) {
      p.out_min = 0.0f;
      p.out_max = 6.0f;
    }
    const char* invalid = ValidateProblem(p);
    if (*invalid) return Fail(context, std::string(plan.op_label) + " node " + std::to_string(plan.node_index) + ": " + invalid);

    TfLiteTensor& out = context->tensors[plan.output];
    const bool same_shape = out.dims != nullptr && out.dims->size == 4 && out.dims->data[0] == p.batch &&
                            out.dims->data[1] == p.out_h && out.dims->data[2] == p.out_w &&
                            out.dims->data[3] == p.channels;
    if (!same_shape &&
        context->ResizeTensor(context, &out, NewIntArray({p.batch, p.out_h, p.out_w, p.channels})) != kTfLiteOk)
      return Fail(context, "cannot resize the output of node " + std::to_string(plan.node_index));
    auto own = partition->own.find(plan.output);
    if (own != partition->own.end()) own->second.assign(size_t(p.batch) * p.out_h * p.out_w * p.channels, 0.0f);

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
  partition->scratch.assign(scratch, 0.0f);
  return kTfLiteOk;
}

TfLiteStatus PartitionInvoke(TfLiteContext* context, TfLiteNode* node) {
  auto* partition = static_cast<Partition*>(node->user_data);
  Delegate* delegate = partition->delegate;
  for (ConvOp& op : partition->ops) {
    const float* in = TensorData(context, partition, op.plan.input);
    float* out = TensorData(context, partition, op.plan.output);
    if (in == nullptr || out == nullptr) return Fail(context, "tensor data missing at invoke");
    delegate->kernels->run(op.problem, in, op.weights.data(), op.bias.data(), out, partition->scratch.data(),
                           delegate->pool.get());
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
    Log(*delegate, 1, "node %d %s: claimed (%dx%d kernel%s, isa %s, %d threads)", node_index, conv.op_label,
        conv.kernel_h, conv.kernel_w, conv.dequantize_node >= 0 ? ", float16 weights via DEQUANTIZE" : "",
        delegate->kernels->isa, delegate->pool->num_threads());
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
    if (delegate->kernels == nullptr) why = "no kernel set for isa " + delegate->options.isa;
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
WBMM_EXPORT int wbmm_delegate_num_threads(const TfLiteDelegate* base) {
  const auto* d = base == nullptr ? nullptr : static_cast<const wbmm::Delegate*>(base->data_);
  return d == nullptr || !d->pool ? 0 : d->pool->num_threads();
}
