// Shared helpers for the pybind11 layer (the only code that sees Python). Each domain has one bind_<domain>.cpp
// with thin m.def calls; bindings.cpp owns the module. Splitting the binding code by domain keeps rebuilds small.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

namespace loglik::bind {
namespace py = pybind11;

template <class T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// Raise ValueError naming the argument when an array does not have the expected number of dimensions.
template <class A>
inline void require_ndim(const A& a, int ndim, const char* name) {
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) + "-D array, got " +
                          std::to_string(a.ndim()) + "-D");
}

}  // namespace loglik::bind

void bind_runtime(pybind11::module_& m);
void bind_sdp(pybind11::module_& m);
void bind_mixture(pybind11::module_& m);
void bind_lm(pybind11::module_& m);
void bind_score(pybind11::module_& m);
void bind_conv(pybind11::module_& m);
