// Bindings of the mixture kernels: gmm_logpdf, gmm_em, kmeans (float32 and float64 overloads; the Python layer
// passes arrays of one dtype, validated). The GIL is released around all work.
#include <cstring>

#include "bind.hpp"
#include "loglik/mixture.hpp"

namespace py = pybind11;
using loglik::bind::carray;
using loglik::bind::require_ndim;
namespace mx = loglik::mixture;

namespace {

mx::CovType cov_type(int c) {
  if (c < 0 || c > 2) throw py::value_error("covariance: expected 0 (full), 1 (diag) or 2 (spherical)");
  return static_cast<mx::CovType>(c);
}

template <class T>
py::array_t<T> to_array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

py::array_t<std::int64_t> labels_array(const std::vector<std::int64_t>& v) {
  return to_array<std::int64_t>(v, {py::ssize_t(v.size())});
}

template <class T>
py::tuple gmm_logpdf(carray<T> X, carray<T> means, carray<T> cov, carray<T> weights, int covariance,
                     bool return_resp) {
  require_ndim(X, 2, "X");
  require_ndim(means, 2, "means");
  require_ndim(weights, 1, "weights");
  const auto ct = cov_type(covariance);
  const std::int64_t n = X.shape(0);
  const int p = int(X.shape(1)), K = int(means.shape(0));
  if (means.shape(1) != p) throw py::value_error("means: expected shape (K, p) with p = X.shape[1]");
  if (weights.shape(0) != K) throw py::value_error("weights: expected shape (K,)");
  if (cov.size() != mx::cov_size(ct, K, p)) throw py::value_error("covariances: wrong number of elements");
  py::array_t<T> log_prob({py::ssize_t(n), py::ssize_t(K)});
  py::array_t<T> log_density({py::ssize_t(n)});
  py::array_t<T> resp = return_resp ? py::array_t<T>({py::ssize_t(n), py::ssize_t(K)}) : py::array_t<T>(0);
  const T *x = X.data(), *mu = means.data(), *c = cov.data(), *w = weights.data();
  T *lp = log_prob.mutable_data(), *ld = log_density.mutable_data();
  T* r = return_resp ? resp.mutable_data() : nullptr;
  int bad = -1;
  {
    py::gil_scoped_release release;
    try {
      mx::gmm_logpdf<T>(n, p, K, x, mu, c, w, ct, lp, ld, r);
    } catch (const mx::NotPositiveDefinite& e) {
      bad = e.component;
    }
  }
  if (bad >= 0)
    throw py::value_error("covariances: component " + std::to_string(bad) + " is not positive definite");
  return py::make_tuple(log_prob, log_density, return_resp ? py::object(resp) : py::object(py::none()));
}

template <class T>
py::dict gmm_em(carray<T> X, int n_clusters, int covariance, int n_init, int max_iter, double tol, double reg_covar,
                int init, std::uint64_t seed, py::object init_means) {
  require_ndim(X, 2, "X");
  mx::EMOptions opt;
  opt.cov_type = cov_type(covariance);
  opt.n_init = n_init;
  opt.max_iter = max_iter;
  opt.tol = tol;
  opt.reg_covar = reg_covar;
  if (init < 0 || init > 3) throw py::value_error("init: unknown initialisation code");
  opt.init = static_cast<mx::EMInit>(init);
  opt.seed = seed;
  const std::int64_t n = X.shape(0);
  const int p = int(X.shape(1)), K = n_clusters;
  carray<T> m0;
  if (opt.init == mx::EMInit::Means) {
    m0 = init_means.cast<carray<T>>();
    require_ndim(m0, 2, "init");
    if (m0.shape(0) != K || m0.shape(1) != p) throw py::value_error("init: expected shape (n_clusters, p)");
  }
  const T* x = X.data();
  const T* m0p = opt.init == mx::EMInit::Means ? m0.data() : nullptr;
  mx::EMOutput<T> out;
  {
    py::gil_scoped_release release;
    out = mx::gmm_em<T>(n, p, K, x, opt, m0p);
  }
  py::dict d;
  d["labels"] = labels_array(out.labels);
  d["responsibilities"] = to_array<T>(out.resp, {py::ssize_t(n), py::ssize_t(K)});
  d["means"] = to_array<T>(out.means, {py::ssize_t(K), py::ssize_t(p)});
  if (opt.cov_type == mx::CovType::Full)
    d["covariances"] = to_array<T>(out.cov, {py::ssize_t(K), py::ssize_t(p), py::ssize_t(p)});
  else if (opt.cov_type == mx::CovType::Diag)
    d["covariances"] = to_array<T>(out.cov, {py::ssize_t(K), py::ssize_t(p)});
  else
    d["covariances"] = to_array<T>(out.cov, {py::ssize_t(K)});
  d["weights"] = to_array<T>(out.weights, {py::ssize_t(K)});
  d["history"] = to_array<double>(out.history, {py::ssize_t(out.history.size())});
  d["log_likelihood"] = out.log_likelihood;
  d["n_iter"] = out.n_iter;
  d["converged"] = out.converged;
  d["n_reseeded"] = out.n_reseeded;
  d["n_frozen"] = out.n_frozen;
  d["n_jitter"] = out.n_jitter;
  d["best_init"] = out.best_init;
  return d;
}

template <class T>
py::dict kmeans(carray<T> X, int n_clusters, int n_init, int max_iter, double tol, std::uint64_t seed,
                py::object init_centers) {
  require_ndim(X, 2, "X");
  mx::KMeansOptions opt;
  opt.n_init = n_init;
  opt.max_iter = max_iter;
  opt.tol = tol;
  opt.seed = seed;
  const std::int64_t n = X.shape(0);
  const int p = int(X.shape(1)), K = n_clusters;
  carray<T> c0;
  const bool given = !init_centers.is_none();
  if (given) {
    c0 = init_centers.cast<carray<T>>();
    require_ndim(c0, 2, "init");
    if (c0.shape(0) != K || c0.shape(1) != p) throw py::value_error("init: expected shape (n_clusters, p)");
  }
  const T* x = X.data();
  const T* c0p = given ? c0.data() : nullptr;
  mx::KMeansOutput<T> out;
  {
    py::gil_scoped_release release;
    out = mx::kmeans<T>(n, p, K, x, opt, c0p);
  }
  py::dict d;
  d["labels"] = labels_array(out.labels);
  d["centers"] = to_array<T>(out.centers, {py::ssize_t(K), py::ssize_t(p)});
  d["inertia"] = out.inertia;
  d["n_iter"] = out.n_iter;
  d["converged"] = out.converged;
  d["n_relocated"] = out.n_relocated;
  return d;
}

template <class T>
void def_all(py::module_& m) {
  m.def("gmm_logpdf", &gmm_logpdf<T>, py::arg("X"), py::arg("means"), py::arg("covariances"), py::arg("weights"),
        py::arg("covariance"), py::arg("return_responsibilities"),
        "Per-component weighted log-densities (n, K), per-point log-density (n,), responsibilities or None.");
  m.def("gmm_em", &gmm_em<T>, py::arg("X"), py::arg("n_clusters"), py::arg("covariance"), py::arg("n_init"),
        py::arg("max_iter"), py::arg("tol"), py::arg("reg_covar"), py::arg("init"), py::arg("seed"),
        py::arg("init_means") = py::none(), "EM for a Gaussian mixture; returns a dict of results.");
  m.def("kmeans", &kmeans<T>, py::arg("X"), py::arg("n_clusters"), py::arg("n_init"), py::arg("max_iter"),
        py::arg("tol"), py::arg("seed"), py::arg("init_centers") = py::none(),
        "k-means++ + Lloyd; returns a dict of results.");
}

}  // namespace

void bind_mixture(py::module_& m) {
  def_all<float>(m);
  def_all<double>(m);
}
