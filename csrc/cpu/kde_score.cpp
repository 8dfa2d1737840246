// Instantiations of the KDE score / log-density reduction (loglik/kde.hpp) with run-time ISA dispatch: the package
// is built for a baseline x86-64 target, and the hot loop is compiled again for AVX2+FMA and for AVX-512 by inlining
// the same template into functions carrying a target attribute. The OpenMP driver stays in baseline code and calls
// the chosen block function, so no parallel region is ever outlined from an ISA-specific function.
// FP exception flags are never inspected here; without trapping-math semantics GCC can if-convert the clamps of the
// vectorised exp on targets without AVX-512 masks (otherwise the exp loop stays scalar on AVX2 and SSE).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <string>

#include "loglik/kde.hpp"

namespace loglik::kde {
namespace {

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
#define LOGLIK_KDE_MULTIVERSION 1
template <class T>
__attribute__((target("avx2,fma"))) void query_range_avx2(const Prepared<T>& P, const T* x, int64_t m0, int64_t m1,
                                                          int64_t j_lo, int64_t j_hi, T* score, T* logpdf,
                                                          double* state) {
  query_range_impl<T>(P, x, m0, m1, j_lo, j_hi, score, logpdf, state);
}
template <class T>
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,prefer-vector-width=512"))) void
query_range_avx512(const Prepared<T>& P, const T* x, int64_t m0, int64_t m1, int64_t j_lo, int64_t j_hi, T* score,
                   T* logpdf, double* state) {
  query_range_impl<T>(P, x, m0, m1, j_lo, j_hi, score, logpdf, state);
}
#endif

template <class T>
QueryRangeFn<T> pick(const char* isa) {
  std::string want = isa ? isa : "auto";
#ifdef LOGLIK_KDE_MULTIVERSION
  __builtin_cpu_init();
  const bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if ((want == "auto" || want == "avx512") && has512) return &query_range_avx512<T>;
  if ((want == "auto" || want == "avx2" || want == "avx512") && has2) return &query_range_avx2<T>;
#endif
  return &query_range_portable<T>;
}

}  // namespace

std::string active_isa(const char* isa) {
  const auto f = pick<float>(isa);
#ifdef LOGLIK_KDE_MULTIVERSION
  if (f == &query_range_avx512<float>) return "avx512";
  if (f == &query_range_avx2<float>) return "avx2";
#endif
  return "baseline";
}

void kde_reduce_f32(const float* x, int64_t m, const float* samples, int64_t n, int64_t d, const float* log_weights,
                    double bandwidth, float* score, float* logpdf, const char* isa) {
  kde_reduce<float>(x, m, samples, n, d, log_weights, bandwidth, score, logpdf, pick<float>(isa));
}

void kde_reduce_f64(const double* x, int64_t m, const double* samples, int64_t n, int64_t d,
                    const double* log_weights, double bandwidth, double* score, double* logpdf, const char* isa) {
  kde_reduce<double>(x, m, samples, n, d, log_weights, bandwidth, score, logpdf, pick<double>(isa));
}

}  // namespace loglik::kde
