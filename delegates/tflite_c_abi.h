// The part of TensorFlow Lite's C ABI the WBMM delegate uses, declared here.
//
// Why declare it ourselves: no TFLite header ships in any wheel (tensorflow,
// ai-edge-litert, tflite-runtime), and the delegate must build with nothing but
// a compiler. The declarations restate the published C API
// (tensorflow/lite/core/c/common.h, c_api_types.h, builtin_op_data.h and the
// BuiltinOperator enum of schema.fbs) for the LP64 targets we ship (x86-64
// Linux, arm64 Linux/Android). Only fields we touch are named precisely; the
// rest keep their slot so offsets match.
//
// Compile-time: static_asserts pin every struct size we depend on.
// Run time: abi_check.cc inspects live runtime structures before attaching and
// refuses, with a message, when they do not look like this layout.
//
// Not for: the opaque/stable C API (TfLiteOpaqueContext); we use the classic
// struct API because that is what `tflite_plugin_create_delegate` hands over.

#ifndef WBMM_DELEGATES_TFLITE_C_ABI_H_
#define WBMM_DELEGATES_TFLITE_C_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum TfLiteStatus {
  kTfLiteOk = 0,
  kTfLiteError = 1,
  kTfLiteDelegateError = 2,
  kTfLiteApplicationError = 3,
} TfLiteStatus;

// Element types (values of TfLiteType); we read float32, float16, int8 and int32 (int8 bias).
typedef enum TfLiteType {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteString = 5,
  kTfLiteBool = 6,
  kTfLiteInt16 = 7,
  kTfLiteComplex64 = 8,
  kTfLiteInt8 = 9,
  kTfLiteFloat16 = 10,
} TfLiteType;

// Highest TfLiteType value the layout check accepts as plausible.
enum { kWbmmMaxPlausibleTfLiteType = 32 };

// Size-prefixed int array. TFLite frees arrays handed to ResizeTensor with
// free(), and TfLiteIntArrayCreate is not exported by the pip runtimes, so we
// allocate them with malloc (see delegate.cc).
typedef struct TfLiteIntArray {
  int size;
  int data[];
} TfLiteIntArray;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

typedef struct TfLiteQuantization {
  int type;       // TfLiteQuantizationType
  void* params;   // TfLiteAffineQuantization* when type == kTfLiteAffineQuantization
} TfLiteQuantization;

enum { kTfLiteNoQuantization = 0, kTfLiteAffineQuantization = 1 };

typedef struct TfLiteFloatArray {
  int size;
  float data[];
} TfLiteFloatArray;

// Per-tensor (one scale) or per-axis (one scale per index of quantized_dimension).
typedef struct TfLiteAffineQuantization {
  TfLiteFloatArray* scale;
  TfLiteIntArray* zero_point;
  int32_t quantized_dimension;
} TfLiteAffineQuantization;

typedef enum TfLiteAllocationType {
  kTfLiteMemNone = 0,
  kTfLiteMmapRo = 1,           // constant buffer of the model file
  kTfLiteArenaRw = 2,
  kTfLiteArenaRwPersistent = 3,
  kTfLiteDynamic = 4,
  kTfLitePersistentRo = 5,     // computed at prepare time, constant afterwards
  kTfLiteCustom = 6,
  kTfLiteVariantObject = 7,
  kTfLiteNonCpu = 8,
} TfLiteAllocationType;

struct TfLiteDelegate;
struct TfLiteContext;
struct TfLiteRegistration;

typedef struct TfLiteTensor {
  TfLiteType type;
  void* data;                            // TfLitePtrUnion: one pointer
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  TfLiteAllocationType allocation_type;
  size_t bytes;                          // element size * product(dims)
  const void* allocation;
  const char* name;
  struct TfLiteDelegate* delegate;
  int buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  void* sparsity;
  const TfLiteIntArray* dims_signature;
} TfLiteTensor;

typedef struct TfLiteNode {
  TfLiteIntArray* inputs;                // tensor indices, -1 = optional input absent
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  TfLiteIntArray* temporaries;
  void* user_data;                       // what registration.init returned
  void* builtin_data;                    // e.g. TfLiteDepthwiseConvParams*
  const void* custom_initial_data;       // custom_options bytes of a custom op
  int custom_initial_data_size;
  struct TfLiteDelegate* delegate;
  bool might_have_side_effect;
} TfLiteNode;

typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext* context, TfLiteIntArray** execution_plan);
  TfLiteTensor* tensors;
  void* impl_;
  // Takes ownership of new_size (freed with free()).
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext*, TfLiteTensor* tensor, TfLiteIntArray* new_size);
  void (*ReportError)(struct TfLiteContext*, const char* msg, ...);
  TfLiteStatus (*AddTensors)(struct TfLiteContext*, int tensors_to_add, int* first_new_tensor_index);
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext*, int node_index, TfLiteNode** node,
                                         struct TfLiteRegistration** registration);
  // TfLiteRegistration is passed BY VALUE here: its size must match the runtime's.
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(struct TfLiteContext*,
                                                        struct TfLiteRegistration registration,
                                                        const TfLiteIntArray* nodes_to_replace,
                                                        struct TfLiteDelegate* delegate);
  int recommended_num_threads;
  void* GetExternalContext;
  void* SetExternalContext;
  bool allow_fp32_relax_to_fp16;
  void* profiler;
  void* AllocatePersistentBuffer;
  void* AllocateBufferForEval;
  void* RequestScratchBufferInArena;
  void* GetScratchBuffer;
  void* ResizeTensorExplicit;            // NULL in the non-micro runtime: never used
  void* PreviewDelegatePartitioning;
  void* GetTensor;
  void* GetEvalTensor;
  void* GetModelMetadata;
  void* AcquireSubgraphContext;
  void* ReleaseSubgraphContext;
} TfLiteContext;

typedef struct TfLiteRegistration {
  void* (*init)(TfLiteContext* context, const char* buffer, size_t length);
  void (*free)(TfLiteContext* context, void* buffer);
  TfLiteStatus (*prepare)(TfLiteContext* context, TfLiteNode* node);
  TfLiteStatus (*invoke)(TfLiteContext* context, TfLiteNode* node);
  const char* (*profiling_string)(const TfLiteContext* context, const TfLiteNode* node);
  int32_t builtin_code;                  // BuiltinOperator value
  const char* custom_name;               // set when builtin_code == kTfLiteBuiltinCustom
  int version;
  void* registration_external;           // TfLiteOperator*
  void* async_kernel;
  uint64_t inplace_operator;             // bit mask of TfLiteInPlaceOp, values < 32
} TfLiteRegistration;

// What a delegate kernel's init receives as `buffer` (one per partition).
typedef struct TfLiteDelegateParams {
  struct TfLiteDelegate* delegate;
  TfLiteIntArray* nodes_to_replace;
  TfLiteIntArray* input_tensors;
  TfLiteIntArray* output_tensors;
} TfLiteDelegateParams;

enum {
  kTfLiteDelegateFlagsNone = 0,
  // Needed so that a model whose custom ops have no registration loads once we
  // claim them (verified on ai-edge-litert 2.3, see docs/WBMM.md).
  kTfLiteDelegateFlagsAllowDynamicTensors = 1,
};

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext* context, struct TfLiteDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;         // must stay NULL: we use Prepare
} TfLiteDelegate;

// builtin_op_data.h
typedef enum TfLitePadding {
  kTfLitePaddingUnknown = 0,
  kTfLitePaddingSame = 1,
  kTfLitePaddingValid = 2,
} TfLitePadding;

typedef enum TfLiteFusedActivation {
  kTfLiteActNone = 0,
  kTfLiteActRelu = 1,
  kTfLiteActReluN1To1 = 2,
  kTfLiteActRelu6 = 3,
} TfLiteFusedActivation;

typedef struct TfLiteDepthwiseConvParams {
  TfLitePadding padding;
  int stride_width;
  int stride_height;
  int depth_multiplier;
  TfLiteFusedActivation activation;
  int dilation_width_factor;
  int dilation_height_factor;
} TfLiteDepthwiseConvParams;

// The leading fields of TfLiteConvParams, all the delegate reads. Newer
// runtimes append fields (quantized_bias_type); these keep their offsets.
typedef struct TfLiteConvParams {
  TfLitePadding padding;
  int stride_width;
  int stride_height;
  TfLiteFusedActivation activation;
  int dilation_width_factor;
  int dilation_height_factor;
} TfLiteConvParams;

// BuiltinOperator values (schema.fbs) of the ops we look at.
enum {
  kTfLiteBuiltinConv2d = 3,
  kTfLiteBuiltinDepthwiseConv2d = 4,
  kTfLiteBuiltinDequantize = 6,
  kTfLiteBuiltinCustom = 32,
};

// Highest BuiltinOperator value the layout check accepts as plausible (the
// schema has ~210 today; headroom for newer runtimes).
enum { kWbmmMaxPlausibleBuiltinCode = 1024 };

#ifdef __cplusplus
}  // extern "C"
#endif

// Sizes of the published layout on LP64. A mismatch here means this header was
// edited wrongly; a mismatch with the runtime is caught by abi_check.cc.
#if defined(__cplusplus) && (defined(__LP64__) || defined(_LP64))
static_assert(sizeof(TfLiteTensor) == 112, "TfLiteTensor must be 112 bytes on LP64");
static_assert(sizeof(TfLiteNode) == 80, "TfLiteNode must be 80 bytes on LP64");
static_assert(sizeof(TfLiteRegistration) == 88, "TfLiteRegistration must be 88 bytes (LiteRT 2.3)");
static_assert(sizeof(TfLiteDelegate) == 56, "TfLiteDelegate must be 56 bytes on LP64");
static_assert(sizeof(TfLiteContext) == 200, "TfLiteContext must be 200 bytes on LP64");
static_assert(sizeof(TfLiteDelegateParams) == 32, "TfLiteDelegateParams must be 32 bytes");
static_assert(sizeof(TfLiteDepthwiseConvParams) == 28, "TfLiteDepthwiseConvParams must be 28 bytes");
static_assert(offsetof(TfLiteConvParams, dilation_height_factor) == 20, "TfLiteConvParams leading fields");
static_assert(offsetof(TfLiteTensor, bytes) == 40, "TfLiteTensor::bytes offset");
static_assert(offsetof(TfLiteTensor, dims) == 16, "TfLiteTensor::dims offset");
static_assert(offsetof(TfLiteRegistration, builtin_code) == 40, "TfLiteRegistration::builtin_code offset");
static_assert(offsetof(TfLiteRegistration, inplace_operator) == 80, "TfLiteRegistration::inplace_operator offset");
static_assert(offsetof(TfLiteContext, recommended_num_threads) == 72, "TfLiteContext::recommended_num_threads offset");
static_assert(offsetof(TfLiteDelegate, flags) == 40, "TfLiteDelegate::flags offset");
#elif defined(__cplusplus)
#error "wbmm delegate: only LP64 targets (x86-64, arm64) are supported"
#endif

#endif  // WBMM_DELEGATES_TFLITE_C_ABI_H_
