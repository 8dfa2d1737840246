#include <omp.h>

#include <algorithm>
#include <vector>

#include "loglik/blas.hpp"
#include "loglik/parallel.hpp"

namespace loglik {

void set_num_threads(int n) {
  n = std::max(1, n);
  omp_set_num_threads(n);
  scipy_openblas_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

namespace blas {
namespace {
template <class T, class F>
int syevd_impl(F fn, int n, T* a, int lda, T* w) {
  int info = 0, lwork = -1, liwork = -1, iwork_q = 0;
  T work_q{};
  fn("V", "L", &n, a, &lda, w, &work_q, &lwork, &iwork_q, &liwork, &info);
  if (info != 0) return info;
  lwork = static_cast<int>(work_q) + 1;
  liwork = iwork_q;
  std::vector<T> work(lwork);
  std::vector<int> iwork(std::max(1, liwork));
  fn("V", "L", &n, a, &lda, w, work.data(), &lwork, iwork.data(), &liwork, &info);
  return info;
}
}  // namespace
int syevd(int n, float* a, int lda, float* w) { return syevd_impl<float>(scipy_ssyevd_, n, a, lda, w); }
int syevd(int n, double* a, int lda, double* w) { return syevd_impl<double>(scipy_dsyevd_, n, a, lda, w); }
}  // namespace blas
}  // namespace loglik
