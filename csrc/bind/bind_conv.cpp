#include "bind.hpp"

namespace py = pybind11;

void bind_conv(py::module_& m) {}
