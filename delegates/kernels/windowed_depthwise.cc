// The WBMM and exact large-depthwise kernels, compiled once per instruction set
// (CMake builds this file with -DWBMM_ISA_AVX2 -mavx2 -mfma, -DWBMM_ISA_AVX512
// -mavx512f, -DWBMM_ISA_NEON, or nothing for the portable path); see
// windowed_depthwise.h for the maths and depthwise_setup.cc for packing and
// dispatch.
//
// Channels are the SIMD lanes (NHWC keeps them contiguous). Tiles are split
// over threads: a windowed tile is a band of windows (one window row, two
// where window groups are 2 x 2) of one channel block, so the block's packed
// kernel stays in L1 across the band; a plain tile is a band of
// kPlainBandRows output rows of one channel block.
//
// Windowed mode, "input-stationary": up to kAccumulators outputs (one or two
// rows of a window, NX columns) live in registers; each input pixel of the
// window is loaded once and adds x * k[dr][xi - xo + ww - 1] to every output
// of the block. Inside a window every such tap exists (|xi - xo| <= ww - 1),
// so the loop has no bounds checks: one FMA with a memory operand per
// (input, output) pair, d FMAs per output pixel, the dense-M count. On ISAs
// with 32 registers a full window uses the tap-stationary variant below.
//
// Plain mode, "tap-stationary": output column xo, tap j reads input column
// xo - pad_left + j from a per-thread strip (a band's input rows, zero-padded
// left/right, lanes contiguous), so no loop checks bounds; rows outside the
// map are skipped.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>

#include "../threadpool.h"
#include "simd.h"
#include "windowed_depthwise.h"

namespace wbmm::WBMM_ISA_NAMESPACE {
namespace {

using Reg = Vec::Reg;
constexpr int L = Vec::kLanes;

struct BlockArgs {
  const float* in;            // input row 0 of the block, column 0 (window) or xo0 (padded)
  ptrdiff_t in_row_stride;    // floats between input rows
  ptrdiff_t in_pixel_stride;  // floats between input pixels
  const float* k;             // packed kernel row paired with input row 0 and output row 0
  ptrdiff_t k_row_stride;     // K * L: next input row -> next kernel row
  int rows;                   // input rows to accumulate
  int width;                  // windowed: valid input columns of the window
  int K;                      // kernel width
  int jbase;                  // windowed: tap of (input xi, output o) = xi + jbase - o
  const float* bias;          // L floats
  float* out;                 // output row 0, first column of the block
  ptrdiff_t out_row_stride, out_pixel_stride;
  float lo, hi;               // activation clamp
};

// InitFromBias and Store are forced inline: clang (the NDK's compiler) keeps
// Store out of line from 12 accumulators up, and the accumulators passed to it
// by reference then live in a stack array that the block's row loop reads and
// writes (aarch64, FullWindowBlock<14, 1>: 124 vector stack stores, 0 inlined).
template <int NX, int R>
[[gnu::always_inline]] inline void InitFromBias(Reg (&acc)[R][NX], const BlockArgs& a) {
  const Reg b = Vec::Load(a.bias);
  // Every loop over the accumulators is unrolled whole (r too): a rolled one
  // indexes acc[r] and so keeps a stack copy, which GCC then updates on every
  // input row of the caller's loop (aarch64: 14 vector stores per input row
  // of a 7x7 two-row block).
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int o = 0; o < NX; ++o) acc[r][o] = b;
}

template <int NX, int R>
[[gnu::always_inline]] inline void Store(Reg (&acc)[R][NX], const BlockArgs& a) {
  if (a.lo == -INFINITY && a.hi == INFINITY) {  // no activation: skip the clamp
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int o = 0; o < NX; ++o) Vec::Store(a.out + r * a.out_row_stride + o * a.out_pixel_stride, acc[r][o]);
    return;
  }
  const Reg lo = Vec::Set1(a.lo), hi = Vec::Set1(a.hi);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int o = 0; o < NX; ++o)
      Vec::Store(a.out + r * a.out_row_stride + o * a.out_pixel_stride, Vec::Min(Vec::Max(acc[r][o], lo), hi));
}

// R output rows (R = 1 or 2) x NX columns inside one window. Output row r+1
// pairs with the kernel row one above output row r's: k - r * K * L.
// W > 0: the window's width is known at compile time and the input loop is
// unrolled whole; its 7- or 14-trip loop otherwise costs a branch miss per
// input row (measured w=7 at 56x56x96: 0.47 -> 0.43 ms best).
template <int NX, int R, int W = 0>
void WindowBlock(const BlockArgs& a) {
  Reg acc[R][NX];
  InitFromBias<NX, R>(acc, a);
  // With W known, so is the kernel width 2W - 1: the weight loads become
  // base + displacement instead of needing a register per row offset.
  const ptrdiff_t ps = a.in_pixel_stride, next_row_k = ptrdiff_t(W > 0 ? 2 * W - 1 : a.K) * L;
  const float* in = a.in;
  const float* k = a.k;
  for (int row = 0; row < a.rows; ++row, in += a.in_row_stride, k += a.k_row_stride) {
    const float* kp = k + ptrdiff_t(a.jbase) * L;
    // One input vector and its R*NX FMAs per iteration. Unrolled only when
    // the trip count is a constant: partial unrolling of the runtime loop
    // made GCC spill the accumulators.
    const int width = W > 0 ? W : a.width;
#pragma GCC unroll 16
    for (int xi = 0; xi < width; ++xi, kp += L) {
      const Reg x = Vec::Load(in + xi * ps);
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int o = 0; o < NX; ++o) acc[r][o] = Vec::Fma(x, Vec::Load(kp - r * next_row_k - o * L), acc[r][o]);
    }
  }
  Store<NX, R>(acc, a);
}

// A full-width window row block with the width W known at compile time,
// "tap-stationary": the W input pixels of an input row sit in registers, each
// of the 2W-1 taps of the kernel row is loaded once and feeds the outputs it
// reaches (xi = o + j - (W-1)). 3W-1 loads per W^2 FMAs instead of ~W^2, for
// register files that hold R*W accumulators plus W inputs.
template <int W, int R>
void FullWindowBlock(const BlockArgs& a) {
  Reg acc[R][W];
  InitFromBias<W, R>(acc, a);
  const ptrdiff_t ps = a.in_pixel_stride, next_row_k = ptrdiff_t(2 * W - 1) * L;  // K = 2W - 1, as in WindowBlock
  const float* in = a.in;
  const float* k = a.k;
  for (int row = 0; row < a.rows; ++row, in += a.in_row_stride, k += a.k_row_stride) {
    Reg x[W];
#pragma GCC unroll 16
    for (int xi = 0; xi < W; ++xi) x[xi] = Vec::Load(in + xi * ps);
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      const float* krow = k - r * next_row_k;
#pragma GCC unroll 32
      for (int j = 0; j < 2 * W - 1; ++j) {
        const Reg w = Vec::Load(krow + j * L);
#pragma GCC unroll 16
        for (int o = 0; o < W; ++o) {
          const int xi = o + j - (W - 1);
          if (xi >= 0 && xi < W) acc[r][o] = Vec::Fma(x[xi], w, acc[r][o]);
        }
      }
    }
  }
  Store<W, R>(acc, a);
}

// NX output columns of one row over a zero-padded input: output o, tap j reads
// in[o + j]. kAccumulate: start from the partial sums already in `out` (the
// row-outer order below) instead of the bias. The input is a strip whose
// pixels are L floats apart (BandTile; a.in_pixel_stride is not read): with a
// constant stride every input load is base + displacement, where a runtime
// one made GCC keep 14 offsets in general registers and spill two of them
// on every tap.
template <int NX, bool kAccumulate>
void PaddedBlock(const BlockArgs& a) {
  Reg acc[1][NX];
  if (kAccumulate) {
#pragma GCC unroll 16
    for (int o = 0; o < NX; ++o) acc[0][o] = Vec::Load(a.out + o * a.out_pixel_stride);
  } else {
    InitFromBias<NX, 1>(acc, a);
  }
  constexpr ptrdiff_t ps = L;
  const float* in = a.in;
  const float* k = a.k;
  for (int row = 0; row < a.rows; ++row, in += a.in_row_stride, k += a.k_row_stride) {
    const float* ip = in;
#pragma GCC unroll 1
    for (int j = 0; j < a.K; ++j, ip += ps) {
      const Reg w = Vec::Load(k + j * L);
#pragma GCC unroll 16
      for (int o = 0; o < NX; ++o) acc[0][o] = Vec::Fma(Vec::Load(ip + o * ps), w, acc[0][o]);
    }
  }
  Store<NX, 1>(acc, a);
}

using BlockFn = void (*)(const BlockArgs&);
constexpr int kMaxTwoRowColumns = std::min(Vec::kAccumulators / 2, Vec::kMaxColumns);

template <size_t... I>
constexpr auto WindowTable1(std::index_sequence<I...>) { return std::array<BlockFn, sizeof...(I)>{{&WindowBlock<int(I) + 1, 1>...}}; }
template <size_t... I>
constexpr auto WindowTable2(std::index_sequence<I...>) { return std::array<BlockFn, sizeof...(I)>{{&WindowBlock<int(I) + 1, 2>...}}; }
template <bool kAccumulate, size_t... I>
constexpr auto PaddedTable(std::index_sequence<I...>) {
  return std::array<BlockFn, sizeof...(I)>{{&PaddedBlock<int(I) + 1, kAccumulate>...}};
}
// table[n - 1] handles n columns.
const auto kWindow1 = WindowTable1(std::make_index_sequence<Vec::kMaxColumns>());
const auto kWindow2 = WindowTable2(std::make_index_sequence<kMaxTwoRowColumns>());
const auto kPadded = PaddedTable<false>(std::make_index_sequence<Vec::kMaxColumns>());
const auto kPaddedAccumulate = PaddedTable<true>(std::make_index_sequence<Vec::kMaxColumns>());

// Above this many bytes of input rows per column piece, plain mode walks the
// kernel rows outermost (partial sums in the output row, one input row hot in
// L1) instead of keeping all kernel rows' inputs in flight per piece.
constexpr size_t kRowOuterBytes = 16 * 1024;

// Full-window blocks: R*W accumulators + W inputs + 1 weight must fit the
// register file (kAccumulators + 2 registers).
constexpr int kFullWindowMax1 = (Vec::kAccumulators + 1) / 2;  // W + W + 1 <= kAccumulators + 2
constexpr int kFullWindowMax2 = (Vec::kAccumulators + 1) / 3;  // 2W + W + 1 <= kAccumulators + 2
template <size_t... I>
constexpr auto FullTable1(std::index_sequence<I...>) { return std::array<BlockFn, sizeof...(I)>{{&FullWindowBlock<int(I) + 1, 1>...}}; }
template <size_t... I>
constexpr auto FullTable2(std::index_sequence<I...>) { return std::array<BlockFn, sizeof...(I)>{{&FullWindowBlock<int(I) + 1, 2>...}}; }
const auto kFullWindow1 = FullTable1(std::make_index_sequence<kFullWindowMax1>());
const auto kFullWindow2 = FullTable2(std::make_index_sequence<kFullWindowMax2>());

// Full-width windows of width W up to kMaxUnrolledWidth that split into equal
// pieces of at most kMaxTwoRowColumns columns: WindowBlock<W / pieces, R, W>.
constexpr int kMaxUnrolledWidth = 16;
constexpr int UnrolledPiece(int width) {
  const int pieces = (width + kMaxTwoRowColumns - 1) / kMaxTwoRowColumns;
  return width % pieces == 0 ? width / pieces : 0;
}
template <int R, size_t... I>
constexpr auto UnrolledTable(std::index_sequence<I...>) {
  return std::array<BlockFn, sizeof...(I)>{
      {(UnrolledPiece(int(I) + 1) > 0 ? &WindowBlock<std::max(UnrolledPiece(int(I) + 1), 1), R, int(I) + 1> : nullptr)...}};
}
// table[W - 1]: nullptr where W does not split evenly.
const auto kUnrolled1 = UnrolledTable<1>(std::make_index_sequence<kMaxUnrolledWidth>());
const auto kUnrolled2 = UnrolledTable<2>(std::make_index_sequence<kMaxUnrolledWidth>());

BlockFn FullWindowFor(int width, bool two_rows) {
  if (!Vec::kFullWindowBlocks) return nullptr;
  if (two_rows) return width <= kFullWindowMax2 ? kFullWindow2[width - 1] : nullptr;
  return width <= kFullWindowMax1 ? kFullWindow1[width - 1] : nullptr;
}

// Near-equal column pieces of at most max_columns covering [0, width): the
// first `larger` pieces have size + 1 columns, the others `size`. Computed
// once per run: the divisions cost as much as a small block's FMAs. Any
// width: a piece's start is the running sum, not an entry of a fixed table
// (a 64-entry table of starts once capped a row at 64 pieces, so a plain row
// wider than 64 * kMaxColumns got pieces wider than the block tables, and
// the call went past them: a crash, or a wrong block).
struct ColumnSplit {
  int pieces = 0, size = 0, larger = 0;
};

ColumnSplit SplitColumns(int width, int max_columns) {
  ColumnSplit split;
  if (width <= 0) return split;
  split.pieces = width / max_columns + (width % max_columns != 0);
  split.size = width / split.pieces;
  split.larger = width % split.pieces;
  return split;
}

// Calls table[n-1] for each piece of `split`, n its column count (<= max_columns).
template <class Table, class SetColumn>
inline void ForColumnPieces(const Table& table, const ColumnSplit& split, BlockArgs a, SetColumn set_column) {
  int start = 0;
  for (int piece = 0; piece < split.pieces; ++piece) {
    const int columns = split.size + (piece < split.larger ? 1 : 0);
    set_column(a, start);
    table[columns - 1](a);
    start += columns;
  }
}

// Copies `pixels` pixels of `channels` floats into a lane-padded buffer, zero-filling the padding lanes.
void GatherTail(const float* src, ptrdiff_t src_ps, int pixels, int channels, float* dst) {
  for (int i = 0; i < pixels; ++i, src += src_ps, dst += L) {
    std::memcpy(dst, src, sizeof(float) * channels);
    std::memset(dst + channels, 0, sizeof(float) * (L - channels));
  }
}

void ScatterTail(const float* src, int pixels, int channels, float* dst, ptrdiff_t dst_ps) {
  for (int i = 0; i < pixels; ++i, src += L, dst += dst_ps) std::memcpy(dst, src, sizeof(float) * channels);
}


// Several full windows side by side in one band, "weight-reuse": the tap of
// (input i, output o) is the same in every window, so NWIN windows share each
// weight vector. A tile is NO outputs x NWIN windows of accumulators.
//  * Same-row tiles (kSameRow): NO consecutive outputs of one output row.
//    Output o's tap for input column xi is output 0's tap for xi - o, so each
//    weight vector is loaded once and serves the next NO - 1 inputs from its
//    register: per input pixel 1 weight load + NWIN input loads for NO*NWIN
//    FMAs. Each window row is cut into these, W / NO of them.
//  * Row-spanning tiles: the columns left over (W % NO per row) taken
//    row-major, NO at a time, so a tile may span two output rows; each output
//    keeps its own kernel pointer (NO weight loads per input pixel), and every
//    tile but the last two is a full NO wide. (A row cut into 2+2+3 would leave
//    tiles at 8 accumulators, below FMA latency 4 x 2 pipes: on L1-resident
//    data a 2x4 tile runs at 40, a 3x4 tile at 50 GFMA/s, this machine's FMA
//    peak.)
// W: the window width at compile time (the input loop unrolled whole).
struct MultiWindowArgs {
  const float* in;              // packed input [row][column][window][lanes] (MultiWindowTile)
  ptrdiff_t in_row_stride;
  const float* k;               // tap of output (0, 0) for input (0, 0): kernel row wh-1, column ww-1
  ptrdiff_t k_row_stride;       // K * L
  int rows;                     // window_h
  const ptrdiff_t* k_offset;    // per output (ro, xo) of the tile: -(ro * K + xo) * L
  const ptrdiff_t* out_offset;  // per output of the tile: floats from `out` to it
  const ptrdiff_t* window_offset;  // per window: floats from window 0's pixel to the same pixel of it
  const float* bias;
  float* out;                   // output pixel (0, 0) of the first window
  float lo, hi;
};

// acc + x * w with all three in registers. Left to itself, GCC gives each AVX2
// FMA one memory operand and, with 12 accumulators live in 16 registers,
// reloads inputs and weights instead of keeping them: per input row of a 3x4
// tile at w=7 (84 FMAs), 99 loads where 49 suffice, and 87 where a same-row
// tile needs 37. The asm leaves it no memory operand to pick. With the
// same-row tiles, C++ harness, 56x56x96, best / median: w=7 0.40 / 0.53 ->
// 0.37 / 0.45 ms, w=14 1.36 / 1.77 -> 1.29 / 1.58 ms; in the interpreter,
// medians 1.18x (w=7) and 1.14x (w=14) faster, outputs bit-identical.
inline Reg FmaInRegisters(Reg x, Reg w, Reg acc) {
#if defined(WBMM_ISA_AVX2) && defined(__GNUC__)
  asm("vfmadd231ps %2, %1, %0" : "+x"(acc) : "x"(x), "x"(w));
  return acc;
#else
  return Vec::Fma(x, w, acc);
#endif
}

template <int NO, int NWIN, int W, bool kSameRow>
void MultiWindowBlock(const MultiWindowArgs& a) {
  // Everything the epilogue needs is read into locals first: read through `a`
  // after the output stores, GCC reloads it once per store (a float store may
  // alias the struct) and keeps the accumulators in a stack copy for the
  // clamp branch (C++ harness, best of 300: w=7 56x56x96 0.428 -> 0.420 ms,
  // w=14 1.77 -> 1.66 ms).
  float* out[NO];
  const float* kp[NO];
#pragma GCC unroll 8
  for (int o = 0; o < NO; ++o) {
    out[o] = a.out + a.out_offset[o];
    kp[o] = a.k + (kSameRow ? a.k_offset[0] - o * L : a.k_offset[o]);
  }
  // Not a float, so the stores below cannot alias it: read after the loop.
  const ptrdiff_t* window_offset = a.window_offset;
  const ptrdiff_t k_row_stride = a.k_row_stride, in_row_stride = a.in_row_stride;
  const int rows = a.rows;
  const float lo_value = a.lo, hi_value = a.hi;
  Reg acc[NWIN][NO];
  const Reg b = Vec::Load(a.bias);
#pragma GCC unroll 8
  for (int n = 0; n < NWIN; ++n)
#pragma GCC unroll 8
    for (int o = 0; o < NO; ++o) acc[n][o] = b;
  // The packed layout [row][column][window][lanes]: constant offsets.
  constexpr ptrdiff_t ps = ptrdiff_t(NWIN) * L, ws = L;
  const float* in = a.in;
  for (int row = 0; row < rows; ++row, in += in_row_stride) {
#pragma GCC unroll 16
    for (int xi = 0; xi < W; ++xi) {
      Reg w[NO];
#pragma GCC unroll 8
      // Same row: every address off kp[0], so the unrolled loop loads each once.
      for (int o = 0; o < NO; ++o) w[o] = Vec::Load(kSameRow ? kp[0] + (xi - o) * L : kp[o] + xi * L);
#pragma GCC unroll 8
      for (int n = 0; n < NWIN; ++n) {
        const Reg x = Vec::Load(in + xi * ps + n * ws);
#pragma GCC unroll 8
        for (int o = 0; o < NO; ++o) acc[n][o] = FmaInRegisters(x, w[o], acc[n][o]);
      }
    }
#pragma GCC unroll 8
    for (int o = 0; o < NO; ++o) kp[o] += k_row_stride;
  }
  if (!(lo_value == -INFINITY && hi_value == INFINITY)) {
    const Reg lo = Vec::Set1(lo_value), hi = Vec::Set1(hi_value);
#pragma GCC unroll 8
    for (int n = 0; n < NWIN; ++n)
#pragma GCC unroll 8
      for (int o = 0; o < NO; ++o) acc[n][o] = Vec::Min(Vec::Max(acc[n][o], lo), hi);
  }
#pragma GCC unroll 8
  for (int n = 0; n < NWIN; ++n)
#pragma GCC unroll 8
    for (int o = 0; o < NO; ++o) Vec::Store(out[o] + window_offset[n], acc[n][o]);
}

// Register budget (kAccumulators + 2): NO*NWIN accumulators + NO weights + 1
// input: 4 windows x 3 outputs, 7 loads per 12 FMAs. Only where the
// one-load-per-FMA window loop is the limit (16-register ISAs); 32-register
// ISAs keep the tap-stationary full-window blocks. Maps 2 or 3 windows wide
// take their 4 windows as 2 x 2 (WindowGroup); 2 windows x 5 outputs was
// slower than one window at a time there (28x28x192 w=14 0.836 vs 0.746 ms
// best), 2 x 2 groups are faster (interpreter A/B, medians: 28x28x192 w=14
// 1.11-1.20x, 14x14x384 w=7 1.02-1.24x).
constexpr bool kMultiWindow = !Vec::kFullWindowBlocks;
constexpr int kMultiWindows = 4;
constexpr int kMultiMaxOutputs = 3;
using MultiFn = void (*)(const MultiWindowArgs&);
template <int W>
constexpr std::array<MultiFn, kMultiMaxOutputs> MultiRow() {
  return {{&MultiWindowBlock<1, kMultiWindows, W, false>, &MultiWindowBlock<2, kMultiWindows, W, false>,
           &MultiWindowBlock<3, kMultiWindows, W, false>}};
}
template <size_t... I>
constexpr auto MultiTable(std::index_sequence<I...>) {
  return std::array<std::array<MultiFn, kMultiMaxOutputs>, sizeof...(I)>{{MultiRow<int(I) + 1>()...}};
}
template <size_t... I>
constexpr auto SameRowTable(std::index_sequence<I...>) {
  return std::array<MultiFn, sizeof...(I)>{{&MultiWindowBlock<kMultiMaxOutputs, kMultiWindows, int(I) + 1, true>...}};
}
// The packed input of a group of windows, at most this size: w <= 16 at 8
// lanes. w=14 (25 KB) fills L1 with the kernel rows its tiles read, and is
// still faster than one window at a time (C++ harness, 56x56x96: 1.66 -> 1.52 ms
// best, 2.41 -> 2.13 ms median).
constexpr size_t kMultiMaxBytes = 32 * 1024;
// kMulti[W - 1][NO - 1] (row-spanning tiles), kMultiSameRow[W - 1] (NO = kMultiMaxOutputs).
constexpr int kMultiMaxWidth = 16;
const auto kMulti = MultiTable(std::make_index_sequence<kMultiMaxWidth>());
const auto kMultiSameRow = SameRowTable(std::make_index_sequence<kMultiMaxWidth>());

// One full window on its own (a map one window wide or tall, a window no
// group took), where the window width splits into equal row pieces of 4-7
// outputs: each piece a same-row tile of that one window,
// MultiWindowBlock<NO, 1, W, true>, at 1 weight load and 1 input load per NO
// FMAs where WindowTile makes one load per FMA. At most 7: NO accumulators,
// NO weights and the input fill 15 of the 16 registers. Interpreter A/B,
// four or five runs of 1500-3000 invokes: medians 14x14x384 w=14 1.06-1.22x, 7x7x768
// w=7 1.04-1.11x faster, bests 3-5% slower (WindowTile's two-row blocks share
// each input load across two rows; this path wins on the cache misses of
// reading a 384- or 768-channel window in place); outputs bit-identical.
constexpr int kSingleMaxOutputs = 7;
constexpr int SinglePiece(int width) {
  const int pieces = (width + kSingleMaxOutputs - 1) / kSingleMaxOutputs;
  return width % pieces == 0 && width / pieces >= 4 ? width / pieces : 0;
}
template <size_t... I>
constexpr auto SingleTable(std::index_sequence<I...>) {
  return std::array<MultiFn, sizeof...(I)>{{(SinglePiece(int(I) + 1) > 0
                                                 ? &MultiWindowBlock<std::max(SinglePiece(int(I) + 1), 1), 1,
                                                                     int(I) + 1, true>
                                                 : nullptr)...}};
}
// kSingle[W - 1]: nullptr where W does not split that way. Used only where kMultiWindow
// (16-register ISAs; the others have the full-window blocks).
const auto kSingle = SingleTable(std::make_index_sequence<kMultiMaxWidth>());

bool MultiWindowFits(const DepthwiseProblem& p) {
  return kMultiWindow && p.window_w <= kMultiMaxWidth &&
         size_t(p.window_h) * p.window_w * kMultiWindows * L * sizeof(float) <= kMultiMaxBytes;
}

// How the kMultiWindows windows of a group sit in the map: a row of them
// where the map is that many windows wide, else 2 x 2 (14x14 at w=7, 28x28 at
// w=14: a map 2 or 3 windows wide would otherwise go one window at a time, at
// one load per FMA), else no groups (rows == 0).
struct WindowGroup {
  int rows = 0, columns = 0;
};

WindowGroup ChooseWindowGroup(const DepthwiseProblem& p) {
  if (!MultiWindowFits(p)) return {};
  const int across = p.in_w / p.window_w, down = p.in_h / p.window_h;
  if (across >= kMultiWindows) return {1, kMultiWindows};
  if (across >= 2 && down >= 2) return {2, kMultiWindows / 2};
  return {};
}

// How many outputs the next tile takes when `left` remain: max_outputs, except
// that the last two tiles share what is left evenly (49 = 15*3 + 2 + 2, not
// 16*3 + 1: a 1-output tile has NWIN accumulators, far below the FMA latency).
inline int NextTileOutputs(int left, int max_outputs) {
  if (left <= max_outputs) return left;
  if (left < 2 * max_outputs) return (left + 1) / 2;
  return max_outputs;
}

struct Context {
  const DepthwiseProblem& p;
  const float* input;
  const float* weights;
  const float* bias;
  float* output;
  float* thread_scratch;
  size_t thread_stride;
  int blocks;
  WindowGroup group;                        // windowed
  ColumnSplit full_one_row, full_two_rows;  // windowed: a full window's width
  ColumnSplit whole_row;                    // plain: out_w
  int prefetch_near = 1, prefetch_far = 1;  // windowed: groups ahead (MultiWindowTile, kPrefetchAheadBytes)
};

// One window of one channel block.
void WindowTile(const Context& c, int b, int wy, int wx, int cb, int thread_index) {
  const DepthwiseProblem& p = c.p;
  const int y0 = wy * p.window_h, x0 = wx * p.window_w;
  const int vh = std::min(p.window_h, p.in_h - y0);  // rows/cols past the map are zero padding: skipped
  const int vw = std::min(p.window_w, p.in_w - x0);
  const int c0 = cb * L, cl = std::min(L, p.channels - c0);
  const ptrdiff_t C = p.channels;
  const int K = p.kernel_w;

  const float* in = c.input + ((ptrdiff_t(b) * p.in_h + y0) * p.in_w + x0) * C + c0;
  float* out = c.output + ((ptrdiff_t(b) * p.out_h + y0) * p.out_w + x0) * C + c0;
  ptrdiff_t in_row_stride = ptrdiff_t(p.in_w) * C, in_ps = C;
  ptrdiff_t out_row_stride = ptrdiff_t(p.out_w) * C, out_ps = C;
  float* tail_destination = nullptr;
  if (cl < L) {  // channel tail: work on lane-padded copies of the window
    float* tail_in = c.thread_scratch + c.thread_stride * thread_index;
    float* tail_out = tail_in + ptrdiff_t(p.window_h) * p.window_w * L;
    for (int r = 0; r < vh; ++r) GatherTail(in + r * in_row_stride, C, vw, cl, tail_in + ptrdiff_t(r) * vw * L);
    in = tail_in;
    in_row_stride = ptrdiff_t(vw) * L;
    in_ps = L;
    tail_destination = out;
    out = tail_out;
    out_row_stride = ptrdiff_t(vw) * L;
    out_ps = L;
  }

  BlockArgs a{};
  a.in = in;
  a.in_row_stride = in_row_stride;
  a.in_pixel_stride = in_ps;
  a.k_row_stride = ptrdiff_t(K) * L;
  a.rows = vh;
  a.width = vw;
  a.K = K;
  a.bias = c.bias + c0;
  a.out_row_stride = out_row_stride;
  a.out_pixel_stride = out_ps;
  a.lo = p.out_min;
  a.hi = p.out_max;
  const float* wblock = c.weights + ptrdiff_t(cb) * p.kernel_h * K * L;
  for (int ro = 0; ro < vh;) {
    const bool two = ro + 1 < vh;
    const int rows_here = two ? 2 : 1;
    // Output row ro, input row ri: kernel row ri - ro + wh - 1.
    a.k = wblock + ptrdiff_t(p.window_h - 1 - ro) * K * L;
    float* out_row = out + ro * out_row_stride;
    auto set_column = [&](BlockArgs& b_args, int xo0) {
      b_args.jbase = p.window_w - 1 - xo0;
      b_args.out = out_row + xo0 * out_ps;
    };
    if (vw == p.window_w && FullWindowFor(vw, two) != nullptr) {
      const int r_block = two && FullWindowFor(vw, true) != nullptr ? 2 : 1;
      set_column(a, 0);
      FullWindowFor(vw, r_block == 2)(a);
      ro += r_block;
      continue;
    }
    if (vw == p.window_w && vw <= kMaxUnrolledWidth && kUnrolled1[vw - 1] != nullptr) {
      const int piece = UnrolledPiece(vw);
      const BlockFn block = two ? kUnrolled2[vw - 1] : kUnrolled1[vw - 1];
      for (int xo0 = 0; xo0 < vw; xo0 += piece) {
        set_column(a, xo0);
        block(a);
      }
      ro += rows_here;
      continue;
    }
    if (vw == p.window_w) {
      if (two) ForColumnPieces(kWindow2, c.full_two_rows, a, set_column);
      else ForColumnPieces(kWindow1, c.full_one_row, a, set_column);
    } else {  // a window cut by the map's right edge
      if (two) ForColumnPieces(kWindow2, SplitColumns(vw, kMaxTwoRowColumns), a, set_column);
      else ForColumnPieces(kWindow1, SplitColumns(vw, Vec::kMaxColumns), a, set_column);
    }
    ro += rows_here;
  }
  if (tail_destination != nullptr)
    for (int r = 0; r < vh; ++r)
      ScatterTail(out + ptrdiff_t(r) * vw * L, vw, cl, tail_destination + r * ptrdiff_t(p.out_w) * C, C);
}

// Copies the input of NWIN full windows of channel block cb into the
// thread's scratch, dense as [row][column][window][lanes] (read in place, NHWC
// puts every pixel vector on its own cache line at a stride that maps the
// windows onto a few L1 sets: measured 2x slower at 28x28x192), and returns
// the arguments of the MultiWindowBlocks that read it. The first window's
// pixel (0, 0) is (b, y0, x0); window n is window_offset[n] floats further,
// in the input and in the output. The caller fills k_offset and out_offset
// per tile.
template <int NWIN>
MultiWindowArgs PackWindows(const Context& c, int b, int y0, int x0, int cb, int thread_index,
                            const ptrdiff_t* window_offset, ptrdiff_t* k_offset, ptrdiff_t* out_offset) {
  const DepthwiseProblem& p = c.p;
  const int W = p.window_w, H = p.window_h, K = p.kernel_w, c0 = cb * L;
  const ptrdiff_t C = p.channels;
  float* packed = c.thread_scratch + c.thread_stride * thread_index;
  const float* src = c.input + ((ptrdiff_t(b) * p.in_h + y0) * p.in_w + x0) * C + c0;
  float* dst = packed;
  for (int r = 0; r < H; ++r)
    for (int x = 0; x < W; ++x)
      for (int n = 0; n < NWIN; ++n, dst += L)
        Vec::Store(dst, Vec::Load(src + (ptrdiff_t(r) * p.in_w + x) * C + window_offset[n]));
  MultiWindowArgs a{};
  a.in = packed;
  a.in_row_stride = ptrdiff_t(W) * NWIN * L;
  a.k = c.weights + (ptrdiff_t(cb) * p.kernel_h + H - 1) * K * L + ptrdiff_t(W - 1) * L;
  a.k_row_stride = ptrdiff_t(K) * L;
  a.rows = H;
  a.k_offset = k_offset;
  a.out_offset = out_offset;
  a.window_offset = window_offset;
  a.bias = c.bias + c0;
  a.out = c.output + ((ptrdiff_t(b) * p.out_h + y0) * p.out_w + x0) * C + c0;
  a.lo = p.out_min;
  a.hi = p.out_max;
  return a;
}

// One full window (b, wy, wx) of one full channel block, as kSingle's row
// pieces over a dense copy of its input (PackWindows).
void SingleWindowTile(const Context& c, int b, int wy, int wx, int cb, int thread_index) {
  const DepthwiseProblem& p = c.p;
  const int W = p.window_w, H = p.window_h, K = p.kernel_w, piece = SinglePiece(W);
  const ptrdiff_t C = p.channels;
  const ptrdiff_t window_offset[1] = {0};
  ptrdiff_t k_offset[1], out_offset[kSingleMaxOutputs];
  const MultiWindowArgs a =
      PackWindows<1>(c, b, wy * H, wx * W, cb, thread_index, window_offset, k_offset, out_offset);
  for (int ro = 0; ro < H; ++ro)
    for (int xo = 0; xo < W; xo += piece) {
      k_offset[0] = -(ptrdiff_t(ro) * K + xo) * L;
      for (int o = 0; o < piece; ++o) out_offset[o] = (ptrdiff_t(ro) * p.out_w + xo + o) * C;
      kSingle[W - 1](a);
    }
}

// Window (b, wy, wx) of channel block cb, on whichever path fits it.
void AnyWindowTile(const Context& c, int b, int wy, int wx, int cb, int thread_index) {
  const DepthwiseProblem& p = c.p;
  const bool whole = (wy + 1) * p.window_h <= p.in_h && (wx + 1) * p.window_w <= p.in_w && (cb + 1) * L <= p.channels;
  if (whole && kMultiWindow && p.window_w <= kMultiMaxWidth && kSingle[p.window_w - 1] != nullptr)
    SingleWindowTile(c, b, wy, wx, cb, thread_index);
  else
    WindowTile(c, b, wy, wx, cb, thread_index);
}

// A group of kMultiWindows full windows (c.group of them down and across)
// whose first is window (wy, wx0), of one full channel block (no tail, no
// edge): the windows' outputs in row-major tiles (NextTileOutputs), each a
// MultiWindowBlock over the windows' whole input.
//
// near_group, far_group: where two groups the caller runs later start
// (c.prefetch_near and c.prefetch_far groups ahead in Run's order), in floats
// from the start of the input and of the output (windowed: both have the same
// shape), or -1. When such a group starts new cache lines (the previous
// channel block did not already bring them), its input lines are asked for
// into L2 and its output lines for writing, a few at a time between this
// group's tiles: the near group's second half, the far group's first half,
// so every group of a band asks for about the same number of lines, at least
// a group ahead. The group's own copy below would otherwise wait on each input
// line and its stores on each output line (NHWC puts every pixel vector of a
// block on its own line, at strides the hardware prefetchers do not follow).
// C++ harness, w=7 56x56x96, with and without the prefetches alternating run
// by run (then all of the next group's lines during this group): input, 8 MB
// touched between runs, medians of six runs 11-15% less (e.g. 0.711 -> 0.611
// ms), w=14 and 28x28x192 unchanged within noise; output, its lines flushed
// between runs, medians 0.595 -> 0.520 and 0.616 -> 0.546 ms (28x28x192:
// 0.348 -> 0.282 ms). Warm, the output prefetch costs 0-5% (interpreter A/B at
// 28x28x192: 5%); kept, since an op's output has usually left the caches
// since its last invoke. Spreading them as above instead of all of the next
// group's during this one: a new-lines group is every other one at 56x56x96,
// so half the groups asked for twice a group's lines in a burst, one group
// ahead. Interpreter A/B, medians of three runs of 1500 invokes, outputs
// bit-identical: w=7 1.03-1.04x at 56x56x96, 1.01-1.07x at 28x28x192,
// 1.04-1.08x at 14x14x384; w=14 1.00-1.04x; 2 threads 0.99-1.17x.
void MultiWindowTile(const Context& c, int b, int wy, int wx0, int cb, int thread_index, ptrdiff_t near_group,
                     ptrdiff_t far_group) {
  const DepthwiseProblem& p = c.p;
  const int W = p.window_w, H = p.window_h, K = p.kernel_w;
  constexpr int nwin = kMultiWindows, most = kMultiMaxOutputs;
  const int y0 = wy * H, x0 = wx0 * W;
  const ptrdiff_t C = p.channels;
  ptrdiff_t window_offset[nwin];  // same pixel, in the input and in the output
  for (int n = 0; n < nwin; ++n)
    window_offset[n] = (ptrdiff_t(n / c.group.columns) * H * p.in_w + ptrdiff_t(n % c.group.columns) * W) * C;
  ptrdiff_t k_offset[kMultiMaxOutputs], out_offset[kMultiMaxOutputs];
  const MultiWindowArgs a =
      PackWindows<nwin>(c, b, y0, x0, cb, thread_index, window_offset, k_offset, out_offset);
  // Same-row tiles first, then the columns they leave, row-major (MultiWindowBlock).
  const int same_row_columns = W / most * most;
  const int spanning_outputs = H * (W - same_row_columns);
  int tiles = H * (W / most);
  for (int left = spanning_outputs; left > 0; left -= NextTileOutputs(left, most)) ++tiles;
  // A group's pixels, row-major: group_rows rows of group_row_pixels.
  const int group_rows = H * c.group.rows, group_row_pixels = W * c.group.columns;
  const int group_pixels = group_rows * group_row_pixels;
  struct PrefetchStream {
    const float* input = nullptr;   // the group's first pixel, or nullptr: its lines are not new
    const float* output = nullptr;
    int next = 0, end = 0, per_tile = 0;  // its pixels [next, end), per_tile of them per tile
  };
  auto starts_line = [](const float* vector) { return (reinterpret_cast<uintptr_t>(vector) & 63) < L * sizeof(float); };
  auto stream = [&](ptrdiff_t group, int first, int end) {
    PrefetchStream s;
    if (group < 0) return s;
    if (starts_line(c.input + group)) s.input = c.input + group;
    if (starts_line(c.output + group)) s.output = c.output + group;
    if (s.input == nullptr && s.output == nullptr) return s;
    s.next = first;
    s.end = end;
    s.per_tile = (end - first + tiles - 1) / tiles;
    return s;
  };
  PrefetchStream streams[2] = {stream(near_group, group_pixels / 2, group_pixels),
                               stream(far_group, 0, group_pixels / 2)};
  auto prefetch_later_groups = [&] {
    for (PrefetchStream& s : streams)
      for (int i = 0; i < s.per_tile && s.next < s.end; ++i, ++s.next) {
        const int row = s.next / group_row_pixels, pixel = s.next - row * group_row_pixels;
        const ptrdiff_t at = (ptrdiff_t(row) * p.in_w + pixel) * C;
        if (s.input != nullptr) __builtin_prefetch(s.input + at, 0, 2);
        if (s.output != nullptr) __builtin_prefetch(s.output + at, 1, 2);
      }
  };
  auto set_output = [&](int o, int ro, int xo) {
    k_offset[o] = -(ptrdiff_t(ro) * K + xo) * L;
    out_offset[o] = (ptrdiff_t(ro) * p.out_w + xo) * C;
    // Ask for the tile's output lines now, for writing: they arrive while
    // the tile's ~50 FMAs per output run instead of stalling its stores at
    // the end. Every output vector of a group is on its own line, and in an
    // interpreter the output tensor has usually left L2 since the last
    // invoke (C++ harness, 8 MB touched between runs, medians: w=7
    // 56x56x96 0.593 -> 0.483 ms, w=14 2.43 -> 2.01 ms).
    for (int n_win = 0; n_win < nwin; ++n_win)
      __builtin_prefetch(a.out + out_offset[o] + window_offset[n_win], 1, 3);
  };
  for (int ro = 0; ro < H; ++ro)
    for (int xo = 0; xo < same_row_columns; xo += most) {
      prefetch_later_groups();
      for (int o = 0; o < most; ++o) set_output(o, ro, xo + o);
      kMultiSameRow[W - 1](a);
    }
  int ro = 0, xo = same_row_columns;  // the next row-spanning tile's first output
  for (int left = spanning_outputs; left > 0;) {
    const int n = NextTileOutputs(left, most);
    prefetch_later_groups();
    for (int o = 0; o < n; ++o) {
      set_output(o, ro, xo);
      if (++xo == W) xo = same_row_columns, ++ro;
    }
    kMulti[W - 1][n - 1](a);
    left -= n;
  }
}

// Plain mode: a lane-padded copy of input rows [iy0, iy0 + rows) and input
// columns [x_begin, x_begin + width) of one channel block, zero outside the
// map (the conv's padding) and in the padding lanes.
void FillStrip(const Context& c, int b, int iy0, int rows, int x_begin, int width, int c0, int cl, float* dst) {
  const DepthwiseProblem& p = c.p;
  const int x_lo = std::max(0, -x_begin), x_hi = std::min(width, p.in_w - x_begin);  // strip columns inside the map
  for (int r = 0; r < rows; ++r, dst += ptrdiff_t(width) * L) {
    const float* src = c.input + ((ptrdiff_t(b) * p.in_h + iy0 + r) * p.in_w) * p.channels + c0;
    if (x_lo > 0) std::memset(dst, 0, sizeof(float) * std::min(x_lo, width) * L);
    if (x_hi > x_lo) {
      if (cl == L) {
        for (int x = x_lo; x < x_hi; ++x) Vec::Store(dst + x * L, Vec::Load(src + ptrdiff_t(x + x_begin) * p.channels));
      } else {
        GatherTail(src + ptrdiff_t(x_lo + x_begin) * p.channels, p.channels, x_hi - x_lo, cl, dst + x_lo * L);
      }
    }
    const int right = std::max(x_hi, x_lo);
    if (right < width) std::memset(dst + right * L, 0, sizeof(float) * (width - right) * L);
  }
}

// Plain mode: a band of output rows [oy0, oy1) of one channel block. The input
// rows the band reads are first copied, zero-padded left/right and laid out
// with the block's lanes contiguous, into a per-thread strip: the tap loop
// then reads consecutive 32/64-byte vectors (reading NHWC directly strides by
// C floats, every load on the same L1 bank: measured 1.4x slower), and each
// input row is copied once per band instead of once per output row.
void BandTile(const Context& c, int64_t tile, int thread_index) {
  const DepthwiseProblem& p = c.p;
  const int bands = (p.out_h + kPlainBandRows - 1) / kPlainBandRows;
  const int band = int(tile % bands);
  int64_t rest = tile / bands;
  const int b = int(rest % p.batch);
  const int cb = int(rest / p.batch);
  const int c0 = cb * L, cl = std::min(L, p.channels - c0);
  const ptrdiff_t C = p.channels;
  const int K = p.kernel_w;
  const int oy0 = band * kPlainBandRows, oy1 = std::min(p.out_h, oy0 + kPlainBandRows);
  const int strip_width = p.out_w + K - 1;  // strip column s holds input column s - pad_left

  // Input rows the band reads, clipped to the map (rows outside are skipped, not stored).
  const int iy_first = std::max(0, oy0 - p.pad_top);
  const int iy_last = std::min(p.in_h - 1, oy1 - 1 - p.pad_top + p.kernel_h - 1);
  float* strip = c.thread_scratch + c.thread_stride * thread_index;
  if (iy_last >= iy_first) FillStrip(c, b, iy_first, iy_last - iy_first + 1, -p.pad_left, strip_width, c0, cl, strip);
  float* tail_row = strip + ptrdiff_t(kPlainBandRows + p.kernel_h - 1) * strip_width * L;

  BlockArgs a{};
  a.k_row_stride = ptrdiff_t(K) * L;
  a.K = K;
  a.bias = c.bias + c0;
  a.in_pixel_stride = L;
  a.in_row_stride = ptrdiff_t(strip_width) * L;
  for (int oy = oy0; oy < oy1; ++oy) {
    // Kernel rows whose input row oy - pad_top + i lies inside the map.
    const int i_lo = std::max(0, p.pad_top - oy);
    const int i_hi = std::min(p.kernel_h, p.in_h + p.pad_top - oy);
    const int rows = std::max(0, i_hi - i_lo);
    const float* in = strip + ptrdiff_t(oy - p.pad_top + i_lo - iy_first) * strip_width * L;
    float* out = c.output + ((ptrdiff_t(b) * p.out_h + oy) * p.out_w) * C + c0;
    ptrdiff_t out_ps = C;
    if (cl < L) {
      out = tail_row;
      out_ps = L;
    }
    a.k = c.weights + (ptrdiff_t(cb) * p.kernel_h + i_lo) * K * L;
    a.rows = rows;
    a.out_row_stride = 0;
    a.out_pixel_stride = out_ps;
    a.lo = p.out_min;
    a.hi = p.out_max;
    const bool row_outer = rows > 1 && size_t(rows) * (Vec::kMaxColumns + K - 1) * L * sizeof(float) > kRowOuterBytes;
    if (!row_outer) {
      ForColumnPieces(kPadded, c.whole_row, a, [&](BlockArgs& piece, int xo0) {
        piece.in = in + xo0 * L;
        piece.out = out + xo0 * out_ps;
      });
    } else {
      // Large kernels: kernel rows outermost, partial sums in the output row,
      // one input row hot in L1 at a time; clamp once, on the finished sums.
      for (int row = 0; row < rows; ++row) {
        BlockArgs r = a;
        r.rows = 1;
        r.k = a.k + row * a.k_row_stride;
        r.lo = row == rows - 1 ? a.lo : -INFINITY;
        r.hi = row == rows - 1 ? a.hi : INFINITY;
        const float* in_row = in + row * a.in_row_stride;
        ForColumnPieces(row == 0 ? kPadded : kPaddedAccumulate, c.whole_row, r, [&](BlockArgs& piece, int xo0) {
          piece.in = in_row + xo0 * L;
          piece.out = out + xo0 * out_ps;
        });
      }
    }
    if (cl < L) ScatterTail(tail_row, p.out_w, cl, c.output + ((ptrdiff_t(b) * p.out_h + oy) * p.out_w) * C + c0, C);
  }
}

// Where the multi-window group `steps` groups after (b, wy, wx0, cb) in Run's
// order starts (a group's successor is the one further right in the band,
// else the next channel block's first group, else the next band's), in
// floats from the start of the input (and of the output: same shape), or -1
// past the last full band. A band is c.group.rows window rows. Only a
// prefetch address: it may be a group another thread runs.
ptrdiff_t GroupOffsetAhead(const Context& c, int b, int wy, int wx0, int cb, int steps) {
  const DepthwiseProblem& p = c.p;
  int wx = wx0;
  for (int step = 0; step < steps; ++step) {
    wx += c.group.columns;
    if (wx + c.group.columns > p.in_w / p.window_w) {
      wx = 0;
      if (++cb == c.blocks) {
        cb = 0;
        wy += c.group.rows;
        if (wy * p.window_h >= p.in_h) wy = 0, ++b;
      }
    }
  }
  if (b >= p.batch || (wy + c.group.rows) * p.window_h > p.in_h) return -1;
  return ((ptrdiff_t(b) * p.in_h + ptrdiff_t(wy) * p.window_h) * p.in_w + ptrdiff_t(wx) * p.window_w) * p.channels +
         ptrdiff_t(cb) * L;
}

// How far ahead MultiWindowTile asks for lines: at most this many bytes of
// later groups' input and output lines in flight, so they stay in L2 until
// used: 4 groups ahead at w=7 (~25 KB of lines a group), 2 at w=14 (~100 KB,
// where 4 was about 1% slower in interpreter A/B).
constexpr size_t kPrefetchAheadBytes = 200 * 1024;

template <class Fn>
void Parallel(ThreadPool* pool, int64_t n, Fn& fn) {
  if (pool != nullptr) pool->ParallelFor(n, fn);
  else fn(0, n, 0);
}

void Run(const DepthwiseProblem& p, const float* input, const float* packed_weights, const float* packed_bias,
         float* output, float* scratch, ThreadPool* pool) {
  const int blocks = (p.channels + L - 1) / L;
  Context c{p, input, packed_weights, packed_bias, output, scratch, ThreadScratchFloats(p, L), blocks, {}, {}, {}, {}};
  if (p.windowed()) {
    c.full_one_row = SplitColumns(p.window_w, Vec::kMaxColumns);
    c.full_two_rows = SplitColumns(p.window_w, kMaxTwoRowColumns);
    c.group = ChooseWindowGroup(p);
    if (c.group.rows > 0) {
      const size_t group_line_bytes = size_t(2) * kMultiWindows * p.window_h * p.window_w * 64;  // input and output
      c.prefetch_far = int(std::clamp<size_t>(kPrefetchAheadBytes / group_line_bytes, 1, 4));
      c.prefetch_near = std::max(1, c.prefetch_far / 2);
    }
    const int nwy = (p.in_h + p.window_h - 1) / p.window_h;
    const int nwx = (p.in_w + p.window_w - 1) / p.window_w;
    // A tile is one band of windows (as many window rows as a group spans) of
    // one channel block: the block's packed kernel stays in L1 across the
    // band's windows, the band's input (all channels) stays in L2 across
    // channel blocks.
    const int band_rows = std::max(c.group.rows, 1);
    const int bands = (nwy + band_rows - 1) / band_rows;
    auto work = [&](int64_t begin, int64_t end, int thread_index) {
      for (int64_t t = begin; t < end; ++t) {
        const int cb = int(t % blocks);
        const int64_t band = t / blocks;
        const int b = int(band / bands), wy0 = int(band % bands) * band_rows;
        int grouped_columns = 0;  // windows [0, grouped_columns) of every row of the band ran in groups
        if (c.group.rows > 0) {
          // Whole windows (inside the map, full channel block) in groups of kMultiWindows.
          const bool full_rows = (wy0 + c.group.rows) * p.window_h <= p.in_h && (cb + 1) * L <= p.channels;
          const int full_windows = p.in_w / p.window_w;
          if (full_rows)
            for (; grouped_columns + c.group.columns <= full_windows; grouped_columns += c.group.columns)
              MultiWindowTile(c, b, wy0, grouped_columns, cb, thread_index,
                              GroupOffsetAhead(c, b, wy0, grouped_columns, cb, c.prefetch_near),
                              GroupOffsetAhead(c, b, wy0, grouped_columns, cb, c.prefetch_far));
        }
        for (int wy = wy0; wy < std::min(wy0 + band_rows, nwy); ++wy)
          for (int wx = grouped_columns; wx < nwx; ++wx) AnyWindowTile(c, b, wy, wx, cb, thread_index);
      }
    };
    Parallel(pool, int64_t(blocks) * p.batch * bands, work);
    return;
  }
  c.whole_row = SplitColumns(p.out_w, Vec::kMaxColumns);
  const int64_t bands = (p.out_h + kPlainBandRows - 1) / kPlainBandRows;
  auto work = [&](int64_t begin, int64_t end, int thread_index) {
    for (int64_t t = begin; t < end; ++t) BandTile(c, t, thread_index);
  };
  Parallel(pool, int64_t(blocks) * p.batch * bands, work);
}

}  // namespace

extern const KernelSet kKernelSet;
const KernelSet kKernelSet = {Vec::kName, L, &Run};

}  // namespace wbmm::WBMM_ISA_NAMESPACE
