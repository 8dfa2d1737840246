// Gaussian kernel density estimate: log-density and score at M query points from N samples in D dimensions, as
// one streaming log-sum-exp reduction over the samples (never an M x N buffer).
//
//   l_j(x)      = log w_j - ||x - s_j||^2 / (2 h^2)                   (log weights normalised: sum_j w_j = 1)
//   logpdf(x)   = logsumexp_j l_j(x) - (D/2) log(2 pi h^2)
//   score(x)    = grad_x logpdf(x) = (sum_j softmax_j(l) s_j - x) / h^2
//
// Layout: the samples are copied once into a structure-of-arrays [D][N_pad] (N_pad a multiple of 16, padding with
// log weight -inf) so that the inner loops run over contiguous samples: pass 1 computes a block of logits with D
// subtract/FMA per pair and the block maximum, pass 2 rescales the running (max, sum, weighted sum) state once per
// block and accumulates exp(l - max) and exp(l - max) s_j. exp is a branch-free Cody-Waite + polynomial that the
// compiler vectorises; arguments below -87 (float) / -708 (double) are clamped there, i.e. a term contributes at
// most 1.6e-38 / 3e-308 next to the block's maximum term 1, far below rounding. Block partial sums are kept in T and
// folded into double accumulators, so float32 results carry float32 rounding of single terms only.
//
// The distance is computed in the direct form (x - s)^2 rather than ||x||^2 - 2 x.s + ||s||^2: for D <= ~16 the
// cost is the same order (D subtract + D FMA per pair) and it has no cancellation when the bandwidth is small
// compared with the spread of the data. Far-away queries are handled by the max subtraction (no 0/0).
//
// This header has no Python dependency. kde_reduce() runs the portable (baseline ISA) kernel unless a caller passes
// a faster block function (csrc/cpu/kde_score.cpp passes AVX2 / AVX-512 builds of the same code chosen at run time).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__GNUC__)
#define LOGLIK_KDE_INLINE inline __attribute__((always_inline))
#else
#define LOGLIK_KDE_INLINE inline
#endif

namespace loglik::kde {

constexpr int64_t kLanes = 16;       // padding granularity of the sample axis (one AVX-512 float vector)
constexpr int64_t kBlock = 1024;     // samples per block: logits of one block stay in L1
constexpr int64_t kQueryChunk = 8;   // queries per OpenMP work item

// a * b + c; fused into one FMA where the target has it (-ffp-contract=fast), a plain multiply-add otherwise (std::fma
// would be a slow library call on a baseline x86-64 build). Nothing below needs the fused rounding.
template <class T>
LOGLIK_KDE_INLINE T madd(T a, T b, T c) {
  return a * b + c;
}

// exp(x) for x <= 0 (the only case the reduction needs), branch-free so that loops over it vectorise.
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then a polynomial for e^r and 2^n built in the exponent bits.
LOGLIK_KDE_INLINE float exp_nonpos(float x) {
  const float xc = std::max(x, -87.0f);  // exp(-87) = 1.6e-38 is negligible next to the max term 1
  const float t = xc * 1.44269504088896341f;
  const float shifted = t + 12582912.0f;  // 1.5 * 2^23: rounds t to an integer held in the low mantissa bits
  const float n = shifted - 12582912.0f;
  const int32_t ni = __builtin_bit_cast(int32_t, shifted) - __builtin_bit_cast(int32_t, 12582912.0f);
  float r = madd(n, -0.693359375f, xc);
  r = madd(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;  // minimax coefficients of (e^r - 1 - r) / r^2 on [-ln2/2, ln2/2]
  p = madd(p, r, 1.3981999507e-3f);
  p = madd(p, r, 8.3334519073e-3f);
  p = madd(p, r, 4.1665795894e-2f);
  p = madd(p, r, 1.6666665459e-1f);
  p = madd(p, r, 5.0000001201e-1f);
  const float y = madd(p, r * r, r) + 1.0f;
  const int32_t bits = (ni + 127) << 23;
  const float scale = __builtin_bit_cast(float, bits);
  return y * scale;
}

LOGLIK_KDE_INLINE double exp_nonpos(double x) {
  const double xc = std::max(x, -708.0);  // exp(-708) = 3e-308
  const double t = xc * 1.4426950408889634074;
  const double shifted = t + 6755399441055744.0;  // 1.5 * 2^52 (integer conversion without a cvt instruction)
  const double n = shifted - 6755399441055744.0;
  const int64_t ni = __builtin_bit_cast(int64_t, shifted) - __builtin_bit_cast(int64_t, 6755399441055744.0);
  double r = madd(n, -6.93147180369123816490e-01, xc);
  r = madd(n, -1.90821492927058770002e-10, r);
  // Taylor series of e^r to degree 13: truncation error < 2e-17 for |r| <= ln2/2.
  double p = 1.0 / 6227020800.0;
  p = madd(p, r, 1.0 / 479001600.0);
  p = madd(p, r, 1.0 / 39916800.0);
  p = madd(p, r, 1.0 / 3628800.0);
  p = madd(p, r, 1.0 / 362880.0);
  p = madd(p, r, 1.0 / 40320.0);
  p = madd(p, r, 1.0 / 5040.0);
  p = madd(p, r, 1.0 / 720.0);
  p = madd(p, r, 1.0 / 120.0);
  p = madd(p, r, 1.0 / 24.0);
  p = madd(p, r, 1.0 / 6.0);
  p = madd(p, r, 0.5);
  const double y = madd(p, r * r, r) + 1.0;
  const int64_t bits = (ni + 1023) << 52;
  const double scale = __builtin_bit_cast(double, bits);
  return y * scale;
}

// Samples in the layout the kernel streams over.
template <class T>
struct Prepared {
  int64_t n = 0, n_pad = 0, d = 0;
  std::vector<T> s_t;   // [d][n_pad], sample-major rows per dimension
  std::vector<T> bias;  // [n_pad], normalised log weights; -inf for padding
  T coef = 0;           // -1 / (2 h^2)
  double inv_h2 = 0;    // 1 / h^2
  double log_norm = 0;  // -(d/2) log(2 pi h^2)
};

template <class T>
Prepared<T> prepare(const T* samples, int64_t n, int64_t d, const T* log_weights, double bandwidth) {
  Prepared<T> P;
  P.n = n;
  P.d = d;
  P.n_pad = (n + kLanes - 1) / kLanes * kLanes;
  P.s_t.assign(static_cast<size_t>(d * P.n_pad), T(0));
  P.bias.assign(static_cast<size_t>(P.n_pad), -std::numeric_limits<T>::infinity());
  const T uniform = static_cast<T>(-std::log(static_cast<double>(n)));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t k = 0; k < d; ++k) P.s_t[k * P.n_pad + j] = samples[j * d + k];
    P.bias[j] = log_weights ? log_weights[j] : uniform;
  }
  const double h2 = bandwidth * bandwidth;
  P.coef = static_cast<T>(-0.5 / h2);
  P.inv_h2 = 1.0 / h2;
  // log of (2 pi h^2)^(-d/2) without forming h^2, which overflows for h > ~1e154
  P.log_norm = -0.5 * static_cast<double>(d) * (std::log(2.0 * M_PI) + 2.0 * std::log(bandwidth));
  return P;
}

// Running state of the reduction for one query: (max, sum, weighted sums[d]); the merge of two states is exact.
// One query against the samples [j_lo, j_hi) (multiples of kBlock, or n_pad). DC > 0: compile-time dimension
// (unrolled); DC == 0: runtime dimension. With state == nullptr the result is finalised into score / logpdf;
// otherwise the partial state (max, sum, acc[0..d)) is written to state for a later merge.
template <class T, int DC>
LOGLIK_KDE_INLINE void one_query(const Prepared<T>& P, const T* x, int64_t j_lo, int64_t j_hi, T* lbuf, double* acc,
                                 T* score, T* logpdf, double* state) {
  const int64_t d = DC > 0 ? DC : P.d;
  const int64_t n_pad = P.n_pad;
  const T* s_t = P.s_t.data();
  const T* bias = P.bias.data();
  const T coef = P.coef;
  double run_max = -std::numeric_limits<double>::infinity();
  double run_sum = 0.0;
  for (int64_t k = 0; k < d; ++k) acc[k] = 0.0;

  for (int64_t j0 = j_lo; j0 < j_hi; j0 += kBlock) {
    const int64_t nb = std::min(kBlock, j_hi - j0);
    // pass 1: logits of the block and their maximum
    T bmax = -std::numeric_limits<T>::infinity();
    if constexpr (DC > 0) {
      T xs[DC > 0 ? DC : 1];
      for (int k = 0; k < DC; ++k) xs[k] = x[k];
#pragma omp simd reduction(max : bmax)
      for (int64_t j = 0; j < nb; ++j) {
        T dist = 0;
        for (int k = 0; k < DC; ++k) {
          const T diff = xs[k] - s_t[k * n_pad + j0 + j];
          dist = madd(diff, diff, dist);
        }
        const T l = madd(coef, dist, bias[j0 + j]);
        lbuf[j] = l;
        bmax = std::max(bmax, l);
      }
    } else {
      for (int64_t j = 0; j < nb; ++j) lbuf[j] = 0;
      for (int64_t k = 0; k < d; ++k) {
        const T xk = x[k];
        const T* sk = s_t + k * n_pad + j0;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) {
          const T diff = xk - sk[j];
          lbuf[j] = madd(diff, diff, lbuf[j]);
        }
      }
#pragma omp simd reduction(max : bmax)
      for (int64_t j = 0; j < nb; ++j) {
        const T l = madd(coef, lbuf[j], bias[j0 + j]);
        lbuf[j] = l;
        bmax = std::max(bmax, l);
      }
    }
    if (!(bmax > -std::numeric_limits<T>::infinity())) continue;  // a block of padding only
    if (bmax > run_max) {
      const double scale = std::exp(run_max - static_cast<double>(bmax));  // 0 on the first block
      run_sum *= scale;
      for (int64_t k = 0; k < d; ++k) acc[k] *= scale;
      run_max = bmax;
    }
    const T m = static_cast<T>(run_max);
    // pass 2: exp(l - max), its sum and the weighted sums of the samples
    T bsum = 0;
    if constexpr (DC > 0) {
      T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : bsum, a0, a1, a2, a3)
      for (int64_t j = 0; j < nb; ++j) {
        const T p = exp_nonpos(lbuf[j] - m);
        bsum += p;
        a0 = madd(p, s_t[j0 + j], a0);
        if constexpr (DC > 1) a1 = madd(p, s_t[n_pad + j0 + j], a1);
        if constexpr (DC > 2) a2 = madd(p, s_t[2 * n_pad + j0 + j], a2);
        if constexpr (DC > 3) a3 = madd(p, s_t[3 * n_pad + j0 + j], a3);
      }
      acc[0] += a0;
      if constexpr (DC > 1) acc[1] += a1;
      if constexpr (DC > 2) acc[2] += a2;
      if constexpr (DC > 3) acc[3] += a3;
    } else {
#pragma omp simd reduction(+ : bsum)
      for (int64_t j = 0; j < nb; ++j) {
        const T p = exp_nonpos(lbuf[j] - m);
        lbuf[j] = p;
        bsum += p;
      }
      for (int64_t k = 0; k < d; ++k) {
        const T* sk = s_t + k * n_pad + j0;
        T ak = 0;
#pragma omp simd reduction(+ : ak)
        for (int64_t j = 0; j < nb; ++j) ak = madd(lbuf[j], sk[j], ak);
        acc[k] += ak;
      }
    }
    run_sum += bsum;
  }
  if (state) {
    state[0] = run_max;
    state[1] = run_sum;
    for (int64_t k = 0; k < d; ++k) state[2 + k] = acc[k];
    return;
  }
  if (logpdf) *logpdf = static_cast<T>(run_max + std::log(run_sum) + P.log_norm);
  if (score) {
    const double inv = 1.0 / run_sum;
    for (int64_t k = 0; k < d; ++k) score[k] = static_cast<T>((acc[k] * inv - static_cast<double>(x[k])) * P.inv_h2);
  }
}

// Queries [m0, m1) against samples [j_lo, j_hi); the unit the OpenMP driver hands to each thread. With state, the
// partial states of the queries go to state[(i - m0) * (d + 2) ...] instead of score / logpdf.
template <class T>
LOGLIK_KDE_INLINE void query_range_impl(const Prepared<T>& P, const T* x, int64_t m0, int64_t m1, int64_t j_lo,
                                        int64_t j_hi, T* score, T* logpdf, double* state) {
  alignas(64) T lbuf[kBlock];
  double acc[64];
  std::vector<double> acc_heap;
  double* accp = acc;
  if (P.d > 64) {
    acc_heap.resize(static_cast<size_t>(P.d));
    accp = acc_heap.data();
  }
  const int64_t d = P.d;
  for (int64_t i = m0; i < m1; ++i) {
    T* sc = score ? score + i * d : nullptr;
    T* lp = logpdf ? logpdf + i : nullptr;
    double* st = state ? state + (i - m0) * (d + 2) : nullptr;
    const T* xi = x + i * d;
    switch (d) {
      case 1: one_query<T, 1>(P, xi, j_lo, j_hi, lbuf, accp, sc, lp, st); break;
      case 2: one_query<T, 2>(P, xi, j_lo, j_hi, lbuf, accp, sc, lp, st); break;
      case 3: one_query<T, 3>(P, xi, j_lo, j_hi, lbuf, accp, sc, lp, st); break;
      case 4: one_query<T, 4>(P, xi, j_lo, j_hi, lbuf, accp, sc, lp, st); break;
      default: one_query<T, 0>(P, xi, j_lo, j_hi, lbuf, accp, sc, lp, st); break;
    }
  }
}

template <class T>
using QueryRangeFn = void (*)(const Prepared<T>&, const T*, int64_t, int64_t, int64_t, int64_t, T*, T*, double*);

template <class T>
void query_range_portable(const Prepared<T>& P, const T* x, int64_t m0, int64_t m1, int64_t j_lo, int64_t j_hi,
                          T* score, T* logpdf, double* state) {
  query_range_impl<T>(P, x, m0, m1, j_lo, j_hi, score, logpdf, state);
}

// x [m, d], samples [n, d] row-major; log_weights [n] normalised (logsumexp = 0) or nullptr for uniform weights;
// score [m, d] and/or logpdf [m] may be nullptr. n >= 1, d >= 1, bandwidth > 0 are the caller's to check.
template <class T>
void kde_reduce(const T* x, int64_t m, const T* samples, int64_t n, int64_t d, const T* log_weights, double bandwidth,
                T* score, T* logpdf, QueryRangeFn<T> fn = nullptr) {
  if (!fn) fn = &query_range_portable<T>;
  const Prepared<T> P = prepare(samples, n, d, log_weights, bandwidth);
  const int64_t chunks = (m + kQueryChunk - 1) / kQueryChunk;
  const int64_t threads = omp_get_max_threads();
  const int64_t blocks = (P.n_pad + kBlock - 1) / kBlock;
  if (chunks >= 2 * threads || threads == 1 || blocks < 2) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t m0 = c * kQueryChunk;
      fn(P, x, m0, std::min(m, m0 + kQueryChunk), 0, P.n_pad, score, logpdf, nullptr);
    }
    return;
  }
  // Few queries, many samples: split the samples between the threads (block-aligned ranges), keep one partial
  // state per (range, query), then merge the states exactly (log-sum-exp of the partial maxima).
  const int64_t ranges = std::min(blocks, threads);
  const int64_t stride = d + 2;
  std::vector<double> states(static_cast<size_t>(ranges * m * stride));
#pragma omp parallel for schedule(static, 1)
  for (int64_t r = 0; r < ranges; ++r) {
    const int64_t j_lo = (blocks * r / ranges) * kBlock;
    const int64_t j_hi = std::min(P.n_pad, (blocks * (r + 1) / ranges) * kBlock);
    fn(P, x, 0, m, j_lo, j_hi, nullptr, nullptr, states.data() + r * m * stride);
  }
  for (int64_t i = 0; i < m; ++i) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t r = 0; r < ranges; ++r) mx = std::max(mx, states[(r * m + i) * stride]);
    double sum = 0.0;
    std::vector<double> acc(static_cast<size_t>(d), 0.0);
    for (int64_t r = 0; r < ranges; ++r) {
      const double* st = states.data() + (r * m + i) * stride;
      if (!(st[1] > 0)) continue;  // a range without any sample of nonzero weight
      const double scale = std::exp(st[0] - mx);
      sum += st[1] * scale;
      for (int64_t k = 0; k < d; ++k) acc[k] += st[2 + k] * scale;
    }
    if (logpdf) logpdf[i] = static_cast<T>(mx + std::log(sum) + P.log_norm);
    if (score)
      for (int64_t k = 0; k < d; ++k)
        score[i * d + k] = static_cast<T>((acc[k] / sum - static_cast<double>(x[i * d + k])) * P.inv_h2);
  }
}

// Compiled entry points (csrc/cpu/kde_score.cpp): kde_reduce with a run-time choice of instruction set, isa one of
// "auto", "avx512", "avx2", "baseline" (a request the CPU cannot run falls back to the next one down).
void kde_reduce_f32(const float* x, int64_t m, const float* samples, int64_t n, int64_t d, const float* log_weights,
                    double bandwidth, float* score, float* logpdf, const char* isa = "auto");
void kde_reduce_f64(const double* x, int64_t m, const double* samples, int64_t n, int64_t d,
                    const double* log_weights, double bandwidth, double* score, double* logpdf,
                    const char* isa = "auto");
std::string active_isa(const char* isa = "auto");

}  // namespace loglik::kde
