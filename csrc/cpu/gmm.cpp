// Gaussian mixtures: the E-step reduction (Cholesky whitening, one GEMM by L^{-1} per component, then a
// log-sum-exp over components) and a whole EM solver that never returns to Python between iterations. Means come
// from one GEMM, full covariances from one SYRK per component, Cholesky factors and their inverses from LAPACK
// (potrf, trtri) in double. BLAS/LAPACK are only called outside OpenMP regions.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "loglik/blas.hpp"
#include "loglik/mixture.hpp"

extern "C" {
void scipy_dtrtri_(const char*, const char*, const int*, double*, const int*, int*);
}

namespace loglik::mixture {
namespace {
using i64 = std::int64_t;
constexpr double kLog2Pi = 1.8378770664093454835606594728112;

// Per-component factors: full -> inverse of the lower Cholesky factor, L^{-1} (so that whitening is one GEMM,
// which OpenBLAS only threads when it pays, unlike TRSM), diag/spherical -> variances; plus log det Sigma_k.
template <class T>
struct Factors {
  std::vector<T> chol;
  std::vector<double> logdet;
};

// Factor one component (always in double: a float32 Cholesky of a nearly singular covariance loses the small
// eigenvalues, and the factor is only p x p). chol_k receives the factor (full) or the variances (diag/spherical)
// in T (full: the inverse factor L^{-1}). Returns false when the covariance is not (numerically) positive definite.
template <class Tin, class T>
bool factor_component(CovType ct, int p, const Tin* cov_k, T* chol_k, double& logdet) {
  if (ct == CovType::Full) {
    for (int j = 0; j < p; ++j)
      if (!(cov_k[size_t(j) * p + j] > 0) || !std::isfinite(double(cov_k[size_t(j) * p + j]))) return false;
    std::vector<double> L(cov_k, cov_k + size_t(p) * p);
    if (blas::potrf_lower(p, L.data(), p) != 0) return false;
    double s = 0;
    for (int j = 0; j < p; ++j) {
      const double d = L[size_t(j) * p + j];
      if (!(d > 0) || !std::isfinite(d)) return false;
      s += std::log(d);
    }
    // Row-major lower L is LAPACK's column-major upper L^T; inverting that in place leaves L^{-1} row-major.
    int info = 0;
    scipy_dtrtri_("U", "N", &p, L.data(), &p, &info);
    if (info != 0) return false;
    for (int a = 0; a < p; ++a)
      for (int b = 0; b < p; ++b) chol_k[size_t(a) * p + b] = b <= a ? T(L[size_t(a) * p + b]) : T(0);
    logdet = 2 * s;
    return std::isfinite(logdet);
  }
  const int m = ct == CovType::Diag ? p : 1;
  double s = 0;
  for (int j = 0; j < m; ++j) {
    const double v = cov_k[j];
    if (!(v > 0) || !std::isfinite(v)) return false;
    chol_k[j] = T(v);
    s += std::log(v);
  }
  logdet = ct == CovType::Diag ? s : p * s;
  return std::isfinite(logdet);
}

template <class T>
size_t factor_stride(CovType ct, int p) {
  return ct == CovType::Full ? size_t(p) * p : ct == CovType::Diag ? size_t(p) : 1;
}

// log_prob[i, k] = log w_k + log N(x_i | mu_k, Sigma_k); then log_density and (optionally) responsibilities.
// buf is scratch of n * p (full covariances only).
template <class T>
void estep(i64 n, int p, int K, const T* X, const T* means, const Factors<T>& f, const T* weights, CovType ct,
           T* log_prob, T* log_density, T* resp, std::vector<T>& buf) {
  const size_t fs = factor_stride<T>(ct, p);
  for (int k = 0; k < K; ++k) {
    const T* mu = means + size_t(k) * p;
    const T* fk = f.chol.data() + size_t(k) * fs;
    const double logw = weights[k] > 0 ? std::log(double(weights[k])) : -std::numeric_limits<double>::infinity();
    const double cst = logw - 0.5 * (p * kLog2Pi + f.logdet[k]);
    if (ct == CovType::Full) {
      buf.resize(2 * size_t(n) * p);
      T* centred = buf.data();
      T* white = buf.data() + size_t(n) * p;
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
      for (i64 i = 0; i < n; ++i)
        for (int j = 0; j < p; ++j) centred[size_t(i) * p + j] = X[i * p + j] - mu[j];
      // white = (x - mu) L^{-T}: rows are L^{-1} (x_i - mu), |white_i|^2 the Mahalanobis distance
      blas::gemm(blas::Trans::N, blas::Trans::T, int(n), p, p, T(1), centred, p, fk, p, T(0), white, p);
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
      for (i64 i = 0; i < n; ++i) {
        double s = 0;
        for (int j = 0; j < p; ++j) s += double(white[size_t(i) * p + j]) * white[size_t(i) * p + j];
        log_prob[i * K + k] = T(cst - 0.5 * s);
      }
    } else {
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
      for (i64 i = 0; i < n; ++i) {
        double s = 0;
        for (int j = 0; j < p; ++j) {
          const double d = double(X[i * p + j]) - mu[j];
          s += d * d / double(ct == CovType::Diag ? fk[j] : fk[0]);
        }
        log_prob[i * K + k] = T(cst - 0.5 * s);
      }
    }
  }
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
  for (i64 i = 0; i < n; ++i) {
    const T* row = log_prob + i * K;
    double m = -std::numeric_limits<double>::infinity();
    for (int k = 0; k < K; ++k) m = std::max(m, double(row[k]));
    double s = 0;
    for (int k = 0; k < K; ++k) s += std::exp(double(row[k]) - m);
    const double lse = m + std::log(s);
    log_density[i] = T(lse);
    // exp(row - m) / s, not exp(row - lse): when |m| is huge, lse = m + log(s) rounds back to m and the
    // responsibilities would not sum to one
    if (resp)
      for (int k = 0; k < K; ++k) resp[i * K + k] = T(std::exp(double(row[k]) - m) / s);
  }
}

// A double view of a T array: the array itself when T is double, else a converted copy in store.
inline const double* as_double(const double* a, size_t, std::vector<double>&) { return a; }
inline const double* as_double(const float* a, size_t size, std::vector<double>& store) {
  store.resize(size);
  const i64 m = i64(size);
#pragma omp parallel for schedule(static) if (m > kParallelMin)
  for (i64 i = 0; i < m; ++i) store[i] = a[i];
  return store.data();
}

std::uint64_t mix_seed(std::uint64_t seed, int r) {
  std::uint64_t x = seed + std::uint64_t(r + 1) * 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

template <class T>
void hard_assign(i64 n, int p, int K, const T* X, const T* centers, T* resp) {
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
  for (i64 i = 0; i < n; ++i) {
    int best = 0;
    double bd = std::numeric_limits<double>::infinity();
    for (int k = 0; k < K; ++k) {
      double s = 0;
      for (int j = 0; j < p; ++j) {
        const double d = double(X[i * p + j]) - centers[size_t(k) * p + j];
        s += d * d;
      }
      if (s < bd) {
        bd = s;
        best = k;
      }
    }
    for (int k = 0; k < K; ++k) resp[i * K + k] = T(k == best ? 1 : 0);
  }
}

// One EM run from the initial responsibilities in out.resp (already filled).
template <class T>
void em_run(i64 n, int p, int K, const T* X, const EMOptions& opt, const std::vector<double>& global_var,
            EMOutput<T>& out) {
  const CovType ct = opt.cov_type;
  const size_t cs = size_t(cov_size(ct, K, p)) / size_t(K);
  const double eps = std::numeric_limits<T>::epsilon();
  out.means.assign(size_t(K) * p, T(0));
  out.cov.assign(size_t(K) * cs, T(0));
  std::vector<double> covd(size_t(K) * cs, 0.0);  // covariances in double; out.cov is their T copy
  out.weights.assign(K, T(1) / T(K));
  out.history.clear();
  std::vector<T> log_prob(size_t(n) * K), log_density(n), buf;
  std::vector<double> Nk(K);
  std::vector<char> have(K, 0);
  Factors<T> f;
  f.chol.assign(size_t(K) * factor_stride<T>(ct, p), T(0));
  f.logdet.assign(K, 0.0);
  const int nthreads = omp_get_max_threads();
  std::vector<double> tl(size_t(nthreads) * std::max(K, p));
  double scale = 0;  // typical variance, sets the size of the extra diagonal loading when one is needed
  for (int j = 0; j < p; ++j) scale += global_var[j];
  scale = std::max(scale / p, std::numeric_limits<double>::min());
  const double freeze_below = std::max(1e-6 * double(n) / K, 1e-10);
  // Diagonal loading of full covariances: max(reg_covar, p eps_T max_j var(x_j)). The second term is the size of
  // the round-off that a covariance in the data's precision carries (Higham's normwise bound): negligible in float64,
  // it is what keeps float32 E-steps meaningful on nearly collinear features. Fixed per run, so EM stays monotone.
  double max_var = 0;
  for (int j = 0; j < p; ++j) max_var = std::max(max_var, global_var[j]);
  const double loading = std::max(opt.reg_covar, p * eps * max_var);
  // The M-step accumulates in double whatever T is: a float32 sum over n points carries an error of about
  // sqrt(n) eps relative to the largest entry, which swamps the small eigenvalues of a covariance. For T = float
  // this needs double copies of X (once) and of the responsibilities (each iteration); for T = double they alias.
  std::vector<double> Xd_store, Rd_store, Md(size_t(K) * p), bufd;
  const double* Xd = as_double(X, size_t(n) * p, Xd_store);
  double prev = -std::numeric_limits<double>::infinity();
  out.converged = false;
  out.n_iter = 0;
  for (int it = 1; it <= opt.max_iter; ++it) {
    // ---- M-step -------------------------------------------------------------------------------------------
    std::fill(tl.begin(), tl.end(), 0.0);
#pragma omp parallel if (std::int64_t(n) * p > kParallelMin)
    {
      double* loc = tl.data() + size_t(omp_get_thread_num()) * std::max(K, p);
#pragma omp for schedule(static)
      for (i64 i = 0; i < n; ++i)
        for (int k = 0; k < K; ++k) loc[k] += out.resp[i * K + k];
    }
    for (int k = 0; k < K; ++k) {
      Nk[k] = 10 * eps;
      for (int t = 0; t < nthreads; ++t) Nk[k] += tl[size_t(t) * std::max(K, p) + k];
    }
    const double* Rd = as_double(out.resp.data(), size_t(n) * K, Rd_store);
    std::vector<double> new_means(size_t(K) * p);
    blas::gemm(blas::Trans::T, blas::Trans::N, K, p, int(n), 1.0, Rd, K, Xd, p, 0.0, new_means.data(), p);
    double wsum = 0;
    for (int k = 0; k < K; ++k) {
      T* mu = out.means.data() + size_t(k) * p;
      double* ck = covd.data() + size_t(k) * cs;
      if (Nk[k] < freeze_below) {
        if (have[k]) {
          // (Near-)empty component: keep its previous mean and covariance (a generalised M-step, so the
          // log-likelihood still cannot decrease) instead of estimating them from almost no data.
          out.n_frozen += 1;
        } else {
          // Empty from the start: re-seed at the point worst explained by the non-empty centres, with the
          // data's per-feature variances as covariance.
          i64 far = 0;
          double fd = -1;
          for (i64 i = 0; i < n; ++i) {
            double bd = std::numeric_limits<double>::infinity();
            for (int l = 0; l < K; ++l) {
              if (Nk[l] < freeze_below && !have[l]) continue;
              double s = 0;
              for (int j = 0; j < p; ++j) {
                const double d = double(X[i * p + j]) - new_means[size_t(l) * p + j] / Nk[l];
                s += d * d;
              }
              bd = std::min(bd, s);
            }
            if (bd > fd && std::isfinite(bd)) {
              fd = bd;
              far = i;
            }
          }
          for (int j = 0; j < p; ++j) mu[j] = X[far * p + j];
          std::fill(ck, ck + cs, 0.0);
          if (ct == CovType::Full)
            for (int j = 0; j < p; ++j) ck[size_t(j) * p + j] = global_var[j] + opt.reg_covar;
          else if (ct == CovType::Diag)
            for (int j = 0; j < p; ++j) ck[j] = global_var[j] + opt.reg_covar;
          else
            ck[0] = scale + opt.reg_covar;
          have[k] = 1;
          out.n_reseeded += 1;
        }
        out.weights[k] = T(std::max(Nk[k], 10 * eps) / double(n));
        wsum += double(out.weights[k]);
        continue;
      }
      double* md = Md.data() + size_t(k) * p;
      for (int j = 0; j < p; ++j) {
        md[j] = new_means[size_t(k) * p + j] / Nk[k];
        mu[j] = T(md[j]);
      }
      out.weights[k] = T(Nk[k] / double(n));
      wsum += double(out.weights[k]);
      have[k] = 1;
      if (ct == CovType::Full) {
        bufd.resize(size_t(n) * p);
        std::vector<double> S(size_t(p) * p);
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
        for (i64 i = 0; i < n; ++i) {
          const double w = std::sqrt(std::max(Rd[i * K + k], 0.0));
          for (int j = 0; j < p; ++j) bufd[size_t(i) * p + j] = w * (Xd[i * p + j] - md[j]);
        }
        blas::syrk(blas::Trans::T, p, int(n), 1.0, bufd.data(), p, 0.0, S.data(), p);
        for (int a = 0; a < p; ++a) {
          for (int b = 0; b <= a; ++b) {
            const double v = S[size_t(a) * p + b] / Nk[k];
            ck[size_t(a) * p + b] = v;
            ck[size_t(b) * p + a] = v;
          }
        }
        for (int a = 0; a < p; ++a) ck[size_t(a) * p + a] += loading;
      } else {
        std::fill(tl.begin(), tl.end(), 0.0);
#pragma omp parallel if (std::int64_t(n) * p > kParallelMin)
        {
          double* loc = tl.data() + size_t(omp_get_thread_num()) * std::max(K, p);
#pragma omp for schedule(static)
          for (i64 i = 0; i < n; ++i) {
            const double r = Rd[i * K + k];
            for (int j = 0; j < p; ++j) {
              const double d = Xd[i * p + j] - md[j];
              loc[j] += r * d * d;
            }
          }
        }
        double tot = 0;
        for (int j = 0; j < p; ++j) {
          double v = 0;
          for (int t = 0; t < nthreads; ++t) v += tl[size_t(t) * std::max(K, p) + j];
          v /= Nk[k];
          if (ct == CovType::Diag) ck[j] = v + opt.reg_covar;
          tot += v;
        }
        if (ct == CovType::Spherical) ck[0] = tot / p + opt.reg_covar;
      }
    }
    for (int k = 0; k < K; ++k) out.weights[k] = T(double(out.weights[k]) / wsum);
    // ---- factor, with extra diagonal loading only when reg_covar is not enough (float32, duplicate points) --
    const size_t fs = factor_stride<T>(ct, p);
    for (int k = 0; k < K; ++k) {
      double* ck = covd.data() + size_t(k) * cs;
      int attempt = 0;
      while (!factor_component<double, T>(ct, p, ck, f.chol.data() + size_t(k) * fs, f.logdet[k])) {
        if (attempt >= 30) throw std::runtime_error("gmm_em: a covariance could not be made positive definite");
        const double jitter = std::max(opt.reg_covar, 10 * eps * scale) * std::pow(10.0, attempt);
        if (ct == CovType::Full) {
          for (int j = 0; j < p; ++j) {
            double& d = ck[size_t(j) * p + j];
            d = std::max(d, 0.0) + jitter;
          }
        } else {
          const int m = ct == CovType::Diag ? p : 1;
          for (int j = 0; j < m; ++j) ck[j] = std::max(ck[j], 0.0) + jitter;
        }
        out.n_jitter += 1;
        ++attempt;
      }
    }
    for (size_t q = 0; q < covd.size(); ++q) out.cov[q] = T(covd[q]);
    // ---- E-step -------------------------------------------------------------------------------------------
    estep<T>(n, p, K, X, out.means.data(), f, out.weights.data(), ct, log_prob.data(), log_density.data(),
             out.resp.data(), buf);
    double ll = 0;
#pragma omp parallel for schedule(static) reduction(+ : ll) if (std::int64_t(n) * p > kParallelMin)
    for (i64 i = 0; i < n; ++i) ll += double(log_density[i]);
    ll /= double(n);
    if (!std::isfinite(ll)) throw std::runtime_error("gmm_em: the log-likelihood became non-finite");
    out.history.push_back(ll);
    out.n_iter = it;
    out.log_likelihood = ll;
    if (std::abs(ll - prev) < opt.tol) {
      out.converged = true;
      break;
    }
    prev = ll;
  }
  out.labels.assign(n, 0);
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
  for (i64 i = 0; i < n; ++i) {
    int best = 0;
    for (int k = 1; k < K; ++k)
      if (out.resp[i * K + k] > out.resp[i * K + best]) best = k;
    out.labels[i] = best;
  }
}

}  // namespace

template <class T>
void gmm_logpdf(std::int64_t n, int p, int K, const T* X, const T* means, const T* cov, const T* weights, CovType ct,
                T* log_prob, T* log_density, T* resp) {
  Factors<T> f;
  const size_t fs = factor_stride<T>(ct, p);
  const size_t cs = size_t(cov_size(ct, K, p)) / size_t(K);
  f.chol.assign(size_t(K) * fs, T(0));
  f.logdet.assign(K, 0.0);
  for (int k = 0; k < K; ++k)
    if (!factor_component<T, T>(ct, p, cov + size_t(k) * cs, f.chol.data() + size_t(k) * fs, f.logdet[k]))
      throw NotPositiveDefinite(k);
  std::vector<T> buf;
  estep<T>(n, p, K, X, means, f, weights, ct, log_prob, log_density, resp, buf);
}

template <class T>
EMOutput<T> gmm_em(std::int64_t n, int p, int K, const T* X_in, const EMOptions& opt, const T* init_means) {
  // Work on column-centred data (EM is translation equivariant; centring keeps float32 sums accurate).
  std::vector<double> mean(p, 0.0), var(p, 0.0);
  for (i64 i = 0; i < n; ++i)
    for (int j = 0; j < p; ++j) mean[j] += X_in[i * p + j];
  for (int j = 0; j < p; ++j) mean[j] /= double(n);
  std::vector<T> X(size_t(n) * p);
#pragma omp parallel for schedule(static) if (std::int64_t(n) * p > kParallelMin)
  for (i64 i = 0; i < n; ++i)
    for (int j = 0; j < p; ++j) X[size_t(i) * p + j] = T(double(X_in[i * p + j]) - mean[j]);
  for (i64 i = 0; i < n; ++i)
    for (int j = 0; j < p; ++j) var[j] += double(X[size_t(i) * p + j]) * X[size_t(i) * p + j];
  for (int j = 0; j < p; ++j) var[j] /= double(n);

  EMOutput<T> best;
  const int runs = opt.init == EMInit::Means ? 1 : std::max(1, opt.n_init);
  for (int r = 0; r < runs; ++r) {
    EMOutput<T> out;
    out.resp.assign(size_t(n) * K, T(0));
    const std::uint64_t s = mix_seed(opt.seed, r);
    if (opt.init == EMInit::Means) {
      std::vector<T> c(size_t(K) * p);
      for (int k = 0; k < K; ++k)
        for (int j = 0; j < p; ++j) c[size_t(k) * p + j] = T(double(init_means[size_t(k) * p + j]) - mean[j]);
      hard_assign<T>(n, p, K, X.data(), c.data(), out.resp.data());
    } else if (opt.init == EMInit::KMeansPlusPlus) {
      std::vector<T> c(size_t(K) * p);
      kmeanspp_seed<T>(n, p, K, X.data(), s, c.data());
      hard_assign<T>(n, p, K, X.data(), c.data(), out.resp.data());
    } else if (opt.init == EMInit::KMeans) {
      KMeansOptions ko;
      ko.seed = s;
      KMeansOutput<T> km = kmeans<T>(n, p, K, X.data(), ko, nullptr);
      for (i64 i = 0; i < n; ++i) out.resp[size_t(i) * K + km.labels[i]] = T(1);
    } else {
      std::mt19937_64 rng(s);
      std::uniform_real_distribution<double> unif(0.0, 1.0);
      for (i64 i = 0; i < n; ++i) {
        double tot = 0;
        for (int k = 0; k < K; ++k) tot += (out.resp[size_t(i) * K + k] = T(unif(rng) + 1e-12));
        for (int k = 0; k < K; ++k) out.resp[size_t(i) * K + k] = T(out.resp[size_t(i) * K + k] / tot);
      }
    }
    em_run<T>(n, p, K, X.data(), opt, var, out);
    if (r == 0 || out.log_likelihood > best.log_likelihood) {
      best = std::move(out);
      best.best_init = r;
    }
  }
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < p; ++j) best.means[size_t(k) * p + j] = T(double(best.means[size_t(k) * p + j]) + mean[j]);
  return best;
}

#define LOGLIK_INSTANTIATE(T)                                                                                      \
  template void gmm_logpdf<T>(std::int64_t, int, int, const T*, const T*, const T*, const T*, CovType, T*, T*, T*); \
  template EMOutput<T> gmm_em<T>(std::int64_t, int, int, const T*, const EMOptions&, const T*);
LOGLIK_INSTANTIATE(float)
LOGLIK_INSTANTIATE(double)
#undef LOGLIK_INSTANTIATE

}  // namespace loglik::mixture
