// Bindings of the score-estimation core: the streaming Gaussian-KDE log-density / score reduction.
#include <cstdint>
#include <optional>
#include <string>

#include "bind.hpp"
#include "loglik/kde.hpp"

namespace py = pybind11;
using loglik::bind::carray;
using loglik::bind::require_ndim;

namespace {

template <class T>
py::tuple kde_reduce_py(const carray<T>& x, const carray<T>& samples, const std::optional<carray<T>>& log_weights,
                        double bandwidth, bool want_score, bool want_logpdf, const std::string& isa) {
  require_ndim(x, 2, "x");
  require_ndim(samples, 2, "samples");
  const int64_t m = x.shape(0), d = x.shape(1), n = samples.shape(0);
  if (samples.shape(1) != d) throw py::value_error("samples: expected " + std::to_string(d) + " columns like x");
  if (n < 1) throw py::value_error("samples: expected at least one sample");
  if (d < 1) throw py::value_error("x: expected at least one column");
  if (!(bandwidth > 0) || !std::isfinite(bandwidth)) throw py::value_error("bandwidth: expected a finite number > 0");
  const T* lw = nullptr;
  if (log_weights) {
    require_ndim(*log_weights, 1, "log_weights");
    if (log_weights->shape(0) != n) throw py::value_error("log_weights: expected one entry per sample");
    lw = log_weights->data();
  }
  py::array_t<T> score = want_score ? py::array_t<T>({m, d}) : py::array_t<T>(0);
  py::array_t<T> logpdf = want_logpdf ? py::array_t<T>(m) : py::array_t<T>(0);
  T* sp = want_score ? score.mutable_data() : nullptr;
  T* lp = want_logpdf ? logpdf.mutable_data() : nullptr;
  const T* xp = x.data();
  const T* smp = samples.data();
  {
    py::gil_scoped_release release;
    if constexpr (std::is_same_v<T, float>)
      loglik::kde::kde_reduce_f32(xp, m, smp, n, d, lw, bandwidth, sp, lp, isa.c_str());
    else
      loglik::kde::kde_reduce_f64(xp, m, smp, n, d, lw, bandwidth, sp, lp, isa.c_str());
  }
  return py::make_tuple(want_score ? py::object(score) : py::none(), want_logpdf ? py::object(logpdf) : py::none());
}

}  // namespace

void bind_score(py::module_& m) {
  const char* doc =
      "Gaussian KDE reduction: (score [M, D] or None, logpdf [M] or None) at x [M, D] from samples [N, D] with "
      "normalised log weights [N] (None: uniform) and a scalar bandwidth; one streaming log-sum-exp over N.";
  m.def("kde_reduce_f32", &kde_reduce_py<float>, py::arg("x"), py::arg("samples"), py::arg("log_weights"),
        py::arg("bandwidth"), py::arg("want_score") = true, py::arg("want_logpdf") = true, py::arg("isa") = "auto",
        doc);
  m.def("kde_reduce_f64", &kde_reduce_py<double>, py::arg("x"), py::arg("samples"), py::arg("log_weights"),
        py::arg("bandwidth"), py::arg("want_score") = true, py::arg("want_logpdf") = true, py::arg("isa") = "auto",
        doc);
  m.def(
      "kde_active_isa", [](const std::string& isa) { return loglik::kde::active_isa(isa.c_str()); },
      py::arg("isa") = "auto", "The instruction set the KDE kernel uses for a request (auto, avx512, avx2, baseline).");
}
