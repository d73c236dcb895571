// The WBMM and exact large-depthwise kernels, compiled once per instruction set
// (CMake builds this file with -DWBMM_ISA_AVX2 -mavx2 -mfma, -DWBMM_ISA_AVX512
// -mavx512f, -DWBMM_ISA_NEON, or nothing for the portable path); see
// windowed_depthwise.h for the maths and depthwise_setup.cc for packing and
// dispatch.
//
// Layout of the work: channels are the SIMD lanes (NHWC keeps them
// contiguous). A tile is one window (windowed mode) or one output row (plain
// mode) of one channel block; tiles are split over threads. Inside a tile, up
// to kMaxColumns output pixels of one row live in registers while the input
// pixels of each contributing input row stream past once: input pixel xi adds
// x * k[xi - xo + off] to output xo. For WBMM every input pixel of the window
// reaches every output of the row (all taps valid), so the inner loop has no
// bounds checks; the weight vector is a memory operand of the FMA and the
// packed kernel block (kh*kw*lanes floats) stays in L1.

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "../threadpool.h"
#include "simd.h"
#include "windowed_depthwise.h"

namespace wbmm::WBMM_ISA_NAMESPACE {
namespace {

using Reg = Vec::Reg;
constexpr int L = Vec::kLanes;

// One chunk of NX consecutive output columns of one output row, summed over
// `rows` (input row, kernel row) pairs that advance by fixed strides.
struct ChunkArgs {
  const float* in;            // input row 0, column 0
  ptrdiff_t in_row_stride;    // floats between input rows
  ptrdiff_t in_pixel_stride;  // floats between input pixels
  const float* k;             // packed kernel row for row pair 0
  ptrdiff_t k_row_stride;     // floats between consecutive kernel rows (K * L)
  int rows;
  int x_lo, x_hi;             // valid input columns
  int K;                      // kernel width
  int off;                    // tap index j = xi - xo + off
  int xo0;                    // first output column of the chunk
  const float* bias;          // L floats
  float* out;                 // output pixel of column xo0
  ptrdiff_t out_pixel_stride;
  float lo, hi;               // activation clamp
};

template <int NX>
inline void AccumulateRow(Reg (&acc)[NX], const ChunkArgs& a, const float* in, const float* krow) {
  const ptrdiff_t ps = a.in_pixel_stride;
  const int jbase = a.off - a.xo0;  // tap of (input xi, output o of the chunk) = xi + jbase - o
  const int begin = std::max(a.x_lo, -jbase);
  const int end = std::min(a.x_hi, a.K + NX - 1 - jbase);
  // Input columns whose taps are valid for all NX outputs of the chunk.
  int full_begin = std::max(begin, NX - 1 - jbase);
  int full_end = std::min(end, a.K - jbase);
  if (full_end <= full_begin) full_begin = full_end = end;

  auto partial = [&](int xi) {
    const Reg x = Vec::Load(in + xi * ps);
    const int j0 = xi + jbase;
#pragma GCC unroll 16
    for (int o = 0; o < NX; ++o) {
      const int j = j0 - o;
      if (static_cast<unsigned>(j) < static_cast<unsigned>(a.K)) acc[o] = Vec::Fma(x, Vec::Load(krow + j * L), acc[o]);
    }
  };
  for (int xi = begin; xi < full_begin; ++xi) partial(xi);
  for (int xi = full_begin; xi < full_end; ++xi) {
    const Reg x = Vec::Load(in + xi * ps);
    const float* kp = krow + (xi + jbase) * L;
#pragma GCC unroll 16
    for (int o = 0; o < NX; ++o) acc[o] = Vec::Fma(x, Vec::Load(kp - o * L), acc[o]);
  }
  for (int xi = full_end; xi < end; ++xi) partial(xi);
}

template <int NX>
void Chunk(const ChunkArgs& a) {
  Reg acc[NX];
  const Reg b = Vec::Load(a.bias);
#pragma GCC unroll 16
  for (int o = 0; o < NX; ++o) acc[o] = b;
  const float* in = a.in;
  const float* k = a.k;
  for (int r = 0; r < a.rows; ++r, in += a.in_row_stride, k += a.k_row_stride) AccumulateRow<NX>(acc, a, in, k);
  const Reg lo = Vec::Set1(a.lo), hi = Vec::Set1(a.hi);
#pragma GCC unroll 16
  for (int o = 0; o < NX; ++o) Vec::Store(a.out + o * a.out_pixel_stride, Vec::Min(Vec::Max(acc[o], lo), hi));
}

using ChunkFn = void (*)(const ChunkArgs&);

template <size_t... I>
constexpr auto MakeChunkTable(std::index_sequence<I...>) {
  return std::array<ChunkFn, sizeof...(I)>{{&Chunk<int(I) + 1>...}};
}
// kChunks[n - 1] computes n columns.
const auto kChunks = MakeChunkTable(std::make_index_sequence<Vec::kMaxColumns>());

// Splits `width` output columns into near-equal chunks of at most kMaxColumns.
void RunRow(ChunkArgs a, int width, float* out_row) {
  const int pieces = (width + Vec::kMaxColumns - 1) / Vec::kMaxColumns;
  for (int piece = 0, start = 0; piece < pieces; ++piece) {
    const int stop = int((int64_t(width) * (piece + 1)) / pieces);
    a.xo0 = start;
    a.out = out_row + ptrdiff_t(start) * a.out_pixel_stride;
    kChunks[stop - start - 1](a);
    start = stop;
  }
}

// Copies `pixels` pixels of `channels` floats (source stride src_ps) into a
// lane-padded buffer, zero-filling the padding lanes.
void GatherTail(const float* src, ptrdiff_t src_ps, int pixels, int channels, float* dst) {
  for (int i = 0; i < pixels; ++i, src += src_ps, dst += L) {
    std::memcpy(dst, src, sizeof(float) * channels);
    std::memset(dst + channels, 0, sizeof(float) * (L - channels));
  }
}

void ScatterTail(const float* src, int pixels, int channels, float* dst, ptrdiff_t dst_ps) {
  for (int i = 0; i < pixels; ++i, src += L, dst += dst_ps) std::memcpy(dst, src, sizeof(float) * channels);
}

struct Context {
  const DepthwiseProblem& p;
  const float* input;
  const float* weights;
  const float* bias;
  float* output;
  float* scratch;
  size_t scratch_stride;
  int blocks;
};

// One window of one channel block (windowed mode, out == in size).
void WindowTile(const Context& c, int64_t tile, int thread_index) {
  const DepthwiseProblem& p = c.p;
  const int nwx = (p.in_w + p.window_w - 1) / p.window_w;
  const int nwy = (p.in_h + p.window_h - 1) / p.window_h;
  const int wx = int(tile % nwx);
  int64_t rest = tile / nwx;
  const int wy = int(rest % nwy);
  rest /= nwy;
  const int b = int(rest % p.batch);
  const int cb = int(rest / p.batch);

  const int y0 = wy * p.window_h, x0 = wx * p.window_w;
  const int vh = std::min(p.window_h, p.in_h - y0);  // rows/cols past the map are zero padding
  const int vw = std::min(p.window_w, p.in_w - x0);
  const int c0 = cb * L, cl = std::min(L, p.channels - c0);
  const ptrdiff_t C = p.channels;
  const int K = p.kernel_w;

  const float* in = c.input + ((ptrdiff_t(b) * p.in_h + y0) * p.in_w + x0) * C + c0;
  float* out = c.output + ((ptrdiff_t(b) * p.out_h + y0) * p.out_w + x0) * C + c0;
  ptrdiff_t in_row_stride = ptrdiff_t(p.in_w) * C, in_ps = C;
  ptrdiff_t out_row_stride = ptrdiff_t(p.out_w) * C, out_ps = C;
  float* tail_out = nullptr;
  if (cl < L) {  // channel tail: work on lane-padded copies
    float* tail_in = c.scratch + c.scratch_stride * thread_index;
    tail_out = tail_in + ptrdiff_t(p.window_h) * p.window_w * L;
    for (int r = 0; r < vh; ++r) GatherTail(in + r * in_row_stride, C, vw, cl, tail_in + ptrdiff_t(r) * vw * L);
    in = tail_in;
    in_row_stride = ptrdiff_t(vw) * L;
    in_ps = L;
    std::swap(out, tail_out);  // tail_out now holds the real destination
    out_row_stride = ptrdiff_t(vw) * L;
    out_ps = L;
  }

  const float* wblock = c.weights + ptrdiff_t(cb) * p.kernel_h * K * L;
  ChunkArgs a;
  a.in = in;
  a.in_row_stride = in_row_stride;
  a.in_pixel_stride = in_ps;
  a.k_row_stride = ptrdiff_t(K) * L;
  a.rows = vh;
  a.x_lo = 0;
  a.x_hi = vw;
  a.K = K;
  a.off = p.window_w - 1;
  a.bias = c.bias + c0;
  a.out_pixel_stride = out_ps;
  a.lo = p.out_min;
  a.hi = p.out_max;
  for (int ro = 0; ro < vh; ++ro) {
    // Output row ro of the window, input row ri: kernel row ri - ro + wh - 1.
    a.k = wblock + ptrdiff_t(p.window_h - 1 - ro) * K * L;
    RunRow(a, vw, out + ro * out_row_stride);
  }
  if (tail_out != nullptr) {
    for (int r = 0; r < vh; ++r)
      ScatterTail(out + ptrdiff_t(r) * vw * L, vw, cl, tail_out + r * ptrdiff_t(p.out_w) * C, C);
  }
}

// One output row of one channel block (plain mode).
void RowTile(const Context& c, int64_t tile, int thread_index) {
  const DepthwiseProblem& p = c.p;
  const int oy = int(tile % p.out_h);
  int64_t rest = tile / p.out_h;
  const int b = int(rest % p.batch);
  const int cb = int(rest / p.batch);
  const int c0 = cb * L, cl = std::min(L, p.channels - c0);
  const ptrdiff_t C = p.channels;
  const int K = p.kernel_w;

  // Kernel rows whose input row oy - pad_top + i lies inside the map.
  const int i_lo = std::max(0, p.pad_top - oy);
  const int i_hi = std::min(p.kernel_h, p.in_h + p.pad_top - oy);
  const int rows = std::max(0, i_hi - i_lo);
  const int iy0 = oy - p.pad_top + i_lo;

  const float* in = c.input + ((ptrdiff_t(b) * p.in_h + iy0) * p.in_w) * C + c0;
  float* out = c.output + ((ptrdiff_t(b) * p.out_h + oy) * p.out_w) * C + c0;
  ptrdiff_t in_row_stride = ptrdiff_t(p.in_w) * C, in_ps = C, out_ps = C;
  float* tail_dst = nullptr;
  if (cl < L) {
    float* tail_in = c.scratch + c.scratch_stride * thread_index;
    float* tail_out = tail_in + ptrdiff_t(p.kernel_h) * p.in_w * L;
    for (int r = 0; r < rows; ++r) GatherTail(in + r * in_row_stride, C, p.in_w, cl, tail_in + ptrdiff_t(r) * p.in_w * L);
    in = tail_in;
    in_row_stride = ptrdiff_t(p.in_w) * L;
    in_ps = L;
    tail_dst = out;
    out = tail_out;
    out_ps = L;
  }

  ChunkArgs a;
  a.in = in;
  a.in_row_stride = in_row_stride;
  a.in_pixel_stride = in_ps;
  a.k = c.weights + (ptrdiff_t(cb) * p.kernel_h + i_lo) * K * L;
  a.k_row_stride = ptrdiff_t(K) * L;
  a.rows = rows;
  a.x_lo = 0;
  a.x_hi = p.in_w;
  a.K = K;
  a.off = p.pad_left;
  a.bias = c.bias + c0;
  a.out_pixel_stride = out_ps;
  a.lo = p.out_min;
  a.hi = p.out_max;
  RunRow(a, p.out_w, out);
  if (tail_dst != nullptr) ScatterTail(out, p.out_w, cl, tail_dst, C);
}

void Run(const DepthwiseProblem& p, const float* input, const float* packed_weights, const float* packed_bias,
         float* output, float* scratch, size_t scratch_stride, ThreadPool* pool) {
  const Context c{p, input, packed_weights, packed_bias, output, scratch, scratch_stride,
                  (p.channels + L - 1) / L};
  int64_t tiles;
  if (p.windowed()) {
    const int64_t nwy = (p.in_h + p.window_h - 1) / p.window_h;
    const int64_t nwx = (p.in_w + p.window_w - 1) / p.window_w;
    tiles = int64_t(c.blocks) * p.batch * nwy * nwx;
  } else {
    tiles = int64_t(c.blocks) * p.batch * p.out_h;
  }
  // Channel block is the slowest index of a tile, so consecutive tiles of a
  // thread reuse the same packed kernel block from L1.
  auto work = [&](int64_t begin, int64_t end, int thread_index) {
    if (p.windowed()) {
      for (int64_t t = begin; t < end; ++t) WindowTile(c, t, thread_index);
    } else {
      for (int64_t t = begin; t < end; ++t) RowTile(c, t, thread_index);
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(tiles, work);
  } else {
    work(0, tiles, 0);
  }
}

}  // namespace

extern const KernelSet kKernelSet;
const KernelSet kKernelSet = {Vec::kName, L, &Run};

}  // namespace wbmm::WBMM_ISA_NAMESPACE
