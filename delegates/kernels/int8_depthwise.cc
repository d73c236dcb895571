// The int8 depthwise and WBMM kernels, compiled once per instruction set
// (simd_int8.h names them; CMakeLists.txt sets the macro and flags); the maths
// and the packed layout are in int8_depthwise.h, packing and dispatch in
// int8_setup.cc.
//
// Both modes run over a per-thread copy of the input in which every pixel the
// kernel reads exists: padding holds the input zero point, so no loop checks a
// bound and the zero-point correction folded into the bias is exact. The copy
// is "packed": entry (row, column) holds, per channel of the block, the
// `group` inputs at column, column + dw, ... (one tap group of a kernel row),
// in the ISA's element type, so one Dot is one instruction.
//
// Plain mode, output-stationary: a tile is a band of output rows of one
// channel block; NX outputs of a row live in registers while every kernel row
// and tap group adds into them (the weight vector is loaded once per group).
// Windowed mode, input-stationary inside a window: the window's packed rows
// are built once; output o of a row takes input group p with the weights that
// start at tap p*group - o + ww - 1 (packed for every start), so each output
// multiplies only the window's own pixels: ceil(ww/group) groups per input
// row, not a (2ww-1)-wide kernel row.

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "../threadpool.h"
#include "int8_depthwise.h"
#include "simd_int8.h"

namespace wbmm::WBMM_INT8_NAMESPACE {

extern const Int8KernelSet kKernelSet;

namespace {

using TX = V8::TX;
using TW = V8::TW;
using Acc = V8::Acc;
constexpr int L = V8::kLanes;
constexpr int G = V8::kGroup;
constexpr int E = L * G;  // elements per packed entry

struct Params {  // one channel block's requantization
  const float* scale;
  int zp, lo, hi;
};

struct PlainArgs {
  const TX* strip;       // packed strip row of output row 0's kernel row 0, entry 0
  ptrdiff_t row_stride;  // elements between packed strip rows
  ptrdiff_t kernel_row_step;  // elements from kernel row i to i + 1 (dh strip rows)
  ptrdiff_t group_step;  // elements from tap group p to p + 1 (G * dw entries)
  const TW* w;           // block's packed weights [kh][P][E]
  int kh, P;
  const int32_t* bias;
  Params q;
  int8_t* out;           // output pixel 0 of the row, block's first channel
  ptrdiff_t out_pixel;   // C
  int valid_lanes;
};

template <int NX>
void PlainColumns(const PlainArgs& a, int ox0) {
  Acc acc[NX];
#pragma GCC unroll 32
  for (int o = 0; o < NX; ++o) acc[o] = V8::Zero();
  const TX* row = a.strip + ptrdiff_t(ox0) * E;
  const TW* w = a.w;
  for (int kr = 0; kr < a.kh; ++kr, row += a.kernel_row_step) {
    const TX* x = row;
    for (int p = 0; p < a.P; ++p, x += a.group_step, w += E) {
#pragma GCC unroll 32
      for (int o = 0; o < NX; ++o) acc[o] = V8::Dot(acc[o], x + o * E, w);
    }
  }
  // Locals, not a's fields: the int8 stores may alias anything, so fields
  // would be reloaded (and the clamp constants rebuilt) after every output.
  const Params q = a.q;
  const int32_t* bias = a.bias;
  int8_t* out = a.out + ox0 * a.out_pixel;
  const ptrdiff_t step = a.out_pixel;
  const int lanes = a.valid_lanes;
#pragma GCC unroll 32
  for (int o = 0; o < NX; ++o) V8::Requantize(acc[o], bias, q.scale, q.zp, q.lo, q.hi, out + o * step, lanes);
}

struct WindowArgs {
  const TX* win;     // packed window rows [wh][P][E]
  const TW* w;       // block's packed weights [kh][S][E], S starts per kernel row
  int wh, ww, P, S;
  const int32_t* bias;  // block's corrected bias [wh * ww][L]
  Params q;
  int8_t* out;          // output row oy of the window, column 0
  ptrdiff_t out_pixel;
  int valid_lanes;
};

template <int NX>
void WindowColumns(const WindowArgs& a, int oy, int ox0, int valid_columns) {
  Acc acc[NX];
#pragma GCC unroll 32
  for (int o = 0; o < NX; ++o) acc[o] = V8::Zero();
  for (int iy = 0; iy < a.wh; ++iy) {
    const TW* wrow = a.w + ptrdiff_t(iy - oy + a.wh - 1) * a.S * E + ptrdiff_t(a.ww - 1 - ox0) * E;
    const TX* x = a.win + ptrdiff_t(iy) * a.P * E;
    for (int p = 0; p < a.P; ++p, x += E, wrow += G * E) {
#pragma GCC unroll 32
      for (int o = 0; o < NX; ++o) acc[o] = V8::Dot(acc[o], x, wrow - o * E);
    }
  }
  const int32_t* bias = a.bias + (ptrdiff_t(oy) * a.ww + ox0) * L;
  const Params q = a.q;  // locals: see PlainColumns
  int8_t* out = a.out + ox0 * a.out_pixel;
  const ptrdiff_t step = a.out_pixel;
  const int lanes = a.valid_lanes;
#pragma GCC unroll 32
  for (int o = 0; o < NX; ++o)
    if (o < valid_columns) V8::Requantize(acc[o], bias + o * L, q.scale, q.zp, q.lo, q.hi, out + o * step, lanes);
}

template <class Args, template <int> class Fn, size_t... I>
constexpr auto MakeTable(std::index_sequence<I...>) {
  return std::array<decltype(&Fn<1>::template Call<Args>), sizeof...(I)>{&Fn<int(I) + 1>::template Call<Args>...};
}

template <int NX>
struct PlainCall {
  template <class Args>
  static void Call(const Args& a, int ox0, int, int) { PlainColumns<NX>(a, ox0); }
};
template <int NX>
struct WindowCall {
  template <class Args>
  static void Call(const Args& a, int ox0, int oy, int valid) { WindowColumns<NX>(a, oy, ox0, valid); }
};

constexpr int kMaxNX = V8::kMaxColumns;
constexpr auto kPlainTable = MakeTable<PlainArgs, PlainCall>(std::make_index_sequence<kMaxNX>());
constexpr auto kWindowTable = MakeTable<WindowArgs, WindowCall>(std::make_index_sequence<kMaxNX>());

// Splits `width` columns into chunks of at most kMaxNX, as even as possible.
template <class Table, class Args>
void RunColumns(const Table& table, const Args& a, int width, int oy, int valid_columns) {
  const int chunks = (width + kMaxNX - 1) / kMaxNX;
  int ox = 0;
  for (int k = 0; k < chunks; ++k) {
    const int n = (width - ox) / (chunks - k);
    table[size_t(n - 1)](a, ox, oy, valid_columns - ox);
    ox += n;
  }
}

// One int8 row of the map for channel block cb in `row` (zp-filled [cols][L]):
// input columns [x0, x0 + cols) go to row columns [0, cols); the rest is zp.
void GatherRow(const Int8Problem& p, const int8_t* in_row, int cb, int x0, int cols, int8_t* row) {
  const int zp = p.input_zero_point;
  const int lanes = std::min(L, p.channels - cb * L);
  std::memset(row, zp, size_t(cols) * L);
  if (in_row == nullptr) return;
  const int first = std::max(0, -x0), last = std::min(cols, p.in_w - x0);
  const int8_t* src = in_row + ptrdiff_t(x0) * p.channels + cb * L;
  if (lanes == L) {  // a copy of constant size is one vector move, not a call (measured: w=7 int8 1.3x faster)
    for (int c = first; c < last; ++c) std::memcpy(row + ptrdiff_t(c) * L, src + ptrdiff_t(c) * p.channels, size_t(L));
  } else {
    for (int c = first; c < last; ++c) std::memcpy(row + ptrdiff_t(c) * L, src + ptrdiff_t(c) * p.channels, size_t(lanes));
  }
}

struct Context {
  const Int8Problem& p;
  const int8_t* in;
  const Int8Packed& k;
  int8_t* out;
  uint8_t* scratch;
  size_t thread_bytes;
  int blocks, P;
};

Params BlockParams(const Context& c, int cb) {
  return {c.k.scale.data() + cb * L, c.p.output_zero_point, c.p.out_min, c.p.out_max};
}

void PlainTile(const Context& c, int64_t tile, int thread) {
  const Int8Problem& p = c.p;
  const int bands = (p.out_h + kInt8BandRows - 1) / kInt8BandRows;
  const int cb = int(tile % c.blocks);
  const int band = int(tile / c.blocks % bands), b = int(tile / c.blocks / bands);
  const int oy0 = band * kInt8BandRows, rows = std::min(kInt8BandRows, p.out_h - oy0);
  const int strip_rows = rows + (p.kernel_h - 1) * p.dilation_h;
  const int entries = p.out_w + (c.P - 1) * G * p.dilation_w;  // packed columns
  const int src_cols = entries + (G - 1) * p.dilation_w;       // int8 columns they read
  uint8_t* scratch = c.scratch + c.thread_bytes * size_t(thread);
  TX* strip = reinterpret_cast<TX*>(scratch);
  int8_t* row = reinterpret_cast<int8_t*>(scratch + size_t(strip_rows) * entries * E * sizeof(TX));
  for (int r = 0; r < strip_rows; ++r) {
    const int iy = oy0 - p.pad_top + r;
    const int8_t* in_row = iy >= 0 && iy < p.in_h ? c.in + (ptrdiff_t(b) * p.in_h + iy) * p.in_w * p.channels : nullptr;
    GatherRow(p, in_row, cb, -p.pad_left, src_cols, row);
    TX* dst = strip + ptrdiff_t(r) * entries * E;
    for (int col = 0; col < entries; ++col) V8::PackColumn(row + ptrdiff_t(col) * L, ptrdiff_t(p.dilation_w) * L, dst + ptrdiff_t(col) * E);
  }
  PlainArgs a;
  a.row_stride = ptrdiff_t(entries) * E;
  a.kernel_row_step = a.row_stride * p.dilation_h;
  a.group_step = ptrdiff_t(G) * p.dilation_w * E;
  a.w = reinterpret_cast<const TW*>(c.k.weights.data()) + ptrdiff_t(cb) * p.kernel_h * c.P * E;
  a.kh = p.kernel_h;
  a.P = c.P;
  a.bias = c.k.bias.data() + cb * L;
  a.q = BlockParams(c, cb);
  a.out_pixel = p.channels;
  a.valid_lanes = std::min(L, p.channels - cb * L);
  for (int r = 0; r < rows; ++r) {
    a.strip = strip + r * a.row_stride;
    a.out = c.out + ((ptrdiff_t(b) * p.out_h + oy0 + r) * p.out_w) * p.channels + cb * L;
    RunColumns(kPlainTable, a, p.out_w, 0, p.out_w);
  }
}

void WindowTile(const Context& c, int64_t tile, int thread) {
  const Int8Problem& p = c.p;
  const int wh = p.window_h, ww = p.window_w;
  const int nwy = (p.in_h + wh - 1) / wh, nwx = (p.in_w + ww - 1) / ww;
  const int cb = int(tile % c.blocks);
  const int wy = int(tile / c.blocks % nwy), b = int(tile / c.blocks / nwy);
  uint8_t* scratch = c.scratch + c.thread_bytes * size_t(thread);
  TX* win = reinterpret_cast<TX*>(scratch);
  int8_t* row = reinterpret_cast<int8_t*>(scratch + size_t(wh) * c.P * E * sizeof(TX));
  WindowArgs a;
  a.win = win;
  a.wh = wh;
  a.ww = ww;
  a.P = c.P;
  a.S = (c.P - 1) * G + ww;
  a.w = reinterpret_cast<const TW*>(c.k.weights.data()) + ptrdiff_t(cb) * p.kernel_h * a.S * E;
  a.bias = c.k.bias.data() + ptrdiff_t(cb) * c.k.positions * L;
  a.q = BlockParams(c, cb);
  a.out_pixel = p.channels;
  a.valid_lanes = std::min(L, p.channels - cb * L);
  const int rows = std::min(wh, p.in_h - wy * wh);
  for (int wx = 0; wx < nwx; ++wx) {
    const int x0 = wx * ww, cols = std::min(ww, p.in_w - x0);
    for (int r = 0; r < wh; ++r) {
      const int iy = wy * wh + r;
      const int8_t* in_row = r < rows ? c.in + (ptrdiff_t(b) * p.in_h + iy) * p.in_w * p.channels : nullptr;
      // Columns past the window (group padding) and past the map are the zero point.
      GatherRow(p, in_row, cb, x0, c.P * G, row);
      if (cols < c.P * G) std::memset(row + ptrdiff_t(cols) * L, p.input_zero_point, size_t(c.P * G - cols) * L);
      for (int g = 0; g < c.P; ++g) V8::PackColumn(row + ptrdiff_t(g) * G * L, L, win + (ptrdiff_t(r) * c.P + g) * E);
    }
    for (int oy = 0; oy < rows; ++oy) {
      a.out = c.out + ((ptrdiff_t(b) * p.out_h + wy * wh + oy) * p.out_w + x0) * p.channels + cb * L;
      RunColumns(kWindowTable, a, ww, oy, cols);
    }
  }
}

template <class Fn>
void Parallel(ThreadPool* pool, int64_t n, Fn& fn) {
  if (pool != nullptr) pool->ParallelFor(n, fn);
  else fn(0, n, 0);
}

void Run(const Int8Problem& p, const int8_t* input, const Int8Packed& packed, int8_t* output, uint8_t* scratch,
         ThreadPool* pool) {
  const int blocks = (p.channels + L - 1) / L;
  const int P = ((p.windowed() ? p.window_w : p.kernel_w) + G - 1) / G;
  const Int8KernelSet& self = kKernelSet;
  Context c{p, input, packed, output, scratch, Int8ThreadScratchBytes(p, self), blocks, P};
  if (p.windowed()) {
    const int nwy = (p.in_h + p.window_h - 1) / p.window_h;
    auto work = [&](int64_t begin, int64_t end, int thread) {
      for (int64_t t = begin; t < end; ++t) WindowTile(c, t, thread);
    };
    Parallel(pool, int64_t(blocks) * nwy * p.batch, work);
    return;
  }
  const int bands = (p.out_h + kInt8BandRows - 1) / kInt8BandRows;
  auto work = [&](int64_t begin, int64_t end, int thread) {
    for (int64_t t = begin; t < end; ++t) PlainTile(c, t, thread);
  };
  Parallel(pool, int64_t(blocks) * bands * p.batch, work);
}

}  // namespace

const Int8KernelSet kKernelSet = {V8::kName, L, G, int(sizeof(TX)), V8::kInputOffset, &Run};

}  // namespace wbmm::WBMM_INT8_NAMESPACE
