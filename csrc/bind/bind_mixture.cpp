#include "bind.hpp"

namespace py = pybind11;

void bind_mixture(py::module_& m) {}
