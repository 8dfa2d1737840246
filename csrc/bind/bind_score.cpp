#include "bind.hpp"

namespace py = pybind11;

void bind_score(py::module_& m) {}
