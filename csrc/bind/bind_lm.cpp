#include "bind.hpp"

namespace py = pybind11;

void bind_lm(py::module_& m) {}
