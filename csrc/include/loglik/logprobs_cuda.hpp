// C ABI of the optional CUDA kernels for log-probs from logits (csrc/cuda/logprobs.cu, library loglik_cuda).
//
// Plain C types only (no CUDA, torch or Python headers), so any framework can call it, and Python loads it with
// ctypes (python/loglik/_cuda_ext.py). Pointers are device pointers; `stream` is a cudaStream_t passed as void*
// (nullptr = the legacy default stream). Every function returns 0 on success or a cudaError_t code; the message of
// the last error is loglik_cuda_last_error().
//
// Per row i with target t_i (all math in float32, whatever the storage dtype):
//   y = softcap > 0 ? softcap * tanh(x / softcap) : x;   z = y * inv_temp_i
//   lse_i = log sum_v exp(z_v);  logprob_i = z[t_i] - lse_i;  entropy_i = lse_i - sum_v softmax(z)_v z_v
// Rows with t_i == ignore_index get logprob 0 and entropy 0 and a zero gradient row; a target outside [0, V) that
// is not ignore_index gets target logit 0 (no one-hot term), as in the Triton kernels.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Storage dtype of logits / grad_logits.
enum loglik_cuda_dtype { LOGLIK_CUDA_F32 = 0, LOGLIK_CUDA_F16 = 1, LOGLIK_CUDA_BF16 = 2 };

// Forward. logits [n, v] with row stride `row_stride` (elements, unit column stride); targets [n] int64;
// inv_temp_rows [n] float32 or nullptr (then the scalar inv_temp is used); softcap <= 0 means none.
// Outputs float32 [n]: logprobs, lse, entropy (entropy may be nullptr).
int loglik_cuda_logprobs_fwd(const void* logits, int dtype, int64_t n, int64_t v, int64_t row_stride,
                             const int64_t* targets, int64_t ignore_index, float inv_temp, const float* inv_temp_rows,
                             float softcap, float* logprobs, float* lse, float* entropy, void* stream);

// Backward: grad_logits [n, v] (row stride grad_row_stride, same dtype as logits) of
// sum_i grad_logprobs_i * logprob_i + grad_entropy_i * entropy_i + grad_lse_i * lse_i.
// lse from the forward; entropy is needed only when grad_entropy is given. Any grad_* may be nullptr (zero).
int loglik_cuda_logprobs_bwd(const void* logits, int dtype, int64_t n, int64_t v, int64_t row_stride,
                             const int64_t* targets, int64_t ignore_index, float inv_temp, const float* inv_temp_rows,
                             float softcap, const float* lse, const float* entropy, const float* grad_logprobs,
                             const float* grad_entropy, const float* grad_lse, void* grad_logits,
                             int64_t grad_row_stride, void* stream);

// Host (CPU) emulations of the two kernels for float32 logits, with the same arithmetic and the same merge order
// as the device code (host pointers; for testing the kernels' math on machines without a GPU).
int loglik_cuda_host_logprobs_fwd(const float* logits, int64_t n, int64_t v, int64_t row_stride,
                                  const int64_t* targets, int64_t ignore_index, float inv_temp,
                                  const float* inv_temp_rows, float softcap, float* logprobs, float* lse,
                                  float* entropy);
int loglik_cuda_host_logprobs_bwd(const float* logits, int64_t n, int64_t v, int64_t row_stride,
                                  const int64_t* targets, int64_t ignore_index, float inv_temp,
                                  const float* inv_temp_rows, float softcap, const float* lse, const float* entropy,
                                  const float* grad_logprobs, const float* grad_entropy, const float* grad_lse,
                                  float* grad_logits, int64_t grad_row_stride);

// Message of the last failing call in this thread ("" if none).
const char* loglik_cuda_last_error(void);

// ABI version of this header (bumped on any signature change).
int loglik_cuda_abi_version(void);

#ifdef __cplusplus
}
#endif
