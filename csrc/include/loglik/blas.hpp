// Thin typed wrappers over the BLAS/LAPACK that loglik links (OpenBLAS from the scipy-openblas32 wheel, whose
// symbols carry a scipy_ prefix). Kernels call loglik::blas::gemm<T>(...) and never name the vendor symbols, so an
// embedding framework can swap the provider by defining LOGLIK_BLAS_PREFIX before including this header.
#pragma once
#include <cstdint>

#ifndef LOGLIK_BLAS_PREFIX
#define LOGLIK_BLAS_PREFIX 1
#endif

extern "C" {
// CBLAS (row-major capable)
enum LOGLIK_CBLAS_ORDER { LoglikRowMajor = 101, LoglikColMajor = 102 };
enum LOGLIK_CBLAS_TRANSPOSE { LoglikNoTrans = 111, LoglikTrans = 112 };
enum LOGLIK_CBLAS_UPLO { LoglikUpper = 121, LoglikLower = 122 };
void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
void scipy_cblas_dgemm(int, int, int, int, int, int, double, const double*, int, const double*, int, double, double*,
                       int);
void scipy_cblas_ssyrk(int, int, int, int, int, float, const float*, int, float, float*, int);
void scipy_cblas_dsyrk(int, int, int, int, int, double, const double*, int, double, double*, int);
void scipy_cblas_sgemv(int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
void scipy_cblas_dgemv(int, int, int, int, double, const double*, int, const double*, int, double, double*, int);
// LAPACK (Fortran, column-major)
void scipy_spotrf_(const char*, const int*, float*, const int*, int*);
void scipy_dpotrf_(const char*, const int*, double*, const int*, int*);
void scipy_ssyevd_(const char*, const char*, const int*, float*, const int*, float*, float*, const int*, int*,
                   const int*, int*);
void scipy_dsyevd_(const char*, const char*, const int*, double*, const int*, double*, double*, const int*, int*,
                   const int*, int*);
void scipy_ssyevr_(const char*, const char*, const char*, const int*, float*, const int*, const float*,
                   const float*, const int*, const int*, const float*, int*, float*, float*, const int*, int*,
                   float*, const int*, int*, const int*, int*);
void scipy_dsyevr_(const char*, const char*, const char*, const int*, double*, const int*, const double*,
                   const double*, const int*, const int*, const double*, int*, double*, double*, const int*, int*,
                   double*, const int*, int*, const int*, int*);
void scipy_openblas_set_num_threads(int);
int scipy_openblas_get_num_threads(void);
char* scipy_openblas_get_config(void);
}

namespace loglik::blas {

enum class Trans { N, T };
inline int tr(Trans t) { return t == Trans::N ? LoglikNoTrans : LoglikTrans; }

// Row-major C[m,n] = alpha * op(A)[m,k] @ op(B)[k,n] + beta * C
inline void gemm(Trans ta, Trans tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                 int ldb, float beta, float* c, int ldc) {
  scipy_cblas_sgemm(LoglikRowMajor, tr(ta), tr(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm(Trans ta, Trans tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
                 int ldb, double beta, double* c, int ldc) {
  scipy_cblas_dgemm(LoglikRowMajor, tr(ta), tr(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
// Row-major y = alpha * op(A) x + beta * y, A is [m, n]
inline void gemv(Trans ta, int m, int n, float alpha, const float* a, int lda, const float* x, float beta, float* y) {
  scipy_cblas_sgemv(LoglikRowMajor, tr(ta), m, n, alpha, a, lda, x, 1, beta, y, 1);
}
inline void gemv(Trans ta, int m, int n, double alpha, const double* a, int lda, const double* x, double beta,
                 double* y) {
  scipy_cblas_dgemv(LoglikRowMajor, tr(ta), m, n, alpha, a, lda, x, 1, beta, y, 1);
}
// Row-major C[n,n] (lower triangle) = alpha * A A^T + beta * C (trans=N, A is [n,k]) or A^T A (trans=T, A is [k,n])
inline void syrk(Trans t, int n, int k, float alpha, const float* a, int lda, float beta, float* c, int ldc) {
  scipy_cblas_ssyrk(LoglikRowMajor, LoglikLower, tr(t), n, k, alpha, a, lda, beta, c, ldc);
}
inline void syrk(Trans t, int n, int k, double alpha, const double* a, int lda, double beta, double* c, int ldc) {
  scipy_cblas_dsyrk(LoglikRowMajor, LoglikLower, tr(t), n, k, alpha, a, lda, beta, c, ldc);
}
// Cholesky of a symmetric n x n matrix stored row-major: factors in place so that A = L L^T with L in the
// row-major lower triangle (LAPACK sees the transpose, so we ask it for the upper factor). Returns LAPACK's info.
inline int potrf_lower(int n, float* a, int lda) {
  int info = 0;
  scipy_spotrf_("U", &n, a, &lda, &info);
  return info;
}
inline int potrf_lower(int n, double* a, int lda) {
  int info = 0;
  scipy_dpotrf_("U", &n, a, &lda, &info);
  return info;
}
// All eigenvalues (ascending, in w) and eigenvectors of a symmetric n x n matrix stored row-major (symmetric, so
// LAPACK's column-major view is the same matrix). On return eigenvector j is the contiguous row a[j*lda : j*lda+n].
int syevd(int n, float* a, int lda, float* w);
int syevd(int n, double* a, int lda, double* w);

}  // namespace loglik::blas
