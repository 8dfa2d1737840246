// pybind11 bindings of the language-model row reductions. The arrays are numpy views of torch tensors (zero copy),
// so these functions never cast: a dtype or layout mismatch is a TypeError/ValueError, never a silent copy that
// would make the in-place writes disappear.
#include <optional>

#include "bind.hpp"
#include "loglik/logprobs.hpp"

namespace py = pybind11;
using loglik::bind::require_ndim;

namespace {

template <class T>
using arr = py::array_t<T, py::array::c_style>;

template <class A>
void require_rows(const A& a, int64_t rows, int64_t cols, const char* name) {
  if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
    throw py::value_error(std::string(name) + ": expected shape (" + std::to_string(rows) + ", " +
                          std::to_string(cols) + "), got a " + std::to_string(a.ndim()) + "-D array");
}

template <class T>
const T* opt_rows(const std::optional<arr<T>>& a, int64_t rows, const char* name) {
  if (!a) return nullptr;
  require_ndim(*a, 1, name);
  if (a->shape(0) != rows) throw py::value_error(std::string(name) + ": expected one value per row");
  return a->data();
}

template <class T>
void bind_typed(py::module_& m) {
  m.def(
      "lm_chunk_stats",
      [](arr<T> x, std::optional<arr<T>> zout, arr<int64_t> targets, int64_t vocab_start, int64_t ignore_index,
         std::optional<arr<T>> inv_temp_rows, double inv_temp, double softcap, bool transform, arr<T> stats) {
        require_ndim(x, 2, "x");
        const int64_t rows = x.shape(0), V = x.shape(1);
        require_ndim(targets, 1, "targets");
        if (targets.shape(0) != rows) throw py::value_error("targets: expected one target per row of x");
        require_rows(stats, rows, 5, "stats");
        T* z = nullptr;
        if (zout) {
          require_rows(*zout, rows, V, "zout");
          z = zout->mutable_data();
        }
        const T* itr = opt_rows(inv_temp_rows, rows, "inv_temp_rows");
        const T* xp = x.data();
        const int64_t* tp = targets.data();
        T* sp = stats.mutable_data();
        py::gil_scoped_release release;
        loglik::lm::lm_chunk_stats(xp, z, rows, V, V, tp, vocab_start, ignore_index, itr, T(inv_temp), T(softcap),
                                   transform, sp);
      },
      py::arg("x"), py::arg("zout"), py::arg("targets"), py::arg("vocab_start"), py::arg("ignore_index"),
      py::arg("inv_temp_rows"), py::arg("inv_temp"), py::arg("softcap"), py::arg("transform"), py::arg("stats"),
      "Per-row statistics (max, sumexp, target logit, sum of logits, shifted entropy sum) of a logits chunk.");
  m.def(
      "lm_chunk_grad",
      [](arr<T> x, arr<T> dx, arr<int64_t> targets, int64_t vocab_start, int64_t ignore_index,
         std::optional<arr<T>> inv_temp_rows, double inv_temp, double softcap, bool transform, arr<T> lse_ez,
         arr<T> coef) {
        require_ndim(x, 2, "x");
        const int64_t rows = x.shape(0), V = x.shape(1);
        require_rows(dx, rows, V, "dx");
        require_ndim(targets, 1, "targets");
        if (targets.shape(0) != rows) throw py::value_error("targets: expected one target per row of x");
        require_rows(lse_ez, rows, 2, "lse_ez");
        require_rows(coef, rows, 5, "coef");
        const T* itr = opt_rows(inv_temp_rows, rows, "inv_temp_rows");
        const T* xp = x.data();
        T* dp = dx.mutable_data();
        const int64_t* tp = targets.data();
        const T* lp = lse_ez.data();
        const T* cp = coef.data();
        py::gil_scoped_release release;
        loglik::lm::lm_chunk_grad(xp, dp, rows, V, V, tp, vocab_start, ignore_index, itr, T(inv_temp), T(softcap),
                                  transform, lp, cp);
      },
      py::arg("x"), py::arg("dx"), py::arg("targets"), py::arg("vocab_start"), py::arg("ignore_index"),
      py::arg("inv_temp_rows"), py::arg("inv_temp"), py::arg("softcap"), py::arg("transform"), py::arg("lse_ez"),
      py::arg("coef"), "Write the gradient of a logits chunk (dx may be x itself).");
  m.def(
      "lm_chunk_fused",
      [](arr<T> buf, arr<int64_t> targets, int64_t ignore_index, std::optional<arr<T>> inv_temp_rows,
         double inv_temp, double softcap, arr<T> stats, arr<T> coef, bool write_grad) {
        require_ndim(buf, 2, "buf");
        const int64_t rows = buf.shape(0), V = buf.shape(1);
        require_ndim(targets, 1, "targets");
        if (targets.shape(0) != rows) throw py::value_error("targets: expected one target per row of buf");
        require_rows(stats, rows, 5, "stats");
        require_rows(coef, rows, 5, "coef");
        const T* itr = opt_rows(inv_temp_rows, rows, "inv_temp_rows");
        T* bp = buf.mutable_data();
        const int64_t* tp = targets.data();
        T* sp = stats.mutable_data();
        const T* cp = coef.data();
        py::gil_scoped_release release;
        loglik::lm::lm_chunk_fused(bp, rows, V, V, tp, ignore_index, itr, T(inv_temp), T(softcap), sp, cp,
                                   write_grad);
      },
      py::arg("buf"), py::arg("targets"), py::arg("ignore_index"), py::arg("inv_temp_rows"), py::arg("inv_temp"),
      py::arg("softcap"), py::arg("stats"), py::arg("coef"), py::arg("write_grad"),
      "Stats and (optionally) the gradient of a raw logits chunk, in place, one pass per row while it is in cache.");
}

}  // namespace

void bind_lm(py::module_& m) {
  bind_typed<float>(m);
  bind_typed<double>(m);
}
