// Instantiations of the conv3d kernels (csrc/include/loglik/conv3d.hpp) for three instruction sets, chosen at run
// time: the wheel is built for baseline x86-64, and the kernel templates are compiled once more inside
// `#pragma GCC target` regions for AVX2+FMA and AVX-512, so the same binary runs everywhere and uses the widest
// vectors the CPU has.
#include "loglik/conv3d.hpp"

#include <stdexcept>

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

template <class T>
std::string forward(const Geometry& g, const T* x, const T* w, const T* bias, T* y, const std::string& want) {
  const Isa isa = pick(want);
  LOGLIK_CONV3D_DISPATCH(forward_impl<T>, g, x, w, bias, y)
  return name(isa);
}

template <class T>
std::string grad_input(const Geometry& g, const T* gy, const T* w, T* gx, const std::string& want) {
  const Isa isa = pick(want);
  LOGLIK_CONV3D_DISPATCH(grad_input_impl<T>, g, gy, w, gx)
  return name(isa);
}

template <class T>
std::string grad_weight(const Geometry& g, const T* x, const T* gy, T* gw, const std::string& want) {
  const Isa isa = pick(want);
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
