// Row reductions of the language-model log-likelihood core: for each row of a logits chunk (one token, V vocabulary
// entries) compute the log-sum-exp pieces, the target logit and the entropy pieces, and optionally write the softmax
// gradient in place. The matrix products that produce the chunk (hidden @ weight^T) and consume the gradient
// (dlogits @ weight, dlogits^T @ hidden) are done by the caller with the framework's GEMM; these kernels are the
// memory-bound part between them, so every row is streamed at most three times while it sits in L2.
//
// Logit transform (applied to a raw logit x, in this order):  z = softcap * tanh(x / softcap)   (if softcap > 0)
//                                                             z = z * inv_temp                  (inv_temp = 1/T)
// Per-row statistics, stats[r * 5 + k]:
//   k=0 max m = max_j z_j,   k=1 sumexp s = sum_j exp(z_j - m),   k=2 target logit z_t (0 when t is not in this
//   vocabulary slice),   k=3 sum_j z_j (label smoothing),   k=4 sum_j exp(z_j - m) * (z_j - m) (entropy).
// With lse = m + log s and E[z] = m + stats4 / s:  log p_t = z_t - lse,  entropy H = lse - E[z].
// Slices of the vocabulary (vocab-parallel) combine exactly: see loglik.lm._combine_stats.
//
// Gradient written for each vocabulary entry j (p_j = exp(z_j - lse)), from five per-row coefficients
// coef[r * 5 + 0..4] = (a0, zl, b, c, g):
//   dL/dz_j = p_j * (a0 + 2 * zl * lse + c * (z_j - E[z])) + b * [j == t] + g
//   dL/dx_j = dL/dz_j * inv_temp * (1 - tanh^2(x_j / softcap))          (the last factor only with softcap)
// This covers cross-entropy with weights, label smoothing and z-loss (a0 = w, zl = w * z_loss, b = -w (1 - eps),
// g = -w eps / V), log-prob/lse upstream gradients (a0 = g_lse - g_lp, b = g_lp) and the entropy (c = -g_H).
// Rows whose target equals ignore_index get their true statistics (target logit 0) and a zero gradient row.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace loglik::lm {

// The row kernels are force-inlined so that each CPU-specific wrapper in csrc/cpu/logprobs.cpp (AVX-512, AVX2)
// compiles the whole loop nest for its instruction set; a plain `inline` may stay an out-of-line baseline copy.
#if defined(__GNUC__)
#define LOGLIK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LOGLIK_ALWAYS_INLINE inline
#endif

// ---------------------------------------------------------------------------------------------------------------
// Scalar math that GCC vectorizes inside `omp simd` loops (branch-free, no libm calls for float).
template <class T>
struct fastmath;

template <>
struct fastmath<float> {
  // exp with Cody-Waite range reduction and the Cephes minimax polynomial (about 1 ulp on the reduced range).
  static LOGLIK_ALWAYS_INLINE float exp(float x) {
    const float xc = std::min(std::max(x, -87.0f), 88.0f);
    // Round to nearest with the 1.5 * 2^23 trick (no SSE4.1 round instruction needed in the portable build).
    const float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    const float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    // Inputs below -87 give exp(-87) ~ 1.6e-38 instead of 0: a normal float, harmless, and branch-free.
    return p * __builtin_bit_cast(float, bits);
  }
  // tanh(y) = sign(y) (1 - 2 / (exp(2|y|) + 1)); absolute error ~1e-7, which is what a float logit can hold.
  static LOGLIK_ALWAYS_INLINE float tanh(float y) {
    const float a = std::fabs(y);
    const float e = exp(std::min(2.0f * a, 88.0f));
    const float t = 1.0f - 2.0f / (e + 1.0f);
    return std::copysign(t, y);
  }
};

template <>
struct fastmath<double> {
  static inline double exp(double x) { return std::exp(x); }
  static inline double tanh(double y) { return std::tanh(y); }
};

template <class T>
struct Transform {
  T inv_temp;
  T softcap;  // <= 0 means no softcap
  bool capped() const { return softcap > T(0); }
  template <bool kCap>
  LOGLIK_ALWAYS_INLINE T apply(T x) const {
    if constexpr (kCap) return softcap * fastmath<T>::tanh(x / softcap) * inv_temp;
    return x * inv_temp;
  }
  T operator()(T x) const { return capped() ? apply<true>(x) : apply<false>(x); }
  // dz/dx expressed through z itself (tanh(x / c) = z / (inv_temp * c)).
  template <bool kCap>
  LOGLIK_ALWAYS_INLINE T deriv(T z) const {
    if constexpr (!kCap) return inv_temp;
    const T t = z / (inv_temp * softcap);
    return inv_temp * (T(1) - t * t);
  }
  T deriv_from_z(T z) const { return capped() ? deriv<true>(z) : deriv<false>(z); }
};

// ---------------------------------------------------------------------------------------------------------------
// One row. `x` holds raw logits when `transform` is true, already-transformed logits z otherwise. If `zout` is not
// null the transformed logits are stored there (it may alias x). `t` is the local target index or -1.
// Sums run over blocks of kBlock entries that are added in double, so the float error stays ~kBlock/lanes ulps.
constexpr int64_t kBlock = 1024;

// Mode: 0 = x already transformed, 1 = transform without cap, 2 = transform with softcap.
template <int kMode, class T>
LOGLIK_ALWAYS_INLINE T row_z(const Transform<T>& tr, T x) {
  if constexpr (kMode == 0) return x;
  if constexpr (kMode == 1) return tr.template apply<false>(x);
  return tr.template apply<true>(x);
}

template <int kMode, class T>
LOGLIK_ALWAYS_INLINE void row_stats_impl(const T* x, T* zout, int64_t V, int64_t t, const Transform<T>& tr, T* st) {
  T m = -std::numeric_limits<T>::infinity();
  double sumz = 0.0;
  if (kMode == 0 && zout != nullptr && zout != x) std::memcpy(zout, x, sizeof(T) * static_cast<size_t>(V));
  const bool store = kMode != 0 && zout != nullptr;
  for (int64_t j0 = 0; j0 < V; j0 += kBlock) {
    const int64_t j1 = std::min(V, j0 + kBlock);
    T bm = -std::numeric_limits<T>::infinity();
    T bz = T(0);
    if (store) {
#pragma omp simd reduction(max : bm) reduction(+ : bz)
      for (int64_t j = j0; j < j1; ++j) {
        const T z = row_z<kMode>(tr, x[j]);
        zout[j] = z;
        bm = std::max(bm, z);
        bz += z;
      }
    } else {
#pragma omp simd reduction(max : bm) reduction(+ : bz)
      for (int64_t j = j0; j < j1; ++j) {
        const T z = row_z<kMode>(tr, x[j]);
        bm = std::max(bm, z);
        bz += z;
      }
    }
    m = std::max(m, bm);
    sumz += static_cast<double>(bz);
  }
  double s = 0.0, se = 0.0;
  for (int64_t j0 = 0; j0 < V; j0 += kBlock) {
    const int64_t j1 = std::min(V, j0 + kBlock);
    T bs = T(0), bse = T(0);
    if (store) {
#pragma omp simd reduction(+ : bs, bse)
      for (int64_t j = j0; j < j1; ++j) {
        const T d = zout[j] - m;
        const T e = fastmath<T>::exp(d);
        bs += e;
        bse += e * d;
      }
    } else {
#pragma omp simd reduction(+ : bs, bse)
      for (int64_t j = j0; j < j1; ++j) {
        const T d = row_z<kMode>(tr, x[j]) - m;
        const T e = fastmath<T>::exp(d);
        bs += e;
        bse += e * d;
      }
    }
    s += static_cast<double>(bs);
    se += static_cast<double>(bse);
  }
  st[0] = m;
  st[1] = static_cast<T>(s);
  st[2] = t < 0 ? T(0) : (store ? zout[t] : row_z<kMode>(tr, x[t]));  // x may alias zout
  st[3] = static_cast<T>(sumz);
  st[4] = static_cast<T>(se);
}

template <class T>
LOGLIK_ALWAYS_INLINE void row_stats(const T* x, T* zout, int64_t V, int64_t t, const Transform<T>& tr, bool transform, T* st) {
  if (!transform)
    row_stats_impl<0>(x, zout, V, t, tr, st);
  else if (tr.capped())
    row_stats_impl<2>(x, zout, V, t, tr, st);
  else
    row_stats_impl<1>(x, zout, V, t, tr, st);
}

template <int kMode, bool kCap, class T>
LOGLIK_ALWAYS_INLINE void row_grad_impl(const T* x, T* dx, int64_t V, int64_t t, const Transform<T>& tr, T lse, T ez,
                          const T* coef) {
  const T a = coef[0] + T(2) * coef[1] * lse;
  const T b = coef[2], c = coef[3], g = coef[4];
  const T zt = t >= 0 ? row_z<kMode>(tr, x[t]) : T(0);
#pragma omp simd
  for (int64_t j = 0; j < V; ++j) {
    const T z = row_z<kMode>(tr, x[j]);
    const T p = fastmath<T>::exp(z - lse);
    dx[j] = (p * (a + c * (z - ez)) + g) * tr.template deriv<kCap>(z);
  }
  if (t >= 0) dx[t] += b * tr.template deriv<kCap>(zt);
}

// Writes dL/dx for one row into dx (may alias x). `lse` and `ez` (= E[z]) are the row's global statistics.
template <class T>
LOGLIK_ALWAYS_INLINE void row_grad(const T* x, T* dx, int64_t V, int64_t t, const Transform<T>& tr, bool transform, T lse, T ez,
                     const T* coef) {
  const bool cap = tr.capped();
  if (!transform)
    cap ? row_grad_impl<0, true>(x, dx, V, t, tr, lse, ez, coef) : row_grad_impl<0, false>(x, dx, V, t, tr, lse, ez, coef);
  else if (cap)
    row_grad_impl<2, true>(x, dx, V, t, tr, lse, ez, coef);
  else
    row_grad_impl<1, false>(x, dx, V, t, tr, lse, ez, coef);
}

// The row functions used by the chunk drivers; an implementation file can substitute CPU-dispatched versions.
template <class T>
struct GenericRows {
  static void stats(const T* x, T* zout, int64_t V, int64_t t, const Transform<T>& tr, bool transform, T* st) {
    row_stats(x, zout, V, t, tr, transform, st);
  }
  static void grad(const T* x, T* dx, int64_t V, int64_t t, const Transform<T>& tr, bool transform, T lse, T ez,
                   const T* coef) {
    row_grad(x, dx, V, t, tr, transform, lse, ez, coef);
  }
};

inline int64_t local_target(int64_t target, int64_t vocab_start, int64_t V) {
  const int64_t t = target - vocab_start;
  return (t >= 0 && t < V) ? t : -1;
}

// ---------------------------------------------------------------------------------------------------------------
// Chunk drivers (rows in parallel; dynamic schedule so a thread slowed by another process does not hold the
// barrier on a shared machine). x/z/dx are row-major [rows, V] with leading dimension ld. inv_temp_rows may be
// null (then inv_temp is used for every row).
template <class T, class Rows = GenericRows<T>>
void chunk_stats(const T* x, T* zout, int64_t rows, int64_t V, int64_t ld, const int64_t* targets, int64_t vocab_start,
                 int64_t ignore_index, const T* inv_temp_rows, T inv_temp, T softcap, bool transform, T* stats) {
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t r = 0; r < rows; ++r) {
    T* st = stats + 5 * r;
    const Transform<T> tr{inv_temp_rows != nullptr ? inv_temp_rows[r] : inv_temp, softcap};
    const int64_t t = targets[r] == ignore_index ? -1 : local_target(targets[r], vocab_start, V);
    Rows::stats(x + r * ld, zout != nullptr ? zout + r * ld : nullptr, V, t, tr, transform, st);
  }
}

// lse_ez[r * 2 + 0] = lse, [r * 2 + 1] = E[z]; coef as in the header comment.
template <class T, class Rows = GenericRows<T>>
void chunk_grad(const T* x, T* dx, int64_t rows, int64_t V, int64_t ld, const int64_t* targets, int64_t vocab_start,
                int64_t ignore_index, const T* inv_temp_rows, T inv_temp, T softcap, bool transform, const T* lse_ez,
                const T* coef) {
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t r = 0; r < rows; ++r) {
    T* d = dx + r * ld;
    if (targets[r] == ignore_index) {
      std::fill(d, d + V, T(0));
      continue;
    }
    const Transform<T> tr{inv_temp_rows != nullptr ? inv_temp_rows[r] : inv_temp, softcap};
    Rows::grad(x + r * ld, d, V, local_target(targets[r], vocab_start, V), tr, transform, lse_ez[2 * r],
             lse_ez[2 * r + 1], coef + 5 * r);
  }
}

// Single-shard fused pass: raw logits in `buf` -> stats, then the gradient overwrites `buf` (the row is still in
// cache). With write_grad false only the stats are computed (buf then holds the transformed logits).
template <class T, class Rows = GenericRows<T>>
void chunk_fused(T* buf, int64_t rows, int64_t V, int64_t ld, const int64_t* targets, int64_t ignore_index,
                 const T* inv_temp_rows, T inv_temp, T softcap, T* stats, const T* coef, bool write_grad) {
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t r = 0; r < rows; ++r) {
    T* st = stats + 5 * r;
    T* row = buf + r * ld;
    const Transform<T> tr{inv_temp_rows != nullptr ? inv_temp_rows[r] : inv_temp, softcap};
    const bool ignored = targets[r] == ignore_index;
    const int64_t t = ignored ? -1 : local_target(targets[r], 0, V);
    Rows::stats(row, row, V, t, tr, true, st);
    if (write_grad && ignored) {
      std::fill(row, row + V, T(0));
    } else if (write_grad) {
      const T lse = st[0] + std::log(st[1]);
      const T ez = st[0] + st[4] / st[1];
      Rows::grad(row, row, V, t, tr, false, lse, ez, coef + 5 * r);
    }
  }
}

// Instantiated in csrc/cpu/logprobs.cpp for float and double (float rows dispatch to AVX-512/AVX2 at run time).
#define LOGLIK_LM_DECLARE(T)                                                                                        \
  void lm_chunk_stats(const T* x, T* zout, int64_t rows, int64_t V, int64_t ld, const int64_t* targets,            \
                      int64_t vocab_start, int64_t ignore_index, const T* inv_temp_rows, T inv_temp, T softcap,     \
                      bool transform, T* stats);                                                                    \
  void lm_chunk_grad(const T* x, T* dx, int64_t rows, int64_t V, int64_t ld, const int64_t* targets,               \
                     int64_t vocab_start, int64_t ignore_index, const T* inv_temp_rows, T inv_temp, T softcap,      \
                     bool transform, const T* lse_ez, const T* coef);                                               \
  void lm_chunk_fused(T* buf, int64_t rows, int64_t V, int64_t ld, const int64_t* targets, int64_t ignore_index,   \
                      const T* inv_temp_rows, T inv_temp, T softcap, T* stats, const T* coef, bool write_grad);
LOGLIK_LM_DECLARE(float)
LOGLIK_LM_DECLARE(double)
#undef LOGLIK_LM_DECLARE

}  // namespace loglik::lm
