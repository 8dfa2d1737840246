// CUDA kernels: log-probs, log-sum-exp and entropy from logits in one pass, and their gradient.
// C ABI in loglik/logprobs_cuda.hpp (no torch headers: this file compiles with plain nvcc, and Python calls it
// through ctypes). One thread block per row; each thread keeps an online (max, sum-exp, sum p (z - max)) triple over
// a strided slice of the row, then the block merges the triples (warp shuffles, then shared memory).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>

#include "loglik/logprobs_cuda.hpp"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

thread_local char g_last_error[256] = "";

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Online statistics of a set of logits z: m = max, s = sum exp(z - m), a = sum exp(z - m) (z - m).
// The empty set is (-inf, 0, 0); merging never forms inf - inf.
struct Stats {
  float m, s, a;
};

#define LOGLIK_HD __host__ __device__ __forceinline__

LOGLIK_HD Stats merge(Stats x, Stats y) {
  if (x.s == 0.f) return y;
  if (y.s == 0.f) return x;
  const float m = fmaxf(x.m, y.m);
  const float wx = expf(x.m - m), wy = expf(y.m - m);
  Stats r;
  r.m = m;
  r.s = wx * x.s + wy * y.s;
  r.a = wx * (x.a + (x.m - m) * x.s) + wy * (y.a + (y.m - m) * y.s);
  return r;
}

LOGLIK_HD Stats push(Stats st, float z) {
  if (z == -INFINITY) return st;  // a masked logit (probability 0) changes nothing
  if (z <= st.m) {
    const float d = z - st.m;
    const float e = expf(d);
    st.s += e;
    if (e > 0.f) st.a += e * d;
  } else {
    // new max: rescale the old sums to the new reference point z
    const float d = st.m - z;  // < 0 (or -inf on the first element, where s == 0)
    const float w = st.s > 0.f ? expf(d) : 0.f;
    st.a = st.s > 0.f ? w * (st.a + d * st.s) : 0.f;
    st.s = w * st.s + 1.f;
    st.m = z;
  }
  return st;
}

LOGLIK_HD float cap(float x, float softcap) { return softcap > 0.f ? softcap * tanhf(x / softcap) : x; }

LOGLIK_HD float transform(float x, float inv_temp, float softcap) { return cap(x, softcap) * inv_temp; }

// Row results from the merged statistics (written by one thread).
LOGLIK_HD void finalize(Stats st, float zt, bool ignored, float* logprob, float* lse, float* entropy) {
  const float log_s = logf(st.s);
  const float l = st.m + log_s;
  *lse = l;
  *logprob = ignored ? 0.f : zt - l;
  if (entropy) *entropy = ignored ? 0.f : fmaxf(log_s - st.a / st.s, 0.f);
}

// d loss / d x_j for one raw logit x_j (y = softcap(x), z = y * it, log p = z - lse).
LOGLIK_HD float grad_element(float x, bool is_target, float it, float softcap, float l, float h, float g_lp,
                             float g_ent, float g_lse) {
  const float y = cap(x, softcap);
  const float logp = y * it - l;
  const float p = expf(logp);
  float dz = is_target ? g_lp : 0.f;
  if (p > 0.f) dz += -p * (g_lp - g_lse) - g_ent * p * (logp + h);  // p == 0 also covers logits of -inf
  float dx = dz * it;
  if (softcap > 0.f) {
    const float r = y / softcap;
    dx *= 1.f - r * r;
  }
  return dx;
}

__device__ Stats block_merge(Stats st) {
  __shared__ float sm[kWarps], ss[kWarps], sa[kWarps];
  for (int off = 16; off > 0; off >>= 1) {
    Stats o;
    o.m = __shfl_xor_sync(0xffffffffu, st.m, off);
    o.s = __shfl_xor_sync(0xffffffffu, st.s, off);
    o.a = __shfl_xor_sync(0xffffffffu, st.a, off);
    st = merge(st, o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sm[warp] = st.m;
    ss[warp] = st.s;
    sa[warp] = st.a;
  }
  __syncthreads();
  Stats r{-INFINITY, 0.f, 0.f};
  for (int w = 0; w < kWarps; ++w) r = merge(r, Stats{sm[w], ss[w], sa[w]});
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    logprobs_fwd_kernel(const T* __restrict__ logits, int64_t v, int64_t row_stride, const int64_t* __restrict__ targets,
                        int64_t ignore_index, float inv_temp, const float* __restrict__ inv_temp_rows, float softcap,
                        float* __restrict__ logprobs, float* __restrict__ lse, float* __restrict__ entropy) {
  const int64_t row = blockIdx.x;
  const T* x = logits + row * row_stride;
  const float it = inv_temp_rows ? inv_temp_rows[row] : inv_temp;
  Stats st{-INFINITY, 0.f, 0.f};
  for (int64_t j = threadIdx.x; j < v; j += kThreads) st = push(st, transform(to_float(x[j]), it, softcap));
  st = block_merge(st);
  if (threadIdx.x == 0) {
    const int64_t t = targets[row];
    const float zt = (t >= 0 && t < v) ? transform(to_float(x[t]), it, softcap) : 0.f;
    finalize(st, zt, t == ignore_index, logprobs + row, lse + row, entropy ? entropy + row : nullptr);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    logprobs_bwd_kernel(const T* __restrict__ logits, int64_t v, int64_t row_stride, const int64_t* __restrict__ targets,
                        int64_t ignore_index, float inv_temp, const float* __restrict__ inv_temp_rows, float softcap,
                        const float* __restrict__ lse, const float* __restrict__ entropy,
                        const float* __restrict__ grad_logprobs, const float* __restrict__ grad_entropy,
                        const float* __restrict__ grad_lse, T* __restrict__ grad_logits, int64_t grad_row_stride) {
  const int64_t row = blockIdx.x;
  const T* x = logits + row * row_stride;
  T* g = grad_logits + row * grad_row_stride;
  const int64_t t = targets[row];
  const bool ignored = t == ignore_index;
  const float it = inv_temp_rows ? inv_temp_rows[row] : inv_temp;
  const float g_lp = (ignored || !grad_logprobs) ? 0.f : grad_logprobs[row];
  const float g_ent = (ignored || !grad_entropy) ? 0.f : grad_entropy[row];
  const float g_lse = (ignored || !grad_lse) ? 0.f : grad_lse[row];
  const float l = lse[row];
  const float h = (entropy && g_ent != 0.f) ? entropy[row] : 0.f;
  for (int64_t j = threadIdx.x; j < v; j += kThreads) {
    const float dx = grad_element(to_float(x[j]), j == t, it, softcap, l, h, g_lp, g_ent, g_lse);
    g[j] = from_float<T>(ignored ? 0.f : dx);
  }
}

int fail(cudaError_t err, const char* where) {
  std::snprintf(g_last_error, sizeof(g_last_error), "%s: %s", where, cudaGetErrorString(err));
  return static_cast<int>(err);
}

int check_launch(const char* where) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return fail(err, where);
  g_last_error[0] = '\0';
  return 0;
}

int bad_argument(const char* what) {
  std::snprintf(g_last_error, sizeof(g_last_error), "loglik_cuda: %s", what);
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace

extern "C" int loglik_cuda_logprobs_fwd(const void* logits, int dtype, int64_t n, int64_t v, int64_t row_stride,
                                        const int64_t* targets, int64_t ignore_index, float inv_temp,
                                        const float* inv_temp_rows, float softcap, float* logprobs, float* lse,
                                        float* entropy, void* stream) {
  if (n < 0 || v < 1 || row_stride < v) return bad_argument("need n >= 0, v >= 1 and row_stride >= v");
  if (n == 0) return 0;
  if (n > 2147483647LL) return bad_argument("n must fit the grid (< 2^31)");
  const dim3 grid(static_cast<unsigned>(n));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case LOGLIK_CUDA_F32:
      logprobs_fwd_kernel<float><<<grid, kThreads, 0, s>>>(static_cast<const float*>(logits), v, row_stride, targets,
                                                           ignore_index, inv_temp, inv_temp_rows, softcap, logprobs,
                                                           lse, entropy);
      break;
    case LOGLIK_CUDA_F16:
      logprobs_fwd_kernel<__half><<<grid, kThreads, 0, s>>>(static_cast<const __half*>(logits), v, row_stride,
                                                            targets, ignore_index, inv_temp, inv_temp_rows, softcap,
                                                            logprobs, lse, entropy);
      break;
    case LOGLIK_CUDA_BF16:
      logprobs_fwd_kernel<__nv_bfloat16><<<grid, kThreads, 0, s>>>(
          static_cast<const __nv_bfloat16*>(logits), v, row_stride, targets, ignore_index, inv_temp, inv_temp_rows,
          softcap, logprobs, lse, entropy);
      break;
    default:
      return bad_argument("unknown dtype code");
  }
  return check_launch("loglik_cuda_logprobs_fwd");
}

extern "C" int loglik_cuda_logprobs_bwd(const void* logits, int dtype, int64_t n, int64_t v, int64_t row_stride,
                                        const int64_t* targets, int64_t ignore_index, float inv_temp,
                                        const float* inv_temp_rows, float softcap, const float* lse,
                                        const float* entropy, const float* grad_logprobs, const float* grad_entropy,
                                        const float* grad_lse, void* grad_logits, int64_t grad_row_stride,
                                        void* stream) {
  if (n < 0 || v < 1 || row_stride < v || grad_row_stride < v)
    return bad_argument("need n >= 0, v >= 1 and row strides >= v");
  if (grad_entropy && !entropy) return bad_argument("grad_entropy needs the forward's entropy");
  if (n == 0) return 0;
  if (n > 2147483647LL) return bad_argument("n must fit the grid (< 2^31)");
  const dim3 grid(static_cast<unsigned>(n));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case LOGLIK_CUDA_F32:
      logprobs_bwd_kernel<float><<<grid, kThreads, 0, s>>>(
          static_cast<const float*>(logits), v, row_stride, targets, ignore_index, inv_temp, inv_temp_rows, softcap,
          lse, entropy, grad_logprobs, grad_entropy, grad_lse, static_cast<float*>(grad_logits), grad_row_stride);
      break;
    case LOGLIK_CUDA_F16:
      logprobs_bwd_kernel<__half><<<grid, kThreads, 0, s>>>(
          static_cast<const __half*>(logits), v, row_stride, targets, ignore_index, inv_temp, inv_temp_rows, softcap,
          lse, entropy, grad_logprobs, grad_entropy, grad_lse, static_cast<__half*>(grad_logits), grad_row_stride);
      break;
    case LOGLIK_CUDA_BF16:
      logprobs_bwd_kernel<__nv_bfloat16><<<grid, kThreads, 0, s>>>(
          static_cast<const __nv_bfloat16*>(logits), v, row_stride, targets, ignore_index, inv_temp, inv_temp_rows,
          softcap, lse, entropy, grad_logprobs, grad_entropy, grad_lse, static_cast<__nv_bfloat16*>(grad_logits),
          grad_row_stride);
      break;
    default:
      return bad_argument("unknown dtype code");
  }
  return check_launch("loglik_cuda_logprobs_bwd");
}

// Host emulation of the two kernels for float32 logits: the same per-thread strided online updates for kThreads
// virtual threads, the same butterfly (xor) merge inside each warp and the same sequential merge of the warps, and
// the same per-element gradient, so the arithmetic of the device code can be tested on a machine without a GPU.
extern "C" int loglik_cuda_host_logprobs_fwd(const float* logits, int64_t n, int64_t v, int64_t row_stride,
                                             const int64_t* targets, int64_t ignore_index, float inv_temp,
                                             const float* inv_temp_rows, float softcap, float* logprobs, float* lse,
                                             float* entropy) {
  if (n < 0 || v < 1 || row_stride < v) return bad_argument("need n >= 0, v >= 1 and row_stride >= v");
  Stats lanes[kThreads], next[32];
  for (int64_t row = 0; row < n; ++row) {
    const float* x = logits + row * row_stride;
    const float it = inv_temp_rows ? inv_temp_rows[row] : inv_temp;
    for (int tid = 0; tid < kThreads; ++tid) {
      Stats st{-INFINITY, 0.f, 0.f};
      for (int64_t j = tid; j < v; j += kThreads) st = push(st, transform(x[j], it, softcap));
      lanes[tid] = st;
    }
    Stats r{-INFINITY, 0.f, 0.f};
    for (int w = 0; w < kWarps; ++w) {
      Stats* warp = lanes + 32 * w;
      for (int off = 16; off > 0; off >>= 1) {
        for (int lane = 0; lane < 32; ++lane) next[lane] = merge(warp[lane], warp[lane ^ off]);
        for (int lane = 0; lane < 32; ++lane) warp[lane] = next[lane];
      }
      r = merge(r, warp[0]);
    }
    const int64_t t = targets[row];
    const float zt = (t >= 0 && t < v) ? transform(x[t], it, softcap) : 0.f;
    finalize(r, zt, t == ignore_index, logprobs + row, lse + row, entropy ? entropy + row : nullptr);
  }
  return 0;
}

extern "C" int loglik_cuda_host_logprobs_bwd(const float* logits, int64_t n, int64_t v, int64_t row_stride,
                                             const int64_t* targets, int64_t ignore_index, float inv_temp,
                                             const float* inv_temp_rows, float softcap, const float* lse,
                                             const float* entropy, const float* grad_logprobs,
                                             const float* grad_entropy, const float* grad_lse, float* grad_logits,
                                             int64_t grad_row_stride) {
  if (n < 0 || v < 1 || row_stride < v || grad_row_stride < v)
    return bad_argument("need n >= 0, v >= 1 and row strides >= v");
  if (grad_entropy && !entropy) return bad_argument("grad_entropy needs the forward's entropy");
  for (int64_t row = 0; row < n; ++row) {
    const int64_t t = targets[row];
    const bool ignored = t == ignore_index;
    const float it = inv_temp_rows ? inv_temp_rows[row] : inv_temp;
    const float g_lp = (ignored || !grad_logprobs) ? 0.f : grad_logprobs[row];
    const float g_ent = (ignored || !grad_entropy) ? 0.f : grad_entropy[row];
    const float g_lse = (ignored || !grad_lse) ? 0.f : grad_lse[row];
    const float h = (entropy && g_ent != 0.f) ? entropy[row] : 0.f;
    for (int64_t j = 0; j < v; ++j) {
      const float dx = grad_element(logits[row * row_stride + j], j == t, it, softcap, lse[row], h, g_lp, g_ent, g_lse);
      grad_logits[row * grad_row_stride + j] = ignored ? 0.f : dx;
    }
  }
  return 0;
}

extern "C" const char* loglik_cuda_last_error(void) { return g_last_error; }

extern "C" int loglik_cuda_abi_version(void) { return 1; }
