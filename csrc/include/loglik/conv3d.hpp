// Direct 3D convolution (cross-correlation, as torch.nn.functional.conv3d) for spectral datacubes laid out as
// (N, C, X, Y, E): few channels and a long, contiguous energy axis E. Forward, grad_input and grad_weight.
//
// Layout of the work: every kernel runs its innermost loop over E, so it vectorises over contiguous memory and
// keeps a register block of (output channels x E-vectors) accumulators; input rows are reused across that channel
// block. With unit stride along E, input rows are read in place (only the few vectors at a row end whose taps
// reach into the zero padding go through a small padded copy). Other strides along E are turned into unit-stride
// reads by splitting each zero-padded input row into `stride_e` phases (phase r holds padded samples
// j = q * stride_e + r), so tap k of output e reads phase (k * dil_e) % stride_e at index e + (k * dil_e) / stride_e.
// grad_input is the transposed convolution on the same engine, reading the output gradient in place, one phase of
// grad_input at a time; with C * KE <= 8 it lifts the taps into channels instead (see grad_input_impl). grad_weight
// keeps (output channels x taps) accumulators in registers across a group of output positions.
// A per-pixel dense geometry (1x1 footprint, kernel spanning the whole unpadded E) is run as BLAS products by
// conv3d.cpp under isa="auto".
//
// This header has two parts:
//  * declarations (always): loglik::conv3d::Geometry and the dispatching entry points forward / grad_input /
//    grad_weight (defined in csrc/cpu/conv3d.cpp, which picks AVX-512, AVX2 or a 128-bit generic path at run time);
//  * the kernel templates, emitted only when the includer defines LOGLIK_CONV3D_ISA (a namespace name),
//    LOGLIK_CONV3D_VEC_BYTES (16, 32 or 64) and LOGLIK_CONV3D_REGS (16 or 32). conv3d.cpp includes this header
//    once per instruction set inside `#pragma GCC target` regions; an embedding framework can do the same.
//    That part has no include guard on purpose and must not include system headers.
#ifndef LOGLIK_CONV3D_DECLARATIONS_
#define LOGLIK_CONV3D_DECLARATIONS_
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>
#ifdef __linux__
#include <sys/mman.h>
#endif

namespace loglik::conv3d {

// Scratch memory for the kernels' padded copies. Big buffers are 2 MiB aligned and asked to be backed by huge pages:
// on a fresh 32 MiB buffer, 4 KiB page faults cost more than the copy itself (measured: 25 ms vs 9 ms to fill it).
// Memory is not initialised; free with std::free.
inline void* alloc_scratch(size_t bytes) {
  constexpr size_t kHuge = size_t(1) << 21;
  const bool big = bytes >= 2 * kHuge;
  const size_t align = big ? kHuge : 64;
  bytes = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (big) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure just means 4 KiB pages
#endif
  return p;
}

// Sizes of one convolution. Axis order of the 3-arrays: X, Y, E.
struct Geometry {
  int64_t n = 1, c = 1, o = 1;  // batch, input channels, output channels
  int64_t in[3] = {1, 1, 1};    // input spatial sizes
  int64_t k[3] = {1, 1, 1};     // kernel sizes
  int64_t stride[3] = {1, 1, 1}, pad[3] = {0, 0, 0}, dil[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};  // output sizes (filled by finalize())

  // Computes out[]; returns an empty string when the geometry is valid, else the reason it is not.
  std::string finalize() {
    if (n < 1 || c < 1 || o < 1) return "batch and channel counts must be positive";
    for (int a = 0; a < 3; ++a) {
      if (in[a] < 1 || k[a] < 1) return "input and kernel sizes must be positive";
      if (stride[a] < 1 || dil[a] < 1) return "stride and dilation must be positive";
      if (pad[a] < 0) return "padding must be non-negative";
      const int64_t span = dil[a] * (k[a] - 1) + 1;
      if (in[a] + 2 * pad[a] < span) return "kernel (with dilation) is larger than the padded input";
      out[a] = (in[a] + 2 * pad[a] - span) / stride[a] + 1;
    }
    return {};
  }
};

// isa: "auto" (best the CPU supports), "avx512", "avx2" or "generic". Returns the ISA that ran.
template <class T>
std::string forward(const Geometry& g, const T* x, const T* w, const T* bias, T* y, const std::string& isa = "auto");
template <class T>
std::string grad_input(const Geometry& g, const T* gy, const T* w, T* gx, const std::string& isa = "auto");
template <class T>
std::string grad_weight(const Geometry& g, const T* x, const T* gy, T* gw, const std::string& isa = "auto");

}  // namespace loglik::conv3d
#endif  // LOGLIK_CONV3D_DECLARATIONS_

#ifdef LOGLIK_CONV3D_ISA
namespace loglik::conv3d::LOGLIK_CONV3D_ISA {

constexpr int kVecBytes = LOGLIK_CONV3D_VEC_BYTES;
constexpr int kRegs = LOGLIK_CONV3D_REGS;

template <class T>
struct VecOf {
  typedef T type __attribute__((vector_size(kVecBytes)));
  static constexpr int lanes = kVecBytes / static_cast<int>(sizeof(T));
};

template <class V, class T>
inline __attribute__((always_inline)) V vload(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <class V, class T>
inline __attribute__((always_inline)) void vstore(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// Vector-scalar arithmetic makes GCC emit one broadcast (from memory where the scalar is loaded); filling the lanes
// one by one made it build the vector with chains of inserts and shuffles, which starved the FMA port.
template <class V, class T>
inline __attribute__((always_inline)) V vbroadcast(T s) {
  return s - V{};  // s - 0 == s exactly (signed zeros too), so the subtraction folds away
}

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Below this many multiply-adds (or copied elements) a kernel runs on the calling thread: waking the OpenMP team
// costs more than it saves, and far more on a loaded machine.
constexpr int64_t kParallelMinWork = int64_t(1) << 18;
inline int64_t macs(const Geometry& g) {
  return g.n * g.o * g.out[0] * g.out[1] * g.out[2] * g.c * g.k[0] * g.k[1] * g.k[2];
}

// Scratch buffer from alloc_scratch: uninitialised (each user zeroes just the padding it reads), 64-byte aligned, so
// rows of whole vectors start on a cache line.
template <class T>
struct Buffer {
  explicit Buffer(int64_t n)
      : size(n), ptr(static_cast<T*>(alloc_scratch(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T)))) {}
  ~Buffer() { std::free(ptr); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* data() { return ptr; }
  const T* data() const { return ptr; }
  int64_t size;
  T* ptr;
};

// Register blocking of the forward / grad_input engine: CB output channels x EV vectors along E.
constexpr int ev_for(int cb) {
  return kRegs >= 32 ? (cb == 8 ? 3 : cb == 4 ? 6 : 8) : (cb == 8 ? 1 : cb == 4 ? 2 : cb == 2 ? 4 : 6);
}
constexpr int kMaxEV = 8;
// Multiply-adds summed into one register before the partial sum is added to the output (see engine_block_w).
constexpr int64_t kTermsPerRun = 128;

// out[cb][e0 : e0 + EV*L] = init[cb] + sum_rows sum_taps w * in, for one (row position, channel block, E-block).
// rowp[r] + toff[t] + e0 is the first input sample of tap t of row r; wrow[r] + twoff[t] holds CB weights.
// Outputs are written to outp[cb] + i * ostride for i < valid (the E-block may be cut by the row end).
// With `add`, the block's sum is added to what outp already holds (row chunks of one output, see engine_row).
template <class T, int CB, int EV>
void engine_block(int64_t nrows, const T* const* rowp, const T* const* wrow, int ntaps, const int64_t* toff,
                  const int64_t* twoff, const T* init, int64_t e0, T* const* outp, int64_t ostride, int64_t valid,
                  bool add) {
  using V = typename VecOf<T>::type;
  constexpr int L = VecOf<T>::lanes;
  V acc[CB][EV];
#pragma GCC unroll 8
  for (int j = 0; j < CB; ++j) {
    const V b = vbroadcast<V>(init ? init[j] : T(0));
#pragma GCC unroll 8
    for (int v = 0; v < EV; ++v) acc[j][v] = b;
  }
  for (int64_t r = 0; r < nrows; ++r) {
    const T* base = rowp[r] + e0;
    const T* wb = wrow[r];
    for (int t = 0; t < ntaps; ++t) {
      const T* p = base + toff[t];
      const T* wt = wb + twoff[t];
      V in[EV];
#pragma GCC unroll 8
      for (int v = 0; v < EV; ++v) in[v] = vload<V>(p + v * L);
#pragma GCC unroll 8
      for (int j = 0; j < CB; ++j) {
        const V b = vbroadcast<V>(wt[j]);
#pragma GCC unroll 8
        for (int v = 0; v < EV; ++v) acc[j][v] += in[v] * b;
      }
    }
  }
  if (ostride == 1 && valid == EV * L) {
    for (int j = 0; j < CB; ++j)
#pragma GCC unroll 8
      for (int v = 0; v < EV; ++v) vstore(outp[j] + v * L, add ? vload<V>(outp[j] + v * L) + acc[j][v] : acc[j][v]);
    return;
  }
  T tmp[EV * L];
  for (int j = 0; j < CB; ++j) {
    for (int v = 0; v < EV; ++v) vstore(tmp + v * L, acc[j][v]);
    T* o = outp[j];
    for (int64_t i = 0; i < valid; ++i) o[i * ostride] = add ? o[i * ostride] + tmp[i] : tmp[i];
  }
}

// Where the engine's input rows come from. Padded rows (len < 0) are scratch copies with zero padding around every
// read. In-place rows (len >= 0) are rows of the caller's tensor, `len` samples long, read directly for the E-blocks
// whose taps stay inside; an E-block that reaches past either end is served from a zero-padded copy of just that
// segment of each row, in the thread's `edge` scratch. In-place rows save a full copy of a tensor that is often
// tens of MB: its page faults and memory traffic cost as much as the arithmetic on these shapes.
template <class T>
struct EdgeScratch {
  std::vector<T> data;
  std::vector<const T*> rows;
};

template <class T>
struct RowSource {
  const T* const* rows;
  int64_t len;  // < 0: padded rows
  EdgeScratch<T>* edge;
};

// engine_block with a run-time number of vectors w (EV, 4, 2 or 1; at most EV), over the rows in chunks of at most
// `chunk` rows: each chunk is summed from zero and added to the output, so a float32 output of C x KX x KY x KE
// terms accumulates in a few short runs instead of one long one (rounding error grows with the run length).
template <class T, int CB, int EV>
void engine_block_w(int w, int64_t nrows, const T* const* rowp, const T* const* wrow, int ntaps, const int64_t* toff,
                    const int64_t* twoff, const T* init, int64_t e0, T* const* outp, int64_t ostride, int64_t valid,
                    int64_t chunk) {
  int64_t r0 = 0;
  do {
    const int64_t nr = std::min(chunk, nrows - r0);
    const T* const* rp = rowp + r0;
    const T* const* wr = wrow + r0;
    const T* in = r0 ? nullptr : init;
    const bool add = r0 > 0;
    if (w == EV)
      engine_block<T, CB, EV>(nr, rp, wr, ntaps, toff, twoff, in, e0, outp, ostride, valid, add);
    else if (EV > 4 && w == 4)
      engine_block<T, CB, (EV > 4 ? 4 : 1)>(nr, rp, wr, ntaps, toff, twoff, in, e0, outp, ostride, valid, add);
    else if (EV > 2 && w == 2)
      engine_block<T, CB, (EV > 2 ? 2 : 1)>(nr, rp, wr, ntaps, toff, twoff, in, e0, outp, ostride, valid, add);
    else
      engine_block<T, CB, 1>(nr, rp, wr, ntaps, toff, twoff, in, e0, outp, ostride, valid, add);
    r0 += nr;
  } while (r0 < nrows);
}

// Runs the engine over all E-blocks of one row position for a channel block of width cb: the widest block (EV, 4,
// 2 or 1 vectors) whose taps all read inside the rows; where even one vector's taps reach past a row end, a block of
// up to 4 vectors is served from a zero-padded copy of that segment of each row (~4L + KE samples per row).
template <class T, int CB>
void engine_row(int64_t nrows, const RowSource<T>& src, const T* const* wrow, int ntaps, const int64_t* toff,
                const int64_t* twoff, const T* init, int64_t count, T* const* outp, int64_t ostride) {
  constexpr int EV = ev_for(CB);
  constexpr int64_t L = VecOf<T>::lanes;
  int64_t lo = 0, hi = 0;  // tap offsets span [lo, hi]
  for (int t = 0; t < ntaps; ++t) {
    lo = t ? std::min(lo, toff[t]) : toff[t];
    hi = t ? std::max(hi, toff[t]) : toff[t];
  }
  const int64_t chunk = std::max<int64_t>(1, kTermsPerRun / std::max(ntaps, 1));
  const bool padded = src.len < 0 || nrows == 0 || ntaps == 0;
  auto inside = [&](int64_t e0, int64_t w) { return padded || (e0 + lo >= 0 && e0 + w * L - 1 + hi < src.len); };
  auto narrower = [](int w) { return w > 4 ? 4 : w / 2; };
  T* op[CB];
  for (int64_t e0 = 0; e0 < count;) {
    for (int j = 0; j < CB; ++j) op[j] = outp[j] + e0 * ostride;
    const int64_t left = (count - e0 + L - 1) / L;  // vectors still to compute
    const int64_t valid_max = count - e0;
    int w = EV;
    while (w > 1 && (narrower(w) >= left || !inside(e0, w))) w = narrower(w);
    if (inside(e0, w)) {
      engine_block_w<T, CB, EV>(w, nrows, src.rows, wrow, ntaps, toff, twoff, init, e0, op, ostride,
                                std::min<int64_t>(w * L, valid_max), chunk);
      e0 += w * L;
      continue;
    }
    // Row end: copy samples [e0 + lo, e0 + w * L + hi) of every row, zero outside [0, len).
    w = EV;
    while (w > 1 && (narrower(w) >= left || w > 4)) w = narrower(w);
    const int64_t seg = w * L + hi - lo, first = e0 + lo;
    const int64_t a = std::max<int64_t>(first, 0), b = std::min<int64_t>(first + seg, src.len);
    EdgeScratch<T>& es = *src.edge;
    if (static_cast<int64_t>(es.data.size()) < nrows * seg) es.data.resize(static_cast<size_t>(nrows * seg));
    if (static_cast<int64_t>(es.rows.size()) < nrows) es.rows.resize(static_cast<size_t>(nrows));
    for (int64_t r = 0; r < nrows; ++r) {
      T* d = es.data.data() + r * seg;
      std::fill(d, d + seg, T(0));
      if (b > a) std::memcpy(d + (a - first), src.rows[r] + a, static_cast<size_t>(b - a) * sizeof(T));
      es.rows[static_cast<size_t>(r)] = d;
    }
    engine_block_w<T, CB, EV>(w, nrows, es.rows.data(), wrow, ntaps, toff, twoff, init, -lo, op, ostride,
                              std::min<int64_t>(w * L, valid_max), chunk);
    e0 += w * L;
  }
}

template <class T>
void engine_dispatch(int cb, int64_t nrows, const RowSource<T>& src, const T* const* wrow, int ntaps,
                     const int64_t* toff, const int64_t* twoff, const T* init, int64_t count, T* const* outp,
                     int64_t ostride) {
  switch (cb) {
    case 8:
      engine_row<T, 8>(nrows, src, wrow, ntaps, toff, twoff, init, count, outp, ostride);
      break;
    case 4:
      engine_row<T, 4>(nrows, src, wrow, ntaps, toff, twoff, init, count, outp, ostride);
      break;
    case 2:
      engine_row<T, 2>(nrows, src, wrow, ntaps, toff, twoff, init, count, outp, ostride);
      break;
    default:
      engine_row<T, 1>(nrows, src, wrow, ntaps, toff, twoff, init, count, outp, ostride);
      break;
  }
}

// Channel blocks: as many blocks of 8 as fit, then 4, 2, 1. Returns (start, width) pairs.
inline std::vector<std::pair<int64_t, int>> channel_blocks(int64_t n) {
  std::vector<std::pair<int64_t, int>> out;
  int64_t s = 0;
  for (int w : {8, 4, 2, 1})
    while (n - s >= w) {
      out.emplace_back(s, w);
      s += w;
    }
  return out;
}

// Calls fn(c, kx, ky, xi, yi) for the input rows (c, xi, yi) in the receptive field of output position (ox, oy),
// skipping rows in the zero padding along X and Y.
template <class Fn>
inline void for_each_receptive_row(const Geometry& g, int64_t ox, int64_t oy, Fn&& fn) {
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t kx = 0; kx < g.k[0]; ++kx) {
      const int64_t xi = ox * g.stride[0] - g.pad[0] + kx * g.dil[0];
      if (xi < 0 || xi >= g.in[0]) continue;
      for (int64_t ky = 0; ky < g.k[1]; ++ky) {
        const int64_t yi = oy * g.stride[1] - g.pad[1] + ky * g.dil[1];
        if (yi < 0 || yi >= g.in[1]) continue;
        fn(c, kx, ky, xi, yi);
      }
    }
}

// Phase-split, zero-padded copy of x (N, C, X, Y, E): row (n, c, x, y) becomes stride_e phases of length lp,
// phase r index q holding the padded sample j = q * stride_e + r (sample e = j - pad_e of x, zero outside).
template <class T>
std::unique_ptr<Buffer<T>> phase_split(const Geometry& g, const T* x, int64_t lp) {
  const int64_t rows = g.n * g.c * g.in[0] * g.in[1], E = g.in[2], se = g.stride[2], pe = g.pad[2];
  auto out = std::make_unique<Buffer<T>>(rows * se * lp);
  T* buf = out->data();
#pragma omp parallel for schedule(static) if (rows * E > kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = x + r * E;
    T* dst = buf + r * se * lp;
    if (se == 1) {
      std::fill(dst, dst + pe, T(0));
      std::memcpy(dst + pe, src, static_cast<size_t>(E) * sizeof(T));
      std::fill(dst + pe + E, dst + lp, T(0));
    } else {
      // phase r, index q <- x[q * se + r - pe] (zero outside the row): a strided gather per phase, no divisions
      for (int64_t r = 0; r < se; ++r) {
        T* d = dst + r * lp;
        const int64_t qlo = r >= pe ? 0 : (pe - r + se - 1) / se;
        const int64_t qhi = std::min(lp, E - 1 + pe - r >= 0 ? (E - 1 + pe - r) / se + 1 : 0);
        std::fill(d, d + std::min(qlo, lp), T(0));
        const T* sp = src + r - pe;
        for (int64_t q = qlo; q < qhi; ++q) d[q] = sp[q * se];
        std::fill(d + std::max(qhi, std::min(qlo, lp)), d + lp, T(0));
      }
    }
  }
  return out;
}

template <class T>
int64_t fwd_phase_len(const Geometry& g) {
  constexpr int L = VecOf<T>::lanes;
  const int64_t maxoff = ((g.k[2] - 1) * g.dil[2]) / g.stride[2];
  const int64_t need_in = (g.in[2] + 2 * g.pad[2] + g.stride[2] - 1) / g.stride[2];
  return round_up(std::max(g.out[2] + maxoff + kMaxEV * L, need_in), L);
}

template <class T>
void forward_impl(const Geometry& g, const T* x, const T* w, const T* bias, T* y) {
  const int64_t N = g.n, C = g.c, O = g.o, X = g.in[0], Y = g.in[1];
  const int64_t KX = g.k[0], KY = g.k[1], KE = g.k[2], OX = g.out[0], OY = g.out[1], OE = g.out[2];
  const int64_t se = g.stride[2], de = g.dil[2], E = g.in[2];
  // Unit stride along E: read x in place (tap k of output e reads x[e + k * de - pad_e]). Otherwise split each
  // padded row into stride phases so that every tap reads unit-stride memory.
  const bool in_place = se == 1;
  const int64_t lp = in_place ? E : fwd_phase_len<T>(g), rowlen = in_place ? E : se * lp;
  const auto Pbuf = in_place ? nullptr : phase_split(g, x, lp);
  const T* P = in_place ? x : Pbuf->data();
  const int64_t K = C * KX * KY * KE;
  const auto blocks = channel_blocks(O);
  // Weights packed per output-channel block: [block][(c, kx, ky, ke)][j] so the CB broadcasts are contiguous.
  std::vector<T> wp(static_cast<size_t>(O * K));
  for (const auto& [o0, cb] : blocks)
    for (int64_t kk = 0; kk < K; ++kk)
      for (int j = 0; j < cb; ++j) wp[o0 * K + kk * cb + j] = w[(o0 + j) * K + kk];
  std::vector<int64_t> toff(KE);
  for (int64_t k = 0; k < KE; ++k) toff[k] = in_place ? k * de - g.pad[2] : ((k * de) % se) * lp + (k * de) / se;

#pragma omp parallel if (macs(g) > kParallelMinWork)
  {
    std::vector<const T*> rowp(C * KX * KY), wrow(C * KX * KY);
    std::vector<int64_t> widx(C * KX * KY), twoff(KE);
    EdgeScratch<T> edge;
    const RowSource<T> src{rowp.data(), in_place ? E : -1, &edge};
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t ox = 0; ox < OX; ++ox)
        for (int64_t oy = 0; oy < OY; ++oy) {
          int64_t nr = 0;
          for_each_receptive_row(g, ox, oy, [&](int64_t c, int64_t kx, int64_t ky, int64_t xi, int64_t yi) {
            rowp[nr] = P + (((n * C + c) * X + xi) * Y + yi) * rowlen;
            widx[nr] = ((c * KX + kx) * KY + ky) * KE;
            ++nr;
          });
          for (const auto& [o0, cb] : blocks) {
            for (int64_t r = 0; r < nr; ++r) wrow[r] = wp.data() + o0 * K + widx[r] * cb;
            for (int64_t k = 0; k < KE; ++k) twoff[k] = k * cb;
            T* outp[8];
            for (int j = 0; j < cb; ++j) outp[j] = y + (((n * O + o0 + j) * OX + ox) * OY + oy) * OE;
            engine_dispatch<T>(cb, nr, src, wrow.data(), static_cast<int>(KE), toff.data(), twoff.data(),
                               bias ? bias + o0 : nullptr, OE, outp, 1);
          }
        }
  }
}

// dst[e] = sum_k u[k * ulen + e - k * de] for e < E (the combine step of the lifted grad_input).
template <class T>
void lift_combine(const T* u, int64_t ulen, int64_t KE, int64_t de, int64_t E, T* dst) {
  using V = typename VecOf<T>::type;
  constexpr int L = VecOf<T>::lanes;
  int64_t e = 0;
  for (; e + L <= E; e += L) {
    V acc = vload<V>(u + e);
    for (int64_t k = 1; k < KE; ++k) acc += vload<V>(u + k * ulen + e - k * de);
    vstore(dst + e, acc);
  }
  for (; e < E; ++e) {
    T acc = u[e];
    for (int64_t k = 1; k < KE; ++k) acc += u[k * ulen + e - k * de];
    dst[e] = acc;
  }
}

template <class T>
void grad_input_impl(const Geometry& g, const T* gy, const T* w, T* gx) {
  const int64_t N = g.n, C = g.c, O = g.o, X = g.in[0], Y = g.in[1], E = g.in[2];
  const int64_t KX = g.k[0], KY = g.k[1], KE = g.k[2], OX = g.out[0], OY = g.out[1], OE = g.out[2];
  const int64_t se = g.stride[2], de = g.dil[2], pe = g.pad[2];
  const int64_t K = O * KX * KY * KE;
  const auto blocks = channel_blocks(C);
  std::vector<T> wt(static_cast<size_t>(C * K));
  for (const auto& [c0, cb] : blocks)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t kk = 0; kk < KX * KY * KE; ++kk)
        for (int j = 0; j < cb; ++j) wt[c0 * K + (o * KX * KY * KE + kk) * cb + j] = w[(o * C + c0 + j) * KX * KY * KE + kk];
  // Few input channels (C * KE <= 8, unit stride along E), e.g. the first layer of a spectral CNN: with one channel
  // the engine would use each loaded vector for one multiply-add (and each load is unaligned). Instead lift the
  // taps into channels: per position, U[c * KE + k][q] = sum_rows w[row, c, k] * gy_row[q] (one 8-channel engine
  // pass, one offset, aligned), then gx[c][e] = sum_k U[c * KE + k][e + pad_e - k * dil_e], a cheap shift-and-add.
  const bool lift = se == 1 && KE > 1 && C * KE <= 8;
  constexpr int kLift = 8;
  std::vector<T> wl;
  if (lift) {
    wl.assign(static_cast<size_t>(O * KX * KY * kLift), T(0));
    for (int64_t o = 0; o < O; ++o)
      for (int64_t xy = 0; xy < KX * KY; ++xy)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t k = 0; k < KE; ++k)
            wl[(o * KX * KY + xy) * kLift + c * KE + k] = w[((o * C + c) * KX * KY + xy) * KE + k];
  }
  // U rows: [ml zeros | OE values | mr zeros], so that every shifted read of the combine step is inside.
  const int64_t ml = std::max<int64_t>(0, (KE - 1) * de - pe), mr = std::max<int64_t>(0, E + pe - OE) + 64;
  const int64_t ulen = round_up(ml + OE + mr, 16);
  // Taps of each phase r of grad_input: tap k feeds padded position j = e * se + k * de, so j % se == (k*de) % se.
  std::vector<std::vector<int64_t>> ptaps(se), poff(se);
  for (int64_t r = 0; r < se; ++r)
    for (int64_t k = 0; k < KE; ++k)
      if ((k * de) % se == r) {
        ptaps[r].push_back(k);
        poff[r].push_back(-((k * de - r) / se));
      }

#pragma omp parallel if (macs(g) > kParallelMinWork)
  {
    std::vector<const T*> rowp(O * KX * KY), wrow(O * KX * KY);
    std::vector<int64_t> widx(O * KX * KY), twoff(KE), toff(KE);
    // gy is read in place (taps reach up to (KE - 1) * dil_e / stride_e samples before a row start, and past its end)
    EdgeScratch<T> edge;
    const RowSource<T> src{rowp.data(), OE, &edge};
    std::vector<T> U(lift ? static_cast<size_t>(kLift * ulen) : 0, T(0));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t xi = 0; xi < X; ++xi)
        for (int64_t yi = 0; yi < Y; ++yi) {
          int64_t nr = 0;
          for (int64_t o = 0; o < O; ++o)
            for (int64_t kx = 0; kx < KX; ++kx) {
              const int64_t xn = xi + g.pad[0] - kx * g.dil[0];
              if (xn < 0 || xn % g.stride[0] != 0 || xn / g.stride[0] >= OX) continue;
              for (int64_t ky = 0; ky < KY; ++ky) {
                const int64_t yn = yi + g.pad[1] - ky * g.dil[1];
                if (yn < 0 || yn % g.stride[1] != 0 || yn / g.stride[1] >= OY) continue;
                rowp[nr] = gy + (((n * O + o) * OX + xn / g.stride[0]) * OY + yn / g.stride[1]) * OE;
                widx[nr] = ((o * KX + kx) * KY + ky) * KE;
                ++nr;
              }
            }
          if (lift) {
            T* outp[kLift];
            for (int j = 0; j < kLift; ++j) outp[j] = U.data() + j * ulen + ml;
            for (int64_t i = 0; i < nr; ++i) wrow[i] = wl.data() + widx[i] / KE * kLift;
            const int64_t zero = 0;
            engine_dispatch<T>(kLift, nr, src, wrow.data(), 1, &zero, &zero, nullptr, OE, outp, 1);
            for (int64_t c = 0; c < C; ++c) {
              T* dst = gx + (((n * C + c) * X + xi) * Y + yi) * E;
              const T* u = U.data() + c * KE * ulen + ml + pe;
              lift_combine<T>(u, ulen, KE, de, E, dst);
            }
            continue;
          }
          for (int64_t r = 0; r < se; ++r) {
            // phase r covers padded positions j = q * se + r with pe <= j < pe + E
            // no padded position of this phase lies inside the row (C++ division truncates toward zero, so the
            // negative case must be skipped before dividing)
            if (pe + E - 1 - r < 0) continue;
            const int64_t qlo = (pe - r + se - 1) / se, qhi = (pe + E - 1 - r) / se;
            if (qhi < qlo) continue;
            const int64_t count = qhi - qlo + 1, ebeg = qlo * se + r - pe;
            const int nt = static_cast<int>(ptaps[r].size());
            for (int t = 0; t < nt; ++t) toff[t] = poff[r][t] + qlo;
            for (const auto& [c0, cb] : blocks) {
              for (int64_t i = 0; i < nr; ++i) wrow[i] = wt.data() + c0 * K + widx[i] * cb;
              for (int t = 0; t < nt; ++t) twoff[t] = ptaps[r][t] * cb;
              T* outp[8];
              for (int j = 0; j < cb; ++j) outp[j] = gx + (((n * C + c0 + j) * X + xi) * Y + yi) * E + ebeg;
              engine_dispatch<T>(cb, nt > 0 ? nr : 0, src, wrow.data(), nt, toff.data(), twoff.data(),
                                 nullptr, count, outp, se);
            }
          }
        }
  }
}

// grad_weight register block: OB output channels x KT taps, one E-vector at a time, accumulated in registers over
// `nseg` (gradient rows, input row) segments (the same kernel offset at several output positions), then added to
// `acc` once. Gradient vector v of channel j of segment s: at seg_g[s] + (v * OB + j) * L when IL (interleaved copy:
// one base pointer and constant offsets, which keeps the loop's address registers few), else seg_g[s] + j * lg + v * L.
template <class T, int OB, int KT, bool IL>
void gw_row(int nseg, const T* const* seg_g, int64_t lg, const T* const* seg_x, const int64_t* toff, int64_t nvec,
            T* acc, const T* pf_row) {
  using V = typename VecOf<T>::type;
  constexpr int L = VecOf<T>::lanes;
  V a[KT][OB];
#pragma GCC unroll 8
  for (int t = 0; t < KT; ++t)
#pragma GCC unroll 8
    for (int j = 0; j < OB; ++j) a[t][j] = V{};
  for (int s = 0; s < nseg; ++s) {
    const T* grow = seg_g[s];
    const T* prow = seg_x[s];
    // The next input row comes from L2 (a position's rows exceed L1): fetch it one line per step.
    const T* pf = s + 1 < nseg ? seg_x[s + 1] + toff[0] : pf_row;
    for (int64_t v = 0; v < nvec; ++v) {
      if (pf) __builtin_prefetch(pf + v * L);
      // KT input vectors stay in registers; each gradient vector is loaded once for KT multiply-adds.
      V pv[KT];
#pragma GCC unroll 8
      for (int t = 0; t < KT; ++t) pv[t] = vload<V>(prow + toff[t] + v * L);
#pragma GCC unroll 8
      for (int j = 0; j < OB; ++j) {
        const V gv = vload<V>(IL ? grow + (v * OB + j) * L : grow + j * lg + v * L);
#pragma GCC unroll 8
        for (int t = 0; t < KT; ++t) a[t][j] += gv * pv[t];
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < KT; ++t)
#pragma GCC unroll 8
    for (int j = 0; j < OB; ++j) {
      T* dst = acc + (t * OB + j) * L;
      vstore(dst, vload<V>(dst) + a[t][j]);
    }
}

// Taps per pass for OB output channels: OB * KT accumulators plus KT + 1 live vectors must fit the registers.
constexpr int kt_max(int ob) { return kRegs >= 32 ? (ob == 8 ? 3 : 6) : (ob == 8 ? 1 : ob == 4 ? 2 : 7); }
constexpr int kMaxOB = 8;

template <class T, int OB, bool IL>
void gw_taps(int kt, int nseg, const T* const* seg_g, int64_t lg, const T* const* seg_x, const int64_t* toff,
             int64_t nvec, T* acc, const T* pf_row) {
#define LOGLIK_GW_CASE(K)                                                                 \
  if constexpr (kt_max(OB) >= K)                                                          \
    if (kt == K) return gw_row<T, OB, K, IL>(nseg, seg_g, lg, seg_x, toff, nvec, acc, pf_row);
  LOGLIK_GW_CASE(7)
  LOGLIK_GW_CASE(6)
  LOGLIK_GW_CASE(5)
  LOGLIK_GW_CASE(4)
  LOGLIK_GW_CASE(3)
  LOGLIK_GW_CASE(2)
#undef LOGLIK_GW_CASE
  gw_row<T, OB, 1, IL>(nseg, seg_g, lg, seg_x, toff, nvec, acc, pf_row);
}

// gw_taps for a run-time channel-block width ob (8, 4 or 1).
template <class T, bool IL>
void gw_block(int ob, int kt, int nseg, const T* const* seg_g, int64_t lg, const T* const* seg_x, const int64_t* toff,
              int64_t nvec, T* acc, const T* pf_row) {
  if (ob == 8)
    gw_taps<T, 8, IL>(kt, nseg, seg_g, lg, seg_x, toff, nvec, acc, pf_row);
  else if (ob == 4)
    gw_taps<T, 4, IL>(kt, nseg, seg_g, lg, seg_x, toff, nvec, acc, pf_row);
  else
    gw_taps<T, 1, IL>(kt, nseg, seg_g, lg, seg_x, toff, nvec, acc, pf_row);
}

template <class T>
void grad_weight_impl(const Geometry& g, const T* x, const T* gy, T* gw) {
  constexpr int L = VecOf<T>::lanes;
  const int64_t N = g.n, C = g.c, O = g.o, X = g.in[0], Y = g.in[1];
  const int64_t KX = g.k[0], KY = g.k[1], KE = g.k[2], OX = g.out[0], OY = g.out[1], OE = g.out[2];
  const int64_t se = g.stride[2], de = g.dil[2];
  const int64_t lp = fwd_phase_len<T>(g), rowlen = se * lp;
  const auto Pbuf = phase_split(g, x, lp);
  const T* P = Pbuf->data();
  std::vector<int64_t> toff(KE);
  for (int64_t k = 0; k < KE; ++k) toff[k] = ((k * de) % se) * lp + (k * de) / se;

  // Output-channel blocks: 8 wide when all taps fit one pass of 8 (few taps, e.g. 3x3x3), else 4; then 1.
  const int wide = KE <= kt_max(8) ? 8 : 4;
  std::vector<std::pair<int64_t, int>> oblocks;
  for (int64_t o = 0; o < O;) {
    const int w = O - o >= wide ? wide : O - o >= 4 ? 4 : 1;
    oblocks.emplace_back(o, w);
    o += w;
  }
  // A task = (channel block, chunk of output positions), with private accumulators [(c, kx, ky)][ke][j][lane].
  const int64_t npos = N * OX * OY;
  const int64_t nthreads = omp_get_max_threads();
  const int64_t nb = static_cast<int64_t>(oblocks.size());
  const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>(npos, (2 * nthreads + nb - 1) / nb));
  const int64_t accsz = C * KX * KY * KE * kMaxOB * L;
  std::vector<T> acc(static_cast<size_t>(nb * nchunks * accsz), T(0));
  // Positions are taken S at a time: their gradient rows are copied into one small buffer, vectors of the OB channels
  // interleaved (in place, the rows of neighbouring output channels lie a multiple of 4 KiB apart and evict each
  // other from the same L1 sets; interleaved, one base pointer serves all OB loads),
  // and each kernel offset's accumulators stay in registers across the S positions (S times less accumulator
  // traffic; the S input rows of consecutive positions are neighbours in memory).
  // With few rows per position (one input channel: 3x3 rows) the copy is not repaid; there gy is read in place when
  // its rows are whole vectors (measured 1 -> 16 channels, 3x3x7: 26 ms in place vs 30 ms with the copy).
  const bool g_in_place = OE % L == 0 && C * KX * KY <= 16;
  const int64_t nvec = (OE + L - 1) / L, lg = g_in_place ? OX * OY * OE : nvec * L;
  const int64_t group_bytes = wide * nvec * L * static_cast<int64_t>(sizeof(T));  // one position's gradient rows
  const int64_t S = std::clamp<int64_t>((int64_t(24) << 10) / group_bytes, 1, 8);

#pragma omp parallel if (macs(g) > kParallelMinWork)
  {
    std::vector<T> gbuf(g_in_place ? 0 : static_cast<size_t>(S * kMaxOB * lg));
    std::vector<const T*> gpos(S);
    std::vector<const T*> seg_g(static_cast<size_t>(C * KX * KY * S)), seg_x(seg_g.size());
    std::vector<int> nseg(C * KX * KY);
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t ch = 0; ch < nchunks; ++ch) {
        const auto [o0, ob] = oblocks[b];
        T* A = acc.data() + (b * nchunks + ch) * accsz;
        const int64_t p0 = npos * ch / nchunks, p1 = npos * (ch + 1) / nchunks;
        const int64_t ktm0 = kt_max(ob), nchunk_k = (KE + ktm0 - 1) / ktm0;
        const int64_t ktm = (KE + nchunk_k - 1) / nchunk_k;  // balanced tap chunks: 7 taps -> 4 + 3
        for (int64_t q = p0; q < p1; q += S) {
          const int64_t ns = std::min(S, p1 - q);
          std::fill(nseg.begin(), nseg.end(), 0);
          for (int64_t s = 0; s < ns; ++s) {
            const int64_t p = q + s, n = p / (OX * OY), ox = (p / OY) % OX, oy = p % OY;
            const T* g0 = gy + (((n * O + o0) * OX + ox) * OY + oy) * OE;
            if (g_in_place) {
              gpos[s] = g0;
            } else {
              T* gb = gbuf.data() + s * ob * lg;  // interleaved: [v][j][lane]
              for (int j = 0; j < ob; ++j) {
                const T* src = g0 + j * OX * OY * OE;
                for (int64_t v = 0; v < nvec; ++v) {
                  T* d = gb + (v * ob + j) * L;
                  const int64_t m = std::min<int64_t>(L, OE - v * L);
                  std::memcpy(d, src + v * L, static_cast<size_t>(m) * sizeof(T));
                  std::fill(d + m, d + L, T(0));
                }
              }
              gpos[s] = gb;
            }
            for_each_receptive_row(g, ox, oy, [&](int64_t c, int64_t kx, int64_t ky, int64_t xi, int64_t yi) {
              const int64_t r = (c * KX + kx) * KY + ky;
              seg_x[r * S + nseg[r]] = P + (((n * C + c) * X + xi) * Y + yi) * rowlen;
              seg_g[r * S + nseg[r]] = gpos[s];
              nseg[r]++;
            });
          }
          const int64_t R = C * KX * KY;
          for (int64_t r = 0; r < R; ++r) {
            if (!nseg[r]) continue;
            const T* pf_row = nullptr;
            for (int64_t r2 = r + 1; r2 < R && !pf_row; ++r2)
              if (nseg[r2]) pf_row = seg_x[r2 * S] + toff[0];
            T* a = A + r * KE * kMaxOB * L;
            for (int64_t k0 = 0; k0 < KE; k0 += ktm) {
              const int kt = static_cast<int>(std::min<int64_t>(ktm, KE - k0));
              T* ak = a + k0 * ob * L;
              const int64_t* tk = toff.data() + k0;
              const T* pf = k0 + ktm >= KE ? pf_row : nullptr;
              const T* const* sg = seg_g.data() + r * S;
              const T* const* sx = seg_x.data() + r * S;
              if (g_in_place)
                gw_block<T, false>(ob, kt, nseg[r], sg, lg, sx, tk, nvec, ak, pf);
              else
                gw_block<T, true>(ob, kt, nseg[r], sg, lg, sx, tk, nvec, ak, pf);
            }
          }
        }
      }
  }
  // Reduce chunks and lanes: gw[o0 + j, c, kx, ky, ke].
  const int64_t CK = C * KX * KY;
#pragma omp parallel for collapse(2) schedule(static) if (nb * CK * KE * nchunks * L > kParallelMinWork)
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t ck = 0; ck < CK; ++ck) {
      const auto [o0, ob] = oblocks[b];
      for (int64_t k = 0; k < KE; ++k)
        for (int j = 0; j < ob; ++j) {
          T s = 0;
          for (int64_t ch = 0; ch < nchunks; ++ch) {
            const T* a = acc.data() + (b * nchunks + ch) * accsz + ck * KE * kMaxOB * L + (k * ob + j) * L;
            for (int l = 0; l < L; ++l) s += a[l];
          }
          gw[((o0 + j) * CK + ck) * KE + k] = s;
        }
    }
}

}  // namespace loglik::conv3d::LOGLIK_CONV3D_ISA
#endif  // LOGLIK_CONV3D_ISA
