// Gaussian-mixture and K-means kernels: the E-step reduction gmm_logpdf (Cholesky whitening + log-sum-exp over
// components), a whole EM solver gmm_em and K-means (k-means++ seeding + Lloyd). Plain templates over raw
// row-major pointers; instantiated for float and double in csrc/cpu/gmm.cpp and csrc/cpu/kmeans.cpp.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace loglik::mixture {

// Loops over fewer than this many elements (n * p) run on one thread: on small problems the fork/join of an
// OpenMP region costs more than the work, and much more on a loaded machine.
constexpr std::int64_t kParallelMin = std::int64_t(1) << 15;

// Covariance layouts: Full -> [K, p, p], Diag -> [K, p] (variances), Spherical -> [K] (one variance each).
enum class CovType : int { Full = 0, Diag = 1, Spherical = 2 };

inline std::int64_t cov_size(CovType ct, int K, int p) {
  if (ct == CovType::Full) return std::int64_t(K) * p * p;
  if (ct == CovType::Diag) return std::int64_t(K) * p;
  return K;
}

// Thrown when a covariance given by the caller is not positive definite (component index in .component).
struct NotPositiveDefinite : std::runtime_error {
  int component;
  explicit NotPositiveDefinite(int k)
      : std::runtime_error("component " + std::to_string(k) + " is not positive definite"), component(k) {}
};

// log_prob[i, k] = log w_k + log N(x_i | mu_k, Sigma_k)   (n x K, row-major)
// log_density[i] = logsumexp_k log_prob[i, k]             (n)
// resp (optional, may be null): exp(log_prob - log_density), rows sum to one.
// Throws NotPositiveDefinite for a covariance that is not positive definite (strict: no jitter here).
template <class T>
void gmm_logpdf(std::int64_t n, int p, int K, const T* X, const T* means, const T* cov, const T* weights, CovType ct,
                T* log_prob, T* log_density, T* resp);

enum class EMInit : int { KMeansPlusPlus = 0, Random = 1, Means = 2, KMeans = 3 };

struct EMOptions {
  CovType cov_type = CovType::Full;
  int n_init = 1;
  int max_iter = 100;
  double tol = 1e-3;        // on the change of the mean per-point log-likelihood
  double reg_covar = 1e-6;  // added to every variance (diagonal) after each M-step
  EMInit init = EMInit::KMeansPlusPlus;
  std::uint64_t seed = 0;
};

template <class T>
struct EMOutput {
  std::vector<std::int64_t> labels;  // n
  std::vector<T> resp;               // n x K
  std::vector<T> means;              // K x p
  std::vector<T> cov;                // cov_size
  std::vector<T> weights;            // K
  std::vector<double> history;       // mean log-likelihood after each E-step of the best run
  double log_likelihood = 0;         // mean per-point log-likelihood of the best run
  int n_iter = 0;
  bool converged = false;
  int n_reseeded = 0;   // components re-seeded because they were empty at initialisation
  int n_frozen = 0;     // M-step updates skipped for (near-)empty components
  int n_jitter = 0;     // covariances that needed extra diagonal loading beyond reg_covar to factor
  int best_init = 0;
};

// Full EM. init_means (K x p) is used when opt.init == Means (ignored otherwise, may be null).
template <class T>
EMOutput<T> gmm_em(std::int64_t n, int p, int K, const T* X, const EMOptions& opt, const T* init_means);

struct KMeansOptions {
  int n_init = 1;
  int max_iter = 300;
  double tol = 1e-4;  // relative to the mean per-feature variance of X, on the squared centre shift
  std::uint64_t seed = 0;
};

template <class T>
struct KMeansOutput {
  std::vector<std::int64_t> labels;  // n
  std::vector<T> centers;            // K x p
  double inertia = 0;
  int n_iter = 0;
  bool converged = false;
  int n_relocated = 0;  // empty clusters re-seeded (best run)
};

// K-means: k-means++ (greedy, 2 + log K candidates per step) or the given init_centers (K x p, may be null), then
// Lloyd. n_init runs, the lowest inertia wins.
template <class T>
KMeansOutput<T> kmeans(std::int64_t n, int p, int K, const T* X, const KMeansOptions& opt, const T* init_centers);

// k-means++ seeding only (greedy); centers: K x p. Used by gmm_em's default init.
template <class T>
void kmeanspp_seed(std::int64_t n, int p, int K, const T* X, std::uint64_t seed, T* centers);

}  // namespace loglik::mixture
