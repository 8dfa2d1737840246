#include "bind.hpp"

namespace py = pybind11;

void bind_cluster(py::module_& m) {}
