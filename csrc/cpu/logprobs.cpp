// Instantiations of the language-model row reductions (see loglik/logprobs.hpp). The float row kernels are compiled
// for AVX-512, AVX2 and the portable baseline and picked at run time (CPUID), so a portable wheel still
// runs the exp/tanh loops 16 lanes wide on a modern Xeon. Only the per-row functions are cloned: OpenMP's outlined
// parallel regions stay in default-target code and call them.
#include "loglik/logprobs.hpp"

namespace loglik::lm {
namespace {

// Explicit per-ISA copies and a one-time dispatch on __builtin_cpu_supports (more predictable than target_clones,
// whose arch=x86-64-vN resolver did not pick the AVX-512 copy on this machine's virtualised Xeon).
#if defined(__x86_64__) && defined(__GNUC__)
#define LOGLIK_X86 1
#define LOGLIK_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi2")))
#define LOGLIK_AVX2 __attribute__((target("avx2,fma,bmi2")))
#else
#define LOGLIK_X86 0
#endif

#define LOGLIK_ROW_VARIANT(SUFFIX, ATTR)                                                                            \
  ATTR void row_stats_##SUFFIX(const float* x, float* zout, int64_t V, int64_t t, float inv_temp, float softcap,   \
                               bool transform, float* st) {                                                         \
    row_stats<float>(x, zout, V, t, Transform<float>{inv_temp, softcap}, transform, st);                            \
  }                                                                                                                 \
  ATTR void row_grad_##SUFFIX(const float* x, float* dx, int64_t V, int64_t t, float inv_temp, float softcap,       \
                              bool transform, float lse, float ez, const float* coef) {                             \
    row_grad<float>(x, dx, V, t, Transform<float>{inv_temp, softcap}, transform, lse, ez, coef);                    \
  }

LOGLIK_ROW_VARIANT(base, )
#if LOGLIK_X86
LOGLIK_ROW_VARIANT(avx512, LOGLIK_AVX512)
LOGLIK_ROW_VARIANT(avx2, LOGLIK_AVX2)
#endif

using StatsFn = void (*)(const float*, float*, int64_t, int64_t, float, float, bool, float*);
using GradFn = void (*)(const float*, float*, int64_t, int64_t, float, float, bool, float, float, const float*);

struct RowTable {
  StatsFn stats = row_stats_base;
  GradFn grad = row_grad_base;
  RowTable() {
#if LOGLIK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
      stats = row_stats_avx512;
      grad = row_grad_avx512;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      stats = row_stats_avx2;
      grad = row_grad_avx2;
    }
#endif
  }
};

const RowTable& rows_table() {
  static const RowTable table;
  return table;
}

void row_stats_f32(const float* x, float* zout, int64_t V, int64_t t, float inv_temp, float softcap, bool transform,
                   float* st) {
  rows_table().stats(x, zout, V, t, inv_temp, softcap, transform, st);
}

void row_grad_f32(const float* x, float* dx, int64_t V, int64_t t, float inv_temp, float softcap, bool transform,
                  float lse, float ez, const float* coef) {
  rows_table().grad(x, dx, V, t, inv_temp, softcap, transform, lse, ez, coef);
}

struct DispatchRowsF32 {
  static void stats(const float* x, float* zout, int64_t V, int64_t t, const Transform<float>& tr, bool transform,
                    float* st) {
    row_stats_f32(x, zout, V, t, tr.inv_temp, tr.softcap, transform, st);
  }
  static void grad(const float* x, float* dx, int64_t V, int64_t t, const Transform<float>& tr, bool transform,
                   float lse, float ez, const float* coef) {
    row_grad_f32(x, dx, V, t, tr.inv_temp, tr.softcap, transform, lse, ez, coef);
  }
};

template <class T>
struct RowsFor {
  using type = GenericRows<T>;
};
template <>
struct RowsFor<float> {
  using type = DispatchRowsF32;
};

}  // namespace

#define LOGLIK_LM_DEFINE(T)                                                                                         \
  void lm_chunk_stats(const T* x, T* zout, int64_t rows, int64_t V, int64_t ld, const int64_t* targets,            \
                      int64_t vocab_start, int64_t ignore_index, const T* inv_temp_rows, T inv_temp, T softcap,     \
                      bool transform, T* stats) {                                                                   \
    chunk_stats<T, RowsFor<T>::type>(x, zout, rows, V, ld, targets, vocab_start, ignore_index, inv_temp_rows,      \
                                     inv_temp, softcap, transform, stats);                                          \
  }                                                                                                                 \
  void lm_chunk_grad(const T* x, T* dx, int64_t rows, int64_t V, int64_t ld, const int64_t* targets,               \
                     int64_t vocab_start, int64_t ignore_index, const T* inv_temp_rows, T inv_temp, T softcap,      \
                     bool transform, const T* lse_ez, const T* coef) {                                              \
    chunk_grad<T, RowsFor<T>::type>(x, dx, rows, V, ld, targets, vocab_start, ignore_index, inv_temp_rows,         \
                                    inv_temp, softcap, transform, lse_ez, coef);                                    \
  }                                                                                                                 \
  void lm_chunk_fused(T* buf, int64_t rows, int64_t V, int64_t ld, const int64_t* targets, int64_t ignore_index,   \
                      const T* inv_temp_rows, T inv_temp, T softcap, T* stats, const T* coef, bool write_grad) {    \
    chunk_fused<T, RowsFor<T>::type>(buf, rows, V, ld, targets, ignore_index, inv_temp_rows, inv_temp, softcap,    \
                                     stats, coef, write_grad);                                                      \
  }

LOGLIK_LM_DEFINE(float)
LOGLIK_LM_DEFINE(double)

}  // namespace loglik::lm
