// The loglik._C extension module. Every kernel is bound in csrc/bind/bind_<domain>.cpp.
#include "bind/bind.hpp"

PYBIND11_MODULE(_C, m) {
  m.doc() = "loglik compiled core (C++17, OpenMP, OpenBLAS)";
  bind_runtime(m);
  bind_sdp(m);
  bind_mixture(m);
  bind_lm(m);
  bind_score(m);
  bind_conv(m);
}
