// The runtime layout check (abi_check.cc) on a hand-built interpreter state:
// it accepts a context laid out like tflite_c_abi.h and refuses, naming the
// field, the states a runtime with a different layout would present to us.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "abi_check.h"
#include "test_main.h"

namespace {

TfLiteIntArray* IntArray(std::vector<int> values) {
  auto* a = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (1 + values.size())));
  a->size = int(values.size());
  for (size_t i = 0; i < values.size(); ++i) a->data[i] = values[i];
  return a;
}

// One DEPTHWISE_CONV_2D node over three tensors, as the runtime stores it:
// nodes and registrations side by side.
struct FakeRuntime {
  TfLiteContext context{};
  TfLiteTensor tensors[3]{};
  std::vector<float> storage[3];
  struct NodeAndRegistration {
    TfLiteNode node;
    TfLiteRegistration registration;
  } nodes[2]{};
  TfLiteIntArray* plan = IntArray({0, 1});
  std::vector<TfLiteIntArray*> arrays;

  FakeRuntime() {
    const std::vector<int> shapes[3] = {{1, 8, 8, 4}, {1, 7, 7, 4}, {1, 8, 8, 4}};
    for (int i = 0; i < 3; ++i) {
      TfLiteTensor& t = tensors[i];
      t.type = kTfLiteFloat32;
      t.dims = Keep(IntArray(shapes[i]));
      size_t n = 1;
      for (int d : shapes[i]) n *= size_t(d);
      storage[i].resize(n);
      t.data = storage[i].data();
      t.bytes = n * sizeof(float);
      t.allocation_type = i == 1 ? kTfLiteMmapRo : kTfLiteArenaRw;
    }
    for (auto& nr : nodes) {
      nr.node.inputs = Keep(IntArray({0, 1}));
      nr.node.outputs = Keep(IntArray({2}));
      nr.registration.builtin_code = kTfLiteBuiltinDepthwiseConv2d;
      nr.registration.version = 2;
    }
    context.tensors_size = 3;
    context.tensors = tensors;
    context.impl_ = this;
    context.recommended_num_threads = 2;
    context.GetExecutionPlan = [](TfLiteContext* c, TfLiteIntArray** plan) {
      *plan = static_cast<FakeRuntime*>(c->impl_)->plan;
      return kTfLiteOk;
    };
    context.GetNodeAndRegistration = [](TfLiteContext* c, int index, TfLiteNode** node, TfLiteRegistration** reg) {
      auto* self = static_cast<FakeRuntime*>(c->impl_);
      if (index < 0 || index > 1) return kTfLiteError;
      *node = &self->nodes[index].node;
      *reg = &self->nodes[index].registration;
      return kTfLiteOk;
    };
    context.ReplaceNodeSubsetsWithDelegateKernels = [](TfLiteContext*, TfLiteRegistration, const TfLiteIntArray*,
                                                       TfLiteDelegate*) { return kTfLiteOk; };
    context.ResizeTensor = [](TfLiteContext*, TfLiteTensor*, TfLiteIntArray* a) {
      std::free(a);
      return kTfLiteOk;
    };
  }
  ~FakeRuntime() {
    for (auto* a : arrays) std::free(a);
    std::free(plan);
  }
  TfLiteIntArray* Keep(TfLiteIntArray* a) {
    arrays.push_back(a);
    return a;
  }
};

bool Mentions(const std::string& why, const char* what) { return why.find(what) != std::string::npos; }

}  // namespace

WBMM_TEST(LayoutCheckAcceptsMatchingRuntime) {
  FakeRuntime rt;
  const std::string why = wbmm::CheckRuntimeLayout(&rt.context);
  CHECK_MSG(why.empty(), "%s", why.c_str());
}

WBMM_TEST(LayoutCheckRefusesShorterRegistration) {
  // A runtime whose TfLiteRegistration ends before inplace_operator: our
  // bytes 80..87 are then the next node's `inputs` pointer.
  FakeRuntime rt;
  std::memcpy(&rt.nodes[0].registration.inplace_operator, &rt.nodes[1].node.inputs, sizeof(void*));
  const std::string why = wbmm::CheckRuntimeLayout(&rt.context);
  CHECK_MSG(Mentions(why, "inplace_operator"), "%s", why.c_str());
}

WBMM_TEST(LayoutCheckRefusesShiftedTensorFields) {
  // A field inserted before `bytes` in TfLiteTensor: we would read the wrong word.
  FakeRuntime rt;
  rt.tensors[2].bytes = reinterpret_cast<size_t>(rt.tensors[2].name ? rt.tensors[2].name : "shifted");
  const std::string why = wbmm::CheckRuntimeLayout(&rt.context);
  CHECK_MSG(Mentions(why, "bytes"), "%s", why.c_str());
}

WBMM_TEST(LayoutCheckRefusesImplausibleRegistrationAndContext) {
  {
    FakeRuntime rt;
    rt.nodes[1].registration.builtin_code = 123456;
    CHECK(Mentions(wbmm::CheckRuntimeLayout(&rt.context), "builtin_code"));
  }
  {
    FakeRuntime rt;
    rt.nodes[0].registration.builtin_code = kTfLiteBuiltinCustom;  // custom op without a name
    CHECK(Mentions(wbmm::CheckRuntimeLayout(&rt.context), "custom_name"));
  }
  {
    FakeRuntime rt;
    rt.context.recommended_num_threads = 0x7fff0000;
    CHECK(Mentions(wbmm::CheckRuntimeLayout(&rt.context), "recommended_num_threads"));
  }
  {
    FakeRuntime rt;
    rt.context.ReplaceNodeSubsetsWithDelegateKernels = nullptr;
    CHECK(Mentions(wbmm::CheckRuntimeLayout(&rt.context), "callbacks"));
  }
  {
    FakeRuntime rt;
    rt.nodes[0].node.inputs->data[1] = 99;  // index past tensors_size
    CHECK(Mentions(wbmm::CheckRuntimeLayout(&rt.context), "names tensor 99"));
  }
  {
    FakeRuntime rt;
    rt.tensors[0].dims->size = 1000;
    CHECK(Mentions(wbmm::CheckRuntimeLayout(&rt.context), "rank"));
  }
}
