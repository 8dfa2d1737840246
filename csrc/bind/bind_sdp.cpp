#include "bind.hpp"

namespace py = pybind11;

void bind_sdp(py::module_& m) {}
