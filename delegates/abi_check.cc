// See abi_check.h.
//
// Evidence used, per struct:
//  * TfLiteContext: the four callbacks we call are non-NULL, tensors_size and
//    recommended_num_threads are in sane ranges (a shifted struct puts
//    pointers there).
//  * TfLiteNode: inputs/outputs arrays exist, have small sizes and hold
//    indices in [-1, tensors_size).
//  * TfLiteRegistration: builtin_code and version are small, custom ops carry
//    a name, and inplace_operator (the last field, bytes 80..87) is a small
//    bit mask. The runtime keeps nodes and registrations side by side in one
//    array, so if its registration were shorter than our 88 bytes, bytes
//    80..87 would be the next node's `inputs` pointer and fail this test.
//  * TfLiteTensor: for tensors of the nodes, type and allocation_type are
//    known enum values, dims has a small rank and non-negative extents, and
//    for float32/float16/int32 tensors `bytes` equals the element size times
//    the element count (type, dims and bytes sit at offsets 0, 16 and 40).

#include "abi_check.h"

#include <cstdint>

namespace wbmm {
namespace {

constexpr int kMaxRank = 16;
constexpr int kMaxNodeArity = 1 << 16;
constexpr uint64_t kMaxInplaceMask = 63;  // the published flags go up to 16

size_t ElementSize(int type) {
  switch (type) {
    case kTfLiteFloat32: case kTfLiteInt32: return 4;
    case kTfLiteFloat16: case kTfLiteInt16: return 2;
    case kTfLiteInt8: case kTfLiteUInt8: case kTfLiteBool: return 1;
    case kTfLiteInt64: return 8;
    default: return 0;  // not checked
  }
}

std::string CheckTensor(const TfLiteContext* context, int index) {
  const TfLiteTensor& t = context->tensors[index];
  const std::string where = "tensor " + std::to_string(index);
  if (int(t.type) < 0 || int(t.type) > kWbmmMaxPlausibleTfLiteType)
    return where + " has type code " + std::to_string(int(t.type));
  if (int(t.allocation_type) < 0 || int(t.allocation_type) > kTfLiteNonCpu)
    return where + " has allocation type " + std::to_string(int(t.allocation_type));
  if (t.dims == nullptr) return "";  // shape not known yet: nothing to compare
  if (t.dims->size < 0 || t.dims->size > kMaxRank) return where + " has rank " + std::to_string(t.dims->size);
  size_t elements = 1;
  for (int d = 0; d < t.dims->size; ++d) {
    if (t.dims->data[d] < 0) return where + " has a negative extent";
    elements *= size_t(t.dims->data[d]);
  }
  const size_t element_size = ElementSize(t.type);
  const bool sized = t.type == kTfLiteFloat32 || t.type == kTfLiteFloat16 || t.type == kTfLiteInt32;
  if (sized && t.data != nullptr && t.bytes != elements * element_size)
    return where + " reports " + std::to_string(t.bytes) + " bytes for " + std::to_string(elements) +
           " elements of " + std::to_string(element_size) + " bytes";
  return "";
}

std::string CheckIndexArray(const TfLiteContext* context, const TfLiteIntArray* array, const std::string& what,
                            bool check_tensors) {
  if (array == nullptr) return what + " is NULL";
  if (array->size < 0 || array->size > kMaxNodeArity) return what + " has size " + std::to_string(array->size);
  for (int i = 0; i < array->size; ++i) {
    const int index = array->data[i];
    if (index < -1 || index >= int(context->tensors_size))
      return what + " names tensor " + std::to_string(index) + " of " + std::to_string(context->tensors_size);
    if (check_tensors && index >= 0) {
      const std::string why = CheckTensor(context, index);
      if (!why.empty()) return why;
    }
  }
  return "";
}

}  // namespace

std::string CheckRuntimeLayout(TfLiteContext* context) {
  if (context == nullptr) return "no context";
  if (context->GetExecutionPlan == nullptr || context->GetNodeAndRegistration == nullptr ||
      context->ReplaceNodeSubsetsWithDelegateKernels == nullptr || context->ResizeTensor == nullptr)
    return "TfLiteContext callbacks are missing where this layout expects them";
  if (context->tensors_size > (size_t(1) << 26) || (context->tensors_size > 0 && context->tensors == nullptr))
    return "TfLiteContext::tensors_size is " + std::to_string(context->tensors_size);
  if (context->recommended_num_threads < -1 || context->recommended_num_threads > 4096)
    return "TfLiteContext::recommended_num_threads is " + std::to_string(context->recommended_num_threads);

  TfLiteIntArray* plan = nullptr;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk || plan == nullptr) return "GetExecutionPlan failed";
  if (plan->size < 0 || plan->size > (1 << 24)) return "execution plan has size " + std::to_string(plan->size);
  for (int i = 0; i < plan->size; ++i) {
    const int node_index = plan->data[i];
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, node_index, &node, &reg) != kTfLiteOk || node == nullptr ||
        reg == nullptr)
      return "GetNodeAndRegistration failed for node " + std::to_string(node_index);
    const std::string where = "node " + std::to_string(node_index);
    if (reg->builtin_code < 0 || reg->builtin_code > kWbmmMaxPlausibleBuiltinCode)
      return where + ": TfLiteRegistration::builtin_code is " + std::to_string(reg->builtin_code);
    if (reg->version < 0 || reg->version > 1000)
      return where + ": TfLiteRegistration::version is " + std::to_string(reg->version);
    if (reg->builtin_code == kTfLiteBuiltinCustom && reg->custom_name == nullptr)
      return where + ": custom op without TfLiteRegistration::custom_name";
    if (reg->inplace_operator > kMaxInplaceMask)
      return where + ": TfLiteRegistration::inplace_operator is not a flag mask (registration size differs "
                     "from 88 bytes?)";
    std::string why = CheckIndexArray(context, node->inputs, where + " inputs", true);
    if (why.empty()) why = CheckIndexArray(context, node->outputs, where + " outputs", true);
    if (!why.empty()) return why;
  }
  return "";
}

}  // namespace wbmm
