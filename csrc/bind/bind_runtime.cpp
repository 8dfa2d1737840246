#include <string>

#include "bind.hpp"
#include "loglik/blas.hpp"
#include "loglik/parallel.hpp"

namespace py = pybind11;

namespace {
py::dict build_info() {
  py::dict d;
  d["version"] = LOGLIK_VERSION;
  d["build_flags"] = LOGLIK_BUILD_FLAGS;
  d["openmp"] = _OPENMP;
  d["blas"] = std::string(scipy_openblas_get_config());
  return d;
}
}  // namespace

void bind_runtime(py::module_& m) {
  m.def("set_num_threads", &loglik::set_num_threads, py::arg("n"),
        "Set the thread count used by loglik's OpenMP kernels and its OpenBLAS.");
  m.def("get_num_threads", &loglik::get_num_threads);
  m.def("openblas_num_threads", []() { return scipy_openblas_get_num_threads(); });
  m.def("build_info", &build_info);
}
