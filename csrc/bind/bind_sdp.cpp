// Bindings of the SDP clustering solvers (loglik/sdp.hpp). Validation of user input happens in python/loglik/sdp.py;
// these functions check shapes again so that a direct call can never read out of bounds.
#include "bind.hpp"
#include "loglik/sdp.hpp"

namespace py = pybind11;
using loglik::bind::require_ndim;

namespace {

template <class T>
using strict_array = py::array_t<T, py::array::c_style>;

using f64_array = py::array_t<double, py::array::c_style | py::array::forcecast>;

template <class T>
py::tuple bm_solve_py(strict_array<T> W, py::object c_obj, f64_array t, strict_array<T> U0, f64_array y0,
                      double sigma, int max_iter, int max_outer, int inner_max, double tol, double tol_kkt,
                      double sigma_max, int verbose) {
  require_ndim(W, 3, "W");
  require_ndim(U0, 3, "U");
  require_ndim(t, 1, "t");
  require_ndim(y0, 1, "y");
  const int B = int(W.shape(0)), n = int(W.shape(1)), p = int(W.shape(2)), r = int(U0.shape(2));
  if (U0.shape(0) != B || U0.shape(1) != n) throw py::value_error("U: expected shape (B, n, r) matching W");
  if (t.shape(0) != B) throw py::value_error("t: expected one trace per block");
  if (y0.shape(0) != n) throw py::value_error("y: expected n multipliers");
  if (n < 1 || p < 1 || B < 1 || r < 1) throw py::value_error("W, U: empty dimensions");
  strict_array<T> c;
  const T* cptr = nullptr;
  if (!c_obj.is_none()) {
    c = py::cast<strict_array<T>>(c_obj);
    require_ndim(c, 2, "c");
    if (c.shape(0) != B || c.shape(1) != n) throw py::value_error("c: expected shape (B, n)");
    cptr = c.data();
  }
  strict_array<T> U({B, n, r});
  std::copy(U0.data(), U0.data() + std::size_t(B) * n * r, U.mutable_data());
  py::array_t<double> y(n);
  std::copy(y0.data(), y0.data() + n, y.mutable_data());
  loglik::sdp::BMOptions opt;
  opt.max_iter = max_iter;
  opt.max_outer = max_outer;
  opt.inner_max = inner_max;
  opt.tol = tol;
  opt.tol_kkt = tol_kkt;
  opt.sigma_max = sigma_max;
  opt.verbose = verbose;
  loglik::sdp::BMInfo info;
  {
    py::gil_scoped_release release;
    loglik::sdp::bm_solve<T>(n, p, B, r, W.data(), cptr, t.data(), U.mutable_data(), y.mutable_data(), &sigma, opt,
                             &info);
  }
  py::dict d;
  d["n_iter"] = info.n_iter;
  d["n_outer"] = info.n_outer;
  d["converged"] = bool(info.converged);
  d["objective"] = info.objective;
  d["feas_inf"] = info.feas_inf;
  d["feas_rms"] = info.feas_rms;
  d["kkt"] = info.kkt;
  d["sigma"] = info.sigma;
  d["n_backtracks"] = info.n_backtracks;
  return py::make_tuple(U, y, d);
}

template <class T>
py::tuple admm_py(strict_array<T> X, int K, int max_iter, double tol, double tol_gap, double rho0, double relax,
                  int check_every, int verbose) {
  require_ndim(X, 2, "X");
  const int n = int(X.shape(0)), p = int(X.shape(1));
  if (n < 1 || p < 1) throw py::value_error("X: empty");
  if (K < 1 || K > n) throw py::value_error("n_clusters: expected 1 <= n_clusters <= n");
  strict_array<T> Z({n, n});
  loglik::sdp::ADMMOptions opt;
  opt.max_iter = max_iter;
  opt.tol = tol;
  opt.tol_gap = tol_gap;
  opt.rho0 = rho0;
  opt.relax = relax;
  opt.check_every = std::max(1, check_every);
  opt.verbose = verbose;
  loglik::sdp::ADMMInfo info;
  {
    py::gil_scoped_release release;
    loglik::sdp::admm_kmeans_sdp<T>(n, p, K, X.data(), Z.mutable_data(), opt, &info);
  }
  py::dict d;
  d["n_iter"] = info.n_iter;
  d["converged"] = bool(info.converged);
  d["objective"] = info.objective;
  d["dual_bound"] = info.dual_bound;
  d["gap"] = info.gap;
  d["primal_res"] = info.primal_res;
  d["dual_res"] = info.dual_res;
  d["nonneg_viol"] = info.nonneg_viol;
  d["rho"] = info.rho;
  d["eig_full"] = info.eig_full;
  return py::make_tuple(Z, d);
}

template <class T>
py::tuple round_py(strict_array<T> Y, int K, int n_init, int max_iter, std::uint64_t seed) {
  require_ndim(Y, 2, "Y");
  const int n = int(Y.shape(0)), d = int(Y.shape(1));
  if (K < 1 || K > n) throw py::value_error("n_clusters: expected 1 <= n_clusters <= n");
  if (d < 1) throw py::value_error("Y: empty");
  py::array_t<std::int64_t> labels(n);
  double inertia = 0;
  {
    py::gil_scoped_release release;
    inertia = loglik::sdp::round_kmeans<T>(n, d, K, Y.data(), n_init, max_iter, seed, labels.mutable_data());
  }
  return py::make_tuple(labels, inertia);
}

}  // namespace

void bind_sdp(py::module_& m) {
  const char* bm_doc =
      "Burer-Monteiro nonnegative low-rank augmented Lagrangian for min sum_b c_b^T Z_b 1 - <W_b W_b^T, Z_b> s.t. "
      "Z_b = U_b U_b^T, U_b >= 0, tr Z_b = t_b, sum_b Z_b 1 = 1. Returns (U, y, info).";
  auto bm_args = [](auto f, py::module_& mod, const char* doc) {
    mod.def("sdp_bm_solve", f, py::arg("W"), py::arg("c"), py::arg("t"), py::arg("U"), py::arg("y"),
            py::arg("sigma") = 0.0, py::arg("max_iter") = 20000, py::arg("max_outer") = 5000,
            py::arg("inner_max") = 50, py::arg("tol") = 1e-6, py::arg("tol_kkt") = 1e-6,
            py::arg("sigma_max") = 1e8, py::arg("verbose") = 0, doc);
  };
  bm_args(&bm_solve_py<float>, m, bm_doc);
  bm_args(&bm_solve_py<double>, m, bm_doc);
  const char* admm_doc = "ADMM for the K-means SDP on the full matrix of centred X. Returns (Z, info).";
  m.def("sdp_admm", &admm_py<float>, py::arg("X"), py::arg("n_clusters"), py::arg("max_iter") = 20000,
        py::arg("tol") = 1e-7, py::arg("tol_gap") = 1e-7, py::arg("rho0") = 0.0, py::arg("relax") = 1.6,
        py::arg("check_every") = 10, py::arg("verbose") = 0, admm_doc);
  m.def("sdp_admm", &admm_py<double>, py::arg("X"), py::arg("n_clusters"), py::arg("max_iter") = 20000,
        py::arg("tol") = 1e-7, py::arg("tol_gap") = 1e-7, py::arg("rho0") = 0.0, py::arg("relax") = 1.6,
        py::arg("check_every") = 10, py::arg("verbose") = 0, admm_doc);
  m.def("sdp_round_kmeans", &round_py<float>, py::arg("Y"), py::arg("n_clusters"), py::arg("n_init") = 10,
        py::arg("max_iter") = 300, py::arg("seed") = 0, "Lloyd K-means (k-means++ seeding) used to round SDPs.");
  m.def("sdp_round_kmeans", &round_py<double>, py::arg("Y"), py::arg("n_clusters"), py::arg("n_init") = 10,
        py::arg("max_iter") = 300, py::arg("seed") = 0, "Lloyd K-means (k-means++ seeding) used to round SDPs.");
}
