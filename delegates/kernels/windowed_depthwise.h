// Depthwise cross-correlation kernels on NHWC float32, in two modes that share
// one inner loop:
//
//  * windowed (the WBMM operator): the map is cut into window_h x window_w
//    windows anchored at (0, 0); inside each window a (2wh-1) x (2ww-1) kernel
//    (the table R read as a kernel, docs/WBMM.md) is applied 'same' with zero
//    padding at the window border; pixels past the map (bottom/right padding
//    to a multiple of the window) are zeros and their outputs are cropped.
//    Per window and channel this is Y_c = X_c @ R_c[I]: every output pixel
//    takes exactly d = wh*ww taps, the FMA count of the dense-M form.
//  * plain: an exact stride-1, dilation-1 depthwise conv with explicit
//    top/left padding (SAME or VALID decided by the caller).
//
// Weights are packed once (PackDepthwiseWeights) into channel blocks of the
// ISA's lane count: [block][kh][kw][lanes], tail channels zero-filled, float16
// widened, the WBMM identity shortcut folded into the centre tap. `run` never
// allocates: its scratch comes from the caller (ScratchFloats).
//
// Not for: strided or dilated convs, depth multiplier != 1, quantised types.

#ifndef WBMM_DELEGATES_KERNELS_WINDOWED_DEPTHWISE_H_
#define WBMM_DELEGATES_KERNELS_WINDOWED_DEPTHWISE_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace wbmm {

// Packed weights, scratch and partition-internal tensors should start on a
// cache line: std::vector's 16-byte alignment makes every other 32-byte AVX2
// weight load split two lines, and the windowed kernel is one weight load per
// FMA (measured: w=7 at 56x56x96, 0.65 ms -> 0.48 ms best with this alone).
constexpr size_t kBufferAlignment = 64;

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  // posix_memalign rather than aligned operator new: Android's libc before
  // API 28 has no aligned_alloc, and this must build for API 26.
  T* allocate(size_t n) {
    void* p = nullptr;
    if (posix_memalign(&p, kBufferAlignment, n * sizeof(T) > 0 ? n * sizeof(T) : 1) != 0) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};
using AlignedFloats = std::vector<float, CacheLineAllocator<float>>;

class ThreadPool;

// Plain mode works on bands of this many output rows (one strip copy each).
constexpr int kPlainBandRows = 8;

struct DepthwiseProblem {
  int batch = 1, in_h = 0, in_w = 0, channels = 0;
  int out_h = 0, out_w = 0;
  int kernel_h = 0, kernel_w = 0;
  // Plain mode: output (oy, ox) reads input (oy - pad_top + i, ox - pad_left + j).
  int pad_top = 0, pad_left = 0;
  // Windowed mode when window_h > 0 (then kernel = (2wh-1, 2ww-1), out = in).
  int window_h = 0, window_w = 0;
  // Fused activation as a clamp.
  float out_min = -INFINITY, out_max = INFINITY;

  bool windowed() const { return window_h > 0; }
};

// The longest map side (input or output, height or width) either kernel family
// takes: the kernels index rows and columns with int, a column times the
// lanes (<= 16) plus a kernel's width included, so a side must stay far below
// INT_MAX / 16. Larger maps are refused at Prepare (ValidateProblem says why).
constexpr int kMaxMapSide = 1 << 24;

// Returns "" if the problem is well-formed, else why not.
const char* ValidateProblem(const DepthwiseProblem& p);

enum class WeightType { kFloat32, kFloat16 };
// How the kernel's numbers are laid out: (1, kh, kw, C) as DEPTHWISE_CONV_2D
// and the custom ops store them, or (C, kh, kw, 1) as a CONV_2D whose groups
// equal its channels stores them (Keras Conv2D(groups=C), keras.applications
// ConvNeXt).
enum class KernelLayout { kTapsThenChannels, kChannelsThenTaps };

size_t PackedWeightFloats(const DepthwiseProblem& p, int lanes);
size_t PackedBiasFloats(const DepthwiseProblem& p, int lanes);
// Scratch for one run: SharedScratchFloats (plain mode's zero-padded copy of
// the input) followed by ThreadScratchFloats per thread (channel-tail copies).
size_t SharedScratchFloats(const DepthwiseProblem& p, int lanes);
size_t ThreadScratchFloats(const DepthwiseProblem& p, int lanes);
size_t ScratchFloats(const DepthwiseProblem& p, int lanes, int num_threads);

// kernel: (kh, kw, C) of `type`, or (C, kh, kw) with kChannelsThenTaps;
// bias: (C,) float32 or nullptr; add_identity folds `+ x` (the WBMM shortcut)
// into the centre tap.
void PackDepthwiseWeights(const DepthwiseProblem& p, int lanes, const void* kernel, WeightType type,
                          const float* bias, bool add_identity, float* packed_weights,
                          float* packed_bias, KernelLayout layout = KernelLayout::kTapsThenChannels);

float HalfToFloat(uint16_t h);

// One compilation of the kernels for one instruction set.
struct KernelSet {
  const char* isa;
  int lanes;
  // scratch: ScratchFloats(p, lanes, pool ? pool->num_threads() : 1) floats.
  void (*run)(const DepthwiseProblem& p, const float* input, const float* packed_weights,
              const float* packed_bias, float* output, float* scratch, ThreadPool* pool);
};

// isa: "auto" (best the CPU supports), or one of "portable", "avx2", "avx512",
// "neon". Returns nullptr when that ISA is not built in or the CPU lacks it.
const KernelSet* FindKernelSet(const char* isa);
// Comma-separated names of the ISAs usable on this CPU, best last.
const char* AvailableIsas();

}  // namespace wbmm

#endif  // WBMM_DELEGATES_KERNELS_WINDOWED_DEPTHWISE_H_
