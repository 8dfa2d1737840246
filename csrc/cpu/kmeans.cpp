// K-means: greedy k-means++ seeding and Lloyd iterations. Distances to the K centres come from one GEMM per
// iteration (||x||^2 - 2 x.c + ||c||^2 on column-centred data, which keeps float32 cancellation small); the
// reported inertia is recomputed exactly from differences in double. BLAS is never called inside an OpenMP region.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "loglik/blas.hpp"
#include "loglik/mixture.hpp"

namespace loglik::mixture {
namespace {
using i64 = std::int64_t;

template <class T>
inline double sqdist(const T* a, const T* b, int p) {
  double s = 0;
  for (int j = 0; j < p; ++j) {
    const double d = double(a[j]) - double(b[j]);
    s += d * d;
  }
  return s;
}

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Column means (double) and a centred copy of X.
template <class T>
std::vector<double> center_columns(i64 n, int p, const T* X, std::vector<T>& Xc) {
  std::vector<double> mean(p, 0.0);
  for (i64 i = 0; i < n; ++i)
    for (int j = 0; j < p; ++j) mean[j] += X[i * p + j];
  for (int j = 0; j < p; ++j) mean[j] /= double(n);
  Xc.resize(size_t(n) * p);
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
  for (i64 i = 0; i < n; ++i)
    for (int j = 0; j < p; ++j) Xc[i * p + j] = T(double(X[i * p + j]) - mean[j]);
  return mean;
}

template <class T>
KMeansOutput<T> lloyd(i64 n, int p, int K, const T* X, const std::vector<T>& xx, T* centers, int max_iter,
                      double tol_abs) {
  KMeansOutput<T> out;
  out.labels.assign(n, -1);
  std::vector<T> G(size_t(n) * K), cc(K);
  std::vector<double> mind(n), sums(size_t(K) * p);
  std::vector<i64> counts(K);
  std::vector<T> newc(size_t(K) * p);
  const int nthreads = omp_get_max_threads();
  std::vector<double> tl_sums(size_t(nthreads) * K * p);
  std::vector<i64> tl_counts(size_t(nthreads) * K);
  bool converged = false;
  int it = 0;
  for (it = 1; it <= max_iter; ++it) {
    for (int k = 0; k < K; ++k) {
      double s = 0;
      for (int j = 0; j < p; ++j) s += double(centers[k * p + j]) * centers[k * p + j];
      cc[k] = T(s);
    }
    blas::gemm(blas::Trans::N, blas::Trans::T, int(n), K, p, T(1), X, p, centers, p, T(0), G.data(), K);
    i64 changes = 0;
    std::fill(tl_sums.begin(), tl_sums.end(), 0.0);
    std::fill(tl_counts.begin(), tl_counts.end(), 0);
#pragma omp parallel reduction(+ : changes) if (std::int64_t(n) * p > kParallelMin)
    {
      const int t = omp_get_thread_num();
      double* ls = tl_sums.data() + size_t(t) * K * p;
      i64* lc = tl_counts.data() + size_t(t) * K;
#pragma omp for schedule(static)
      for (i64 i = 0; i < n; ++i) {
        int best = 0;
        T bd = std::numeric_limits<T>::infinity();
        for (int k = 0; k < K; ++k) {
          const T d = xx[i] - 2 * G[i * K + k] + cc[k];
          if (d < bd) {
            bd = d;
            best = k;
          }
        }
        mind[i] = std::max(0.0, double(bd));
        if (out.labels[i] != best) ++changes;
        out.labels[i] = best;
        lc[best] += 1;
        for (int j = 0; j < p; ++j) ls[size_t(best) * p + j] += X[i * p + j];
      }
    }
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (int t = 0; t < nthreads; ++t) {
      for (int k = 0; k < K; ++k) counts[k] += tl_counts[size_t(t) * K + k];
      for (size_t q = 0; q < sums.size(); ++q) sums[q] += tl_sums[size_t(t) * K * p + q];
    }
    if (changes == 0) {  // assignment is a fixed point: the centres are already the cluster means
      converged = true;
      break;
    }
    // Empty clusters move to the points farthest from their current centres (as in scikit-learn), which can only
    // lower the objective.
    std::vector<i64> order;
    i64 n_moved = 0;
    for (int k = 0; k < K; ++k) {
      if (counts[k] > 0) {
        for (int j = 0; j < p; ++j) newc[size_t(k) * p + j] = T(sums[size_t(k) * p + j] / double(counts[k]));
        continue;
      }
      if (order.empty()) {
        order.resize(n);
        std::iota(order.begin(), order.end(), i64(0));
        std::stable_sort(order.begin(), order.end(), [&](i64 a, i64 b) { return mind[a] > mind[b]; });
      }
      const i64 pick = order[std::min<i64>(n_moved++, n - 1)];
      for (int j = 0; j < p; ++j) newc[size_t(k) * p + j] = X[pick * p + j];
      out.n_relocated += 1;
    }
    double shift = 0;
    for (int k = 0; k < K; ++k) shift += sqdist(newc.data() + size_t(k) * p, centers + size_t(k) * p, p);
    std::copy(newc.begin(), newc.end(), centers);
    if (shift <= tol_abs) {
      converged = true;
      break;
    }
  }
  out.n_iter = std::min(it, max_iter);
  out.converged = converged;
  // Final assignment with the returned centres (exact distances) so labels, centres and inertia agree.
  double inertia = 0;
#pragma omp parallel for schedule(static) reduction(+ : inertia) if (std::int64_t(n) * p > kParallelMin)
  for (i64 i = 0; i < n; ++i) {
    int best = 0;
    double bd = std::numeric_limits<double>::infinity();
    for (int k = 0; k < K; ++k) {
      const double d = sqdist(X + i * p, centers + size_t(k) * p, p);
      if (d < bd) {
        bd = d;
        best = k;
      }
    }
    out.labels[i] = best;
    inertia += bd;
  }
  out.inertia = inertia;
  return out;
}

}  // namespace

template <class T>
void kmeanspp_seed(std::int64_t n, int p, int K, const T* X, std::uint64_t seed, T* centers) {
  std::mt19937_64 rng(splitmix(seed));
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  auto draw_index = [&]() { return std::min<i64>(n - 1, i64(unif(rng) * double(n))); };
  const i64 first = draw_index();
  std::copy(X + first * p, X + first * p + p, centers);
  std::vector<double> d2(n), cum(n), cand_d2(n);
  double pot = 0;
#pragma omp parallel for schedule(static) reduction(+ : pot) if (std::int64_t(n) * p > kParallelMin)
  for (i64 i = 0; i < n; ++i) {
    d2[i] = sqdist(X + i * p, centers, p);
    pot += d2[i];
  }
  const int trials = 2 + int(std::log(double(K)));
  for (int c = 1; c < K; ++c) {
    std::partial_sum(d2.begin(), d2.end(), cum.begin());
    const double total = cum[n - 1];
    i64 best_idx = -1;
    double best_pot = std::numeric_limits<double>::infinity();
    for (int t = 0; t < trials; ++t) {
      i64 idx;
      if (total > 0) {
        const double r = unif(rng) * total;
        // first index with cum > r: its d2 is > 0, so a point that already is a centre is never picked
        idx = std::upper_bound(cum.begin(), cum.end(), r) - cum.begin();
        idx = std::min<i64>(idx, n - 1);
      } else {
        idx = draw_index();  // all points coincide with chosen centres: any point will do
      }
      const T* xc = X + idx * p;
      double new_pot = 0;
#pragma omp parallel for schedule(static) reduction(+ : new_pot) if (std::int64_t(n) * p > kParallelMin)
      for (i64 i = 0; i < n; ++i) new_pot += std::min(d2[i], sqdist(X + i * p, xc, p));
      if (new_pot < best_pot) {
        best_pot = new_pot;
        best_idx = idx;
      }
    }
    const T* xb = X + best_idx * p;
    std::copy(xb, xb + p, centers + size_t(c) * p);
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
    for (i64 i = 0; i < n; ++i) d2[i] = std::min(d2[i], sqdist(X + i * p, xb, p));
    pot = best_pot;
  }
  (void)pot;
}

template <class T>
KMeansOutput<T> kmeans(std::int64_t n, int p, int K, const T* X, const KMeansOptions& opt, const T* init_centers) {
  std::vector<T> Xc;
  const std::vector<double> mean = center_columns(n, p, X, Xc);
  double var_mean = 0;
  for (i64 i = 0; i < n; ++i)
    for (int j = 0; j < p; ++j) var_mean += double(Xc[i * p + j]) * Xc[i * p + j];
  var_mean /= double(n) * p;
  const double tol_abs = opt.tol * var_mean;
  std::vector<T> xx(n);
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
  for (i64 i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < p; ++j) s += double(Xc[i * p + j]) * Xc[i * p + j];
    xx[i] = T(s);
  }
  KMeansOutput<T> best;
  const int runs = init_centers ? 1 : std::max(1, opt.n_init);
  for (int r = 0; r < runs; ++r) {
    std::vector<T> centers(size_t(K) * p);
    if (init_centers) {
      for (int k = 0; k < K; ++k)
        for (int j = 0; j < p; ++j) centers[size_t(k) * p + j] = T(double(init_centers[size_t(k) * p + j]) - mean[j]);
    } else {
      kmeanspp_seed<T>(n, p, K, Xc.data(), opt.seed + std::uint64_t(r) * 0x9E3779B97F4A7C15ull, centers.data());
    }
    KMeansOutput<T> out = lloyd<T>(n, p, K, Xc.data(), xx, centers.data(), opt.max_iter, tol_abs);
    out.centers = std::move(centers);
    if (r == 0 || out.inertia < best.inertia) best = std::move(out);
  }
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < p; ++j) best.centers[size_t(k) * p + j] = T(double(best.centers[size_t(k) * p + j]) + mean[j]);
  return best;
}

template void kmeanspp_seed<float>(std::int64_t, int, int, const float*, std::uint64_t, float*);
template void kmeanspp_seed<double>(std::int64_t, int, int, const double*, std::uint64_t, double*);
template KMeansOutput<float> kmeans<float>(std::int64_t, int, int, const float*, const KMeansOptions&, const float*);
template KMeansOutput<double> kmeans<double>(std::int64_t, int, int, const double*, const KMeansOptions&,
                                             const double*);

}  // namespace loglik::mixture
