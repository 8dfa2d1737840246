// Thread control shared by every kernel: one setting drives both OpenMP and the linked OpenBLAS, and BLAS is only
// ever called outside OpenMP parallel regions so the two never multiply into oversubscription.
#pragma once
#include <omp.h>

namespace loglik {
void set_num_threads(int n);
int get_num_threads();
}  // namespace loglik
