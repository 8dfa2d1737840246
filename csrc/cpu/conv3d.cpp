// Instantiations of the conv3d kernels (csrc/include/loglik/conv3d.hpp) for three instruction sets, chosen at run
// time: the wheel is built for baseline x86-64, and the kernel templates are compiled once more inside
// `#pragma GCC target` regions for AVX2+FMA and AVX-512, so the same binary runs everywhere and uses the widest
// vectors the CPU has.
#include "loglik/conv3d.hpp"

#include <climits>
#include <stdexcept>

#include "loglik/blas.hpp"

#define LOGLIK_CONV3D_ISA generic
#define LOGLIK_CONV3D_VEC_BYTES 16
#define LOGLIK_CONV3D_REGS 16
#include "loglik/conv3d.hpp"
#undef LOGLIK_CONV3D_ISA
#undef LOGLIK_CONV3D_VEC_BYTES
#undef LOGLIK_CONV3D_REGS

#if defined(__x86_64__) && defined(__GNUC__)
#define LOGLIK_CONV3D_X86 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LOGLIK_CONV3D_ISA avx2
#define LOGLIK_CONV3D_VEC_BYTES 32
#define LOGLIK_CONV3D_REGS 16
#include "loglik/conv3d.hpp"
#undef LOGLIK_CONV3D_ISA
#undef LOGLIK_CONV3D_VEC_BYTES
#undef LOGLIK_CONV3D_REGS
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define LOGLIK_CONV3D_ISA avx512
#define LOGLIK_CONV3D_VEC_BYTES 64
#define LOGLIK_CONV3D_REGS 32
#include "loglik/conv3d.hpp"
#undef LOGLIK_CONV3D_ISA
#undef LOGLIK_CONV3D_VEC_BYTES
#undef LOGLIK_CONV3D_REGS
#pragma GCC pop_options
#endif

namespace loglik::conv3d {
namespace {

enum class Isa { generic, avx2, avx512 };

Isa pick(const std::string& want) {
#ifdef LOGLIK_CONV3D_X86
  const bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const bool has512 = false, has2 = false;
#endif
  if (want == "auto") return has512 ? Isa::avx512 : has2 ? Isa::avx2 : Isa::generic;
  if (want == "generic") return Isa::generic;
  if (want == "avx2") {
    if (!has2) throw std::invalid_argument("isa: this CPU has no AVX2/FMA");
    return Isa::avx2;
  }
  if (want == "avx512") {
    if (!has512) throw std::invalid_argument("isa: this CPU has no AVX-512");
    return Isa::avx512;
  }
  throw std::invalid_argument("isa: expected one of 'auto', 'avx512', 'avx2', 'generic', got '" + want + "'");
}

const char* name(Isa i) { return i == Isa::avx512 ? "avx512" : i == Isa::avx2 ? "avx2" : "generic"; }

}  // namespace

#ifdef LOGLIK_CONV3D_X86
#define LOGLIK_CONV3D_DISPATCH(fn, ...)      \
  switch (isa) {                             \
    case Isa::avx512:                        \
      avx512::fn(__VA_ARGS__);               \
      break;                                 \
    case Isa::avx2:                          \
      avx2::fn(__VA_ARGS__);                 \
      break;                                 \
    default:                                 \
      generic::fn(__VA_ARGS__);              \
      break;                                 \
  }
#else
#define LOGLIK_CONV3D_DISPATCH(fn, ...) generic::fn(__VA_ARGS__);
#endif

namespace {

// A kernel that spans the whole energy axis with no padding and a 1 x 1 footprint in X and Y (a per-pixel dense
// layer written as a convolution, as at a VAE's latent) has one output sample per row: vectorising along energy
// would waste all but one lane, so "auto" runs it as BLAS matrix products over the (X * Y) pixels instead.
bool dense_geometry(const Geometry& g) {
  const int64_t P = g.in[0] * g.in[1], E = g.in[2];
  const bool unit_xy = g.k[0] == 1 && g.k[1] == 1 && g.stride[0] == 1 && g.stride[1] == 1 && g.pad[0] == 0 &&
                       g.pad[1] == 0;
  const bool full_e = g.k[2] == E && g.pad[2] == 0 && g.out[2] == 1;
  return unit_xy && full_e && P <= INT_MAX / 2 && g.c * E <= INT_MAX / 2 && g.o <= INT_MAX / 2;
}

// y[n, o, p] = sum_c W[o, c, :] . x[n, c, p, :] + bias[o]
template <class T>
void dense_forward(const Geometry& g, const T* x, const T* w, const T* bias, T* y) {
  using loglik::blas::Trans;
  const int P = static_cast<int>(g.in[0] * g.in[1]), E = static_cast<int>(g.in[2]);
  const int C = static_cast<int>(g.c), O = static_cast<int>(g.o);
  for (int64_t n = 0; n < g.n; ++n) {
    T* yn = y + n * O * P;
    for (int c = 0; c < C; ++c)
      loglik::blas::gemm(Trans::N, Trans::T, O, P, E, T(1), w + c * E, C * E, x + (n * C + c) * P * E, E,
                         c ? T(1) : T(0), yn, P);
    if (bias)
      for (int o = 0; o < O; ++o)
        for (int p = 0; p < P; ++p) yn[o * P + p] += bias[o];
  }
}

// gx[n, c, p, :] = sum_o gy[n, o, p] W[o, c, :]
template <class T>
void dense_grad_input(const Geometry& g, const T* gy, const T* w, T* gx) {
  using loglik::blas::Trans;
  const int P = static_cast<int>(g.in[0] * g.in[1]), E = static_cast<int>(g.in[2]);
  const int C = static_cast<int>(g.c), O = static_cast<int>(g.o);
  for (int64_t n = 0; n < g.n; ++n)
    for (int c = 0; c < C; ++c)
      loglik::blas::gemm(Trans::T, Trans::N, P, E, O, T(1), gy + n * O * P, P, w + c * E, C * E, T(0),
                         gx + (n * C + c) * P * E, E);
}

// gw[o, c, :] = sum_{n, p} gy[n, o, p] x[n, c, p, :]
template <class T>
void dense_grad_weight(const Geometry& g, const T* x, const T* gy, T* gw) {
  using loglik::blas::Trans;
  const int P = static_cast<int>(g.in[0] * g.in[1]), E = static_cast<int>(g.in[2]);
  const int C = static_cast<int>(g.c), O = static_cast<int>(g.o);
  for (int64_t n = 0; n < g.n; ++n)
    for (int c = 0; c < C; ++c)
      loglik::blas::gemm(Trans::N, Trans::N, O, E, P, T(1), gy + n * O * P, P, x + (n * C + c) * P * E, E,
                         n ? T(1) : T(0), gw + c * E, C * E);
}

}  // namespace

template <class T>
std::string forward(const Geometry& g, const T* x, const T* w, const T* bias, T* y, const std::string& want) {
  const Isa isa = pick(want);
  if (want == "auto" && dense_geometry(g)) {
    dense_forward(g, x, w, bias, y);
    return "blas";
  }
  LOGLIK_CONV3D_DISPATCH(forward_impl<T>, g, x, w, bias, y)
  return name(isa);
}

template <class T>
std::string grad_input(const Geometry& g, const T* gy, const T* w, T* gx, const std::string& want) {
  const Isa isa = pick(want);
  if (want == "auto" && dense_geometry(g)) {
    dense_grad_input(g, gy, w, gx);
    return "blas";
  }
  LOGLIK_CONV3D_DISPATCH(grad_input_impl<T>, g, gy, w, gx)
  return name(isa);
}

template <class T>
std::string grad_weight(const Geometry& g, const T* x, const T* gy, T* gw, const std::string& want) {
  const Isa isa = pick(want);
  if (want == "auto" && dense_geometry(g)) {
    dense_grad_weight(g, x, gy, gw);
    return "blas";
  }
  LOGLIK_CONV3D_DISPATCH(grad_weight_impl<T>, g, x, gy, gw)
  return name(isa);
}

template std::string forward<float>(const Geometry&, const float*, const float*, const float*, float*,
                                    const std::string&);
template std::string forward<double>(const Geometry&, const double*, const double*, const double*, double*,
                                     const std::string&);
template std::string grad_input<float>(const Geometry&, const float*, const float*, float*, const std::string&);
template std::string grad_input<double>(const Geometry&, const double*, const double*, double*, const std::string&);
template std::string grad_weight<float>(const Geometry&, const float*, const float*, float*, const std::string&);
template std::string grad_weight<double>(const Geometry&, const double*, const double*, double*,
                                         const std::string&);

}  // namespace loglik::conv3d
