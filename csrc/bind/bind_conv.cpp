// Bindings of the conv3d kernels. Shapes and dtypes are checked in python/loglik/conv.py too; these checks keep a
// direct call from crashing. All work runs with the GIL released.
#include <array>
#include <string>

#include "bind.hpp"
#include "loglik/conv3d.hpp"

namespace py = pybind11;
using loglik::bind::require_ndim;
using loglik::conv3d::Geometry;

namespace {

using Triple = std::array<int64_t, 3>;

Geometry make_geometry(const std::vector<py::ssize_t>& xs, const std::vector<py::ssize_t>& ws, const Triple& stride,
                       const Triple& padding, const Triple& dilation) {
  Geometry g;
  g.n = xs[0];
  g.c = xs[1];
  g.o = ws[0];
  if (ws[1] != xs[1])
    throw py::value_error("weight: expected " + std::to_string(xs[1]) + " input channels (dim 1), got " +
                          std::to_string(ws[1]));
  for (int a = 0; a < 3; ++a) {
    g.in[a] = xs[2 + a];
    g.k[a] = ws[2 + a];
    g.stride[a] = stride[a];
    g.pad[a] = padding[a];
    g.dil[a] = dilation[a];
  }
  const std::string err = g.finalize();
  if (!err.empty()) throw py::value_error("conv3d: " + err);
  return g;
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

template <class T>
py::tuple forward_t(const py::array& xa, const py::array& wa, const py::object& bias_obj, const Triple& stride,
                    const Triple& padding, const Triple& dilation, const std::string& isa) {
  auto x = loglik::bind::carray<T>::ensure(xa);
  auto w = loglik::bind::carray<T>::ensure(wa);
  const Geometry g = make_geometry(shape_of(x), shape_of(w), stride, padding, dilation);
  loglik::bind::carray<T> b;
  const T* bp = nullptr;
  if (!bias_obj.is_none()) {
    b = loglik::bind::carray<T>::ensure(bias_obj);
    require_ndim(b, 1, "bias");
    if (b.shape(0) != g.o) throw py::value_error("bias: expected " + std::to_string(g.o) + " values");
    bp = b.data();
  }
  loglik::bind::carray<T> y({g.n, g.o, g.out[0], g.out[1], g.out[2]});
  std::string used;
  {
    py::gil_scoped_release release;
    used = loglik::conv3d::forward<T>(g, x.data(), w.data(), bp, y.mutable_data(), isa);
  }
  return py::make_tuple(y, used);
}

template <class T>
py::tuple grad_input_t(const py::array& gya, const py::array& wa, const std::vector<int64_t>& input_shape,
                       const Triple& stride, const Triple& padding, const Triple& dilation, const std::string& isa) {
  auto gy = loglik::bind::carray<T>::ensure(gya);
  auto w = loglik::bind::carray<T>::ensure(wa);
  if (input_shape.size() != 5) throw py::value_error("input_shape: expected 5 sizes");
  const std::vector<py::ssize_t> xs(input_shape.begin(), input_shape.end());
  const Geometry g = make_geometry(xs, shape_of(w), stride, padding, dilation);
  const std::vector<py::ssize_t> ys = {g.n, g.o, g.out[0], g.out[1], g.out[2]};
  if (shape_of(gy) != ys) throw py::value_error("grad_output: shape does not match the convolution's output");
  loglik::bind::carray<T> gx(xs);
  std::string used;
  {
    py::gil_scoped_release release;
    used = loglik::conv3d::grad_input<T>(g, gy.data(), w.data(), gx.mutable_data(), isa);
  }
  return py::make_tuple(gx, used);
}

template <class T>
py::tuple grad_weight_t(const py::array& xa, const py::array& gya, const std::vector<int64_t>& weight_shape,
                        const Triple& stride, const Triple& padding, const Triple& dilation, const std::string& isa) {
  auto x = loglik::bind::carray<T>::ensure(xa);
  auto gy = loglik::bind::carray<T>::ensure(gya);
  if (weight_shape.size() != 5) throw py::value_error("weight_shape: expected 5 sizes");
  const std::vector<py::ssize_t> ws(weight_shape.begin(), weight_shape.end());
  const Geometry g = make_geometry(shape_of(x), ws, stride, padding, dilation);
  const std::vector<py::ssize_t> ys = {g.n, g.o, g.out[0], g.out[1], g.out[2]};
  if (shape_of(gy) != ys) throw py::value_error("grad_output: shape does not match the convolution's output");
  loglik::bind::carray<T> gw(ws);
  std::string used;
  {
    py::gil_scoped_release release;
    used = loglik::conv3d::grad_weight<T>(g, x.data(), gy.data(), gw.mutable_data(), isa);
  }
  return py::make_tuple(gw, used);
}

bool is_f64(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<double>())) return true;
  if (a.dtype().is(py::dtype::of<float>())) return false;
  throw py::type_error(std::string(name) + ": expected float32 or float64");
}

void check5(const py::array& a, const char* name) {
  require_ndim(a, 5, name);
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": expected a C-contiguous array");
}

}  // namespace

void bind_conv(py::module_& m) {
  m.def(
      "conv3d_forward",
      [](const py::array& x, const py::array& w, const py::object& bias, const Triple& stride, const Triple& padding,
         const Triple& dilation, const std::string& isa) {
        check5(x, "x");
        check5(w, "weight");
        if (x.dtype().not_equal(w.dtype())) throw py::type_error("weight: dtype differs from x");
        return is_f64(x, "x") ? forward_t<double>(x, w, bias, stride, padding, dilation, isa)
                              : forward_t<float>(x, w, bias, stride, padding, dilation, isa);
      },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
      py::arg("isa") = "auto",
      "3D cross-correlation of x (N, C, X, Y, E) with weight (O, C, KX, KY, KE). Returns (y, isa used).");
  m.def(
      "conv3d_grad_input",
      [](const py::array& gy, const py::array& w, const std::vector<int64_t>& input_shape, const Triple& stride,
         const Triple& padding, const Triple& dilation, const std::string& isa) {
        check5(gy, "grad_output");
        check5(w, "weight");
        if (gy.dtype().not_equal(w.dtype())) throw py::type_error("weight: dtype differs from grad_output");
        return is_f64(gy, "grad_output") ? grad_input_t<double>(gy, w, input_shape, stride, padding, dilation, isa)
                                         : grad_input_t<float>(gy, w, input_shape, stride, padding, dilation, isa);
      },
      py::arg("grad_output"), py::arg("weight"), py::arg("input_shape"), py::arg("stride"), py::arg("padding"),
      py::arg("dilation"), py::arg("isa") = "auto", "Gradient of conv3d with respect to x (a transposed convolution).");
  m.def(
      "conv3d_grad_weight",
      [](const py::array& x, const py::array& gy, const std::vector<int64_t>& weight_shape, const Triple& stride,
         const Triple& padding, const Triple& dilation, const std::string& isa) {
        check5(x, "x");
        check5(gy, "grad_output");
        if (gy.dtype().not_equal(x.dtype())) throw py::type_error("grad_output: dtype differs from x");
        return is_f64(x, "x") ? grad_weight_t<double>(x, gy, weight_shape, stride, padding, dilation, isa)
                              : grad_weight_t<float>(x, gy, weight_shape, stride, padding, dilation, isa);
      },
      py::arg("x"), py::arg("grad_output"), py::arg("weight_shape"), py::arg("stride"), py::arg("padding"),
      py::arg("dilation"), py::arg("isa") = "auto", "Gradient of conv3d with respect to the weight.");
}
