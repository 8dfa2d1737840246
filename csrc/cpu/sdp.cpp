// Implementations of loglik/sdp.hpp. All arithmetic is carried out in double (float inputs are promoted once at the
// start): the feasibility targets (1e-6) are below float32's resolution for row sums of n numbers.
#include "loglik/sdp.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "loglik/blas.hpp"

namespace loglik::sdp {
namespace {

using blas::Trans;
using vec = std::vector<double>;

inline bool big(std::int64_t work) { return work > (1 << 18); }

double dot(const double* a, const double* b, std::int64_t n) {
  double s = 0;
#pragma omp parallel for reduction(+ : s) if (big(n))
  for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// ------------------------------------------------------------------------------------------------------------
// Burer-Monteiro augmented Lagrangian
// ------------------------------------------------------------------------------------------------------------
struct BMProblem {
  int n, p, B, r;
  const double* W;  // [B, n, p]
  const double* c;  // [B, n] or nullptr
  const double* t;  // [B]
};

struct BMWork {
  vec ones, WtU, AU, v, s, e, lam, cu, ul;
  explicit BMWork(const BMProblem& P)
      : ones(P.n, 1.0),
        WtU(std::size_t(P.B) * P.p * P.r),
        AU(std::size_t(P.B) * P.n * P.r),
        v(std::size_t(P.B) * P.r),
        s(P.n),
        e(P.n),
        lam(P.n),
        cu(std::size_t(P.B) * P.r),
        ul(std::size_t(P.B) * P.r) {}
};

struct Eval {
  double L = 0, f = 0, e2 = 0, einf = 0, gfnorm = 0;
};

// Augmented Lagrangian L = f + y.e + sigma/2 |e|^2 with e = sum_b U_b U_b^T 1 - 1; optional gradient G.
Eval evaluate(const BMProblem& P, const double* U, const double* y, double sigma, BMWork& w, double* G) {
  const int n = P.n, p = P.p, r = P.r;
  const std::int64_t nr = std::int64_t(n) * r;
  Eval ev;
  for (int b = 0; b < P.B; ++b) {
    const double* Ub = U + b * nr;
    double* vb = w.v.data() + b * r;
    blas::gemv(Trans::T, n, r, 1.0, Ub, r, w.ones.data(), 0.0, vb);
    blas::gemv(Trans::N, n, r, 1.0, Ub, r, vb, b == 0 ? 0.0 : 1.0, w.s.data());
    double* WtUb = w.WtU.data() + std::size_t(b) * p * r;
    blas::gemm(Trans::T, Trans::N, p, r, n, 1.0, P.W + std::size_t(b) * n * p, p, Ub, r, 0.0, WtUb, r);
    double quad = 0;
    for (int k = 0; k < p * r; ++k) quad += WtUb[k] * WtUb[k];
    double lin = 0;
    double* cub = w.cu.data() + b * r;
    if (P.c) {
      blas::gemv(Trans::T, n, r, 1.0, Ub, r, P.c + std::size_t(b) * n, 0.0, cub);
      for (int j = 0; j < r; ++j) lin += cub[j] * vb[j];
    } else {
      std::fill(cub, cub + r, 0.0);
    }
    ev.f += lin - quad;
  }
  double ye = 0, e2 = 0, einf = 0;
#pragma omp parallel for reduction(+ : ye, e2) reduction(max : einf) if (big(n))
  for (int i = 0; i < n; ++i) {
    const double ei = w.s[i] - 1.0;
    w.e[i] = ei;
    ye += y[i] * ei;
    e2 += ei * ei;
    einf = std::max(einf, std::abs(ei));
  }
  ev.e2 = e2;
  ev.einf = einf;
  ev.L = ev.f + ye + 0.5 * sigma * e2;
  if (!G) return ev;
#pragma omp parallel for if (big(n))
  for (int i = 0; i < n; ++i) w.lam[i] = y[i] + sigma * w.e[i];
  double gf2 = 0;
  for (int b = 0; b < P.B; ++b) {
    const double* Ub = U + b * nr;
    double* AUb = w.AU.data() + b * nr;
    blas::gemm(Trans::N, Trans::N, n, r, p, 1.0, P.W + std::size_t(b) * n * p, p, w.WtU.data() + std::size_t(b) * p * r,
               r, 0.0, AUb, r);
    double* ulb = w.ul.data() + b * r;
    blas::gemv(Trans::T, n, r, 1.0, Ub, r, w.lam.data(), 0.0, ulb);
    const double* vb = w.v.data() + b * r;
    const double* cub = w.cu.data() + b * r;
    const double* cb = P.c ? P.c + std::size_t(b) * n : nullptr;
    double* Gb = G + b * nr;
    double g2 = 0;
#pragma omp parallel for reduction(+ : g2) if (big(nr))
    for (int i = 0; i < n; ++i) {
      const double ci = cb ? cb[i] : 0.0;
      for (int j = 0; j < r; ++j) {
        const double gf = -2.0 * AUb[i * r + j] + ci * vb[j] + cub[j];
        g2 += gf * gf;
        Gb[i * r + j] = gf + w.lam[i] * vb[j] + ulb[j];
      }
    }
    gf2 += g2;
  }
  ev.gfnorm = std::sqrt(gf2);
  return ev;
}

// Projection onto {U_b >= 0, ||U_b||_F^2 = t_b} for each block (exact: clip, then rescale).
void project(const BMProblem& P, double* U) {
  const std::int64_t nr = std::int64_t(P.n) * P.r;
  for (int b = 0; b < P.B; ++b) {
    double* Ub = U + b * nr;
    double s2 = 0;
#pragma omp parallel for reduction(+ : s2) if (big(nr))
    for (std::int64_t k = 0; k < nr; ++k) {
      const double u = Ub[k] > 0 ? Ub[k] : 0.0;
      Ub[k] = u;
      s2 += u * u;
    }
    if (s2 > 0) {
      const double f = std::sqrt(P.t[b] / s2);
#pragma omp parallel for if (big(nr))
      for (std::int64_t k = 0; k < nr; ++k) Ub[k] *= f;
    } else {
      const double u = std::sqrt(P.t[b] / double(nr));
      std::fill(Ub, Ub + nr, u);
    }
  }
}

// Relative KKT residual of min L(U) over {U_b >= 0, ||U_b||^2 = t_b}: G_b - 2 eta_b U_b - Gamma_b = 0 with
// Gamma_b >= 0 and Gamma_b o U_b = 0.
double kkt_residual(const BMProblem& P, const double* U, const double* G, double gfnorm) {
  const std::int64_t nr = std::int64_t(P.n) * P.r;
  double r2 = 0;
  for (int b = 0; b < P.B; ++b) {
    const double* Ub = U + b * nr;
    const double* Gb = G + b * nr;
    const double eta2 = dot(Gb, Ub, nr) / P.t[b];
    double s = 0;
#pragma omp parallel for reduction(+ : s) if (big(nr))
    for (std::int64_t k = 0; k < nr; ++k) {
      const double d = Ub[k] > 0 ? Gb[k] - eta2 * Ub[k] : std::min(Gb[k], 0.0);
      s += d * d;
    }
    r2 += s;
  }
  return std::sqrt(r2) / std::max(1.0, gfnorm);
}

// Penalty growth factor, applied only when a solved subproblem left the violation above 1/4 of the previous one.
constexpr double kPenaltyGrowth = 3.0;

void bm_solve_d(const BMProblem& P, double* U, double* y, double* sigma_io, const BMOptions& opt, BMInfo* info) {
  const std::int64_t N = std::int64_t(P.B) * P.n * P.r;
  BMWork w(P);
  vec G(N), Un(N), Gn(N);
  project(P, U);
  double sigma = *sigma_io > 0 ? *sigma_io : (opt.sigma0 > 0 ? opt.sigma0 : 1.0);
  Eval ev = evaluate(P, U, y, sigma, w, G.data());
  double alpha = 0;
  {
    const double gn = std::sqrt(dot(G.data(), G.data(), N));
    double tsum = 0;
    for (int b = 0; b < P.B; ++b) tsum += P.t[b];
    alpha = gn > 0 ? 0.05 * std::sqrt(tsum) / gn : 1.0;
  }
  const int M = 10;  // non-monotone memory
  std::vector<double> hist;
  double e_prev = std::sqrt(ev.e2);
  double eps_inner = 1e-2;
  double kkt = kkt_residual(P, U, G.data(), ev.gfnorm);
  int it = 0, outer = 0, backtracks = 0;
  bool converged = false;
  bool bb_long = true;
  while (outer < opt.max_outer && it < opt.max_iter) {
    hist.assign(1, ev.L);
    bool inner_ok = false;
    for (int inner = 0; inner < opt.inner_max && it < opt.max_iter; ++inner) {
      const double Lref = *std::max_element(hist.begin(), hist.end());
      Eval evn;
      double step2 = 0;
      for (int bt = 0;; ++bt) {
#pragma omp parallel for if (big(N))
        for (std::int64_t k = 0; k < N; ++k) Un[k] = U[k] - alpha * G[k];
        project(P, Un.data());
        step2 = 0;
        for (std::int64_t k = 0; k < N; ++k) step2 += (Un[k] - U[k]) * (Un[k] - U[k]);
        evn = evaluate(P, Un.data(), y, sigma, w, Gn.data());
        if (evn.L <= Lref - 1e-4 / alpha * step2 || bt >= 40 || step2 == 0) break;
        alpha *= 0.3;
        ++backtracks;
      }
      ++it;
      double sd = 0, ss = 0, dd = 0;
#pragma omp parallel for reduction(+ : sd, ss, dd) if (big(N))
      for (std::int64_t k = 0; k < N; ++k) {
        const double s = Un[k] - U[k], d = Gn[k] - G[k];
        sd += s * d;
        ss += s * s;
        dd += d * d;
      }
      std::copy(Un.begin(), Un.end(), U);
      std::swap(G, Gn);
      ev = evn;
      hist.push_back(ev.L);
      if (int(hist.size()) > M) hist.erase(hist.begin());
      if (sd > 0) {
        alpha = bb_long ? ss / sd : sd / dd;
        bb_long = !bb_long;
      } else {
        alpha *= 2.0;
      }
      alpha = std::min(std::max(alpha, 1e-14), 1e14);
      if (ss == 0) break;
      kkt = kkt_residual(P, U, G.data(), ev.gfnorm);
      if (kkt <= eps_inner) {
        inner_ok = true;
        break;
      }
    }
    ++outer;
    const double e_norm = std::sqrt(ev.e2);
    if (opt.verbose)
      std::fprintf(stderr, "bm outer %d it %d f %.10g feas_inf %.3e kkt %.3e sigma %.3e alpha %.3e\n", outer, it,
                   ev.f, ev.einf, kkt, sigma, alpha);
    if (ev.einf <= opt.tol && kkt <= opt.tol_kkt) {
      converged = true;
      break;
    }
    // multiplier step, then raise the penalty only if the violation did not shrink enough
    for (int i = 0; i < P.n; ++i) y[i] += sigma * w.e[i];
    // a larger penalty only helps when the subproblem was actually solved; otherwise it just worsens conditioning
    if (inner_ok && ev.einf > opt.tol && e_norm > 0.25 * e_prev)
      sigma = std::min(sigma * kPenaltyGrowth, opt.sigma_max);
    e_prev = e_norm;
    eps_inner = std::max(0.2 * eps_inner, 0.5 * opt.tol_kkt);
    ev = evaluate(P, U, y, sigma, w, G.data());
    kkt = kkt_residual(P, U, G.data(), ev.gfnorm);
  }
  ev = evaluate(P, U, y, sigma, w, nullptr);
  *sigma_io = sigma;
  info->n_iter = it;
  info->n_outer = outer;
  info->converged = converged ? 1 : 0;
  info->objective = ev.f;
  info->feas_inf = ev.einf;
  info->feas_rms = std::sqrt(ev.e2 / std::max(1, P.n));
  info->kkt = kkt;
  info->sigma = sigma;
  info->n_backtracks = backtracks;
}

// ------------------------------------------------------------------------------------------------------------
// ADMM on the full matrix
// ------------------------------------------------------------------------------------------------------------

// Top-m eigenpairs of a symmetric n x n matrix (destroyed). Eigenvalues descending in w[0..m), eigenvector i
// contiguous in q[i*n .. i*n+n).
struct TopEig {
  vec work, wtmp, ztmp;
  std::vector<int> iwork, isuppz;
  int run(int n, double* a, int m, bool vectors, double* w, double* q) {
    const char* jobz = vectors ? "V" : "N";
    const char* range = m >= n ? "A" : "I";
    int il = n - m + 1, iu = n, found = 0, info = 0, lwork = -1, liwork = -1, iwq = 0;
    double vl = 0, vu = 0, abstol = 0, wq = 0;
    wtmp.resize(n);
    if (vectors) ztmp.resize(std::size_t(n) * m);
    isuppz.resize(2 * std::size_t(std::max(1, m)));
    double* z = vectors ? ztmp.data() : &wq;
    int ldz = vectors ? n : 1;
    scipy_dsyevr_(jobz, range, "L", &n, a, &n, &vl, &vu, &il, &iu, &abstol, &found, wtmp.data(), z, &ldz,
                  isuppz.data(), &wq, &lwork, &iwq, &liwork, &info);
    if (info != 0) return info;
    lwork = int(wq) + 1;
    liwork = std::max(1, iwq);
    if (int(work.size()) < lwork) work.resize(lwork);
    if (int(iwork.size()) < liwork) iwork.resize(liwork);
    scipy_dsyevr_(jobz, range, "L", &n, a, &n, &vl, &vu, &il, &iu, &abstol, &found, wtmp.data(), z, &ldz,
                  isuppz.data(), work.data(), &lwork, iwork.data(), &liwork, &info);
    if (info != 0) return info;
    for (int i = 0; i < found; ++i) {  // ascending -> descending
      w[i] = wtmp[found - 1 - i];
      if (vectors) std::copy(ztmp.begin() + std::size_t(found - 1 - i) * n, ztmp.begin() + std::size_t(found - i) * n,
                             q + std::size_t(i) * n);
    }
    return found == m ? 0 : -1;
  }
};

// Y = P M P - c J / n with P = I - J/n (so the all-ones direction sits at eigenvalue -c, far below the rest).
void center_shift(int n, const double* M, double* Y, double c) {
  vec m(n);
#pragma omp parallel for if (big(std::int64_t(n) * n))
  for (int i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < n; ++j) s += M[std::size_t(i) * n + j];
    m[i] = s / n;
  }
  double tot = 0;
  for (int i = 0; i < n; ++i) tot += m[i];
  tot /= n;
  const double sh = tot - c / n;
#pragma omp parallel for if (big(std::int64_t(n) * n))
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) Y[std::size_t(i) * n + j] = M[std::size_t(i) * n + j] - m[i] - m[j] + sh;
}

struct ProjS {
  int n, K, m;
  vec Y, w, q;
  TopEig eig;
  int full = 0;
  ProjS(int n_, int K_) : n(n_), K(K_), m(std::min(n_, 2 * K_ + 2)), Y(std::size_t(n_) * n_) {}
  // Z = argmin ||Z - M||_F over {Z PSD, Z 1 = 1, tr Z = K}; Frobenius norm of M is used to place the shift.
  void operator()(const double* M, double* Z) {
    double mn = std::sqrt(dot(M, M, std::int64_t(n) * n));
    const double c = 2.0 * mn + K + 1.0;
    const double s = K - 1.0;
    int keep = 0;
    double theta = 0;
    for (;;) {
      center_shift(n, M, Y.data(), c);
      const int mm = std::min(n, m + 1);
      w.resize(mm);
      q.resize(std::size_t(mm) * n);
      if (eig.run(n, Y.data(), mm, true, w.data(), q.data()) != 0) {  // partial solve failed: take every pair
        center_shift(n, M, Y.data(), c);
        w.resize(n);
        q.resize(std::size_t(n) * n);
        eig.run(n, Y.data(), n, true, w.data(), q.data());
      }
      const int avail = int(w.size());
      const int cand = std::min(avail, n - 1);  // the shifted all-ones direction is never a candidate
      // simplex projection of the top eigenvalues onto {lambda >= 0, sum = K - 1}
      double csum = 0;
      keep = 0;
      for (int j = 0; j < cand; ++j) {
        csum += w[j];
        const double th = (csum - s) / (j + 1);
        if (w[j] - th > 0) {
          keep = j + 1;
          theta = th;
        }
      }
      // unseen eigenvalues are <= w[avail-1]; they are zeroed too when some seen one already was
      if (keep < cand || cand == n - 1) break;
      m = std::min(n, 2 * m);
      if (m + 1 >= n) ++full;
    }
    // Z = J/n + sum_{j < keep} (w_j - theta) q_j q_j^T
    for (int j = 0; j < keep; ++j) {
      const double sc = std::sqrt(std::max(w[j] - theta, 0.0));
      for (int i = 0; i < n; ++i) q[std::size_t(j) * n + i] *= sc;
    }
    const double jn = 1.0 / n;
    std::fill(Z, Z + std::size_t(n) * n, jn);
    if (keep > 0) {
      blas::syrk(Trans::T, n, keep, 1.0, q.data(), n, 1.0, Z, n);
      for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) Z[std::size_t(i) * n + j] = Z[std::size_t(j) * n + i];
    }
    // keep the eigen window just above what was needed
    m = std::max(std::min(n, keep + 2), std::min(n, 2 * K + 2));
  }
  // sup over S of <B, Z> = <B, J/n> + (K - 1) lambda_max(P B P on 1-perp)
  double support(const double* Bm) {
    double mn = std::sqrt(dot(Bm, Bm, std::int64_t(n) * n));
    center_shift(n, Bm, Y.data(), 2.0 * mn + 1.0);
    double tot = 0;
    for (std::int64_t k = 0; k < std::int64_t(n) * n; ++k) tot += Bm[k];
    double top = 0;
    vec w1(1);
    eig.run(n, Y.data(), 1, false, w1.data(), nullptr);
    top = w1[0];
    return tot / n + (K - 1.0) * top;
  }
};

void admm_d(int n, int p, int K, const double* X, double* Z, const ADMMOptions& opt, ADMMInfo* info) {
  const std::int64_t nn = std::int64_t(n) * n;
  vec A(nn);
  blas::syrk(Trans::N, n, p, 1.0, X, p, 0.0, A.data(), n);
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) A[std::size_t(i) * n + j] = A[std::size_t(j) * n + i];
  double tr = 0;
  for (int i = 0; i < n; ++i) tr += A[std::size_t(i) * n + i];
  const double scale = tr > 0 ? tr / n : 1.0;
  for (auto& a : A) a /= scale;
  if (K <= 1) {
    std::fill(Z, Z + nn, 1.0 / n);
    double obj = 0;
    for (auto a : A) obj += a / n;
    info->objective = obj * scale;
    info->dual_bound = obj * scale;
    info->converged = 1;
    return;
  }
  ProjS proj(n, K);
  vec W(nn, 1.0 / n), U(nn, 0.0), M(nn), Wold(nn), Bm(nn);
  const double anorm = std::sqrt(dot(A.data(), A.data(), nn));
  double rho = opt.rho0 > 0 ? opt.rho0 : std::max(1e-6, anorm / std::sqrt(double(K)));
  const double al = opt.relax;
  double rp = 0, rd = 0, gap = 1, obj = 0, ub = 0;
  int it = 0;
  bool converged = false;
  for (it = 1; it <= opt.max_iter; ++it) {
    const double ir = 1.0 / rho;
#pragma omp parallel for if (big(nn))
    for (std::int64_t k = 0; k < nn; ++k) M[k] = W[k] - U[k] + A[k] * ir;
    proj(M.data(), Z);
    double zz = 0, ww = 0, dz = 0, dw = 0, uu = 0;
#pragma omp parallel for reduction(+ : zz, ww, dz, dw, uu) if (big(nn))
    for (std::int64_t k = 0; k < nn; ++k) {
      const double zh = al * Z[k] + (1 - al) * W[k];
      const double wo = W[k];
      const double v = zh + U[k];
      const double wn = v > 0 ? v : 0.0;
      W[k] = wn;
      U[k] = v - wn;
      zz += Z[k] * Z[k];
      ww += wn * wn;
      dz += (Z[k] - wn) * (Z[k] - wn);
      dw += (wn - wo) * (wn - wo);
      uu += U[k] * U[k];
    }
    rp = std::sqrt(dz) / std::max(1.0, std::sqrt(std::max(zz, ww)));
    rd = rho * std::sqrt(dw) / std::max(1.0, rho * std::sqrt(uu));
    const bool small = rp <= opt.tol && rd <= opt.tol;
    if (small || it % opt.check_every == 0 || it == opt.max_iter) {
      obj = dot(A.data(), Z, nn);
#pragma omp parallel for if (big(nn))
      for (std::int64_t k = 0; k < nn; ++k) Bm[k] = A[k] - rho * U[k];  // Lambda = -rho U >= 0
      ub = proj.support(Bm.data());
      gap = (ub - obj) / std::max(1.0, std::abs(ub));
      if (opt.verbose)
        std::fprintf(stderr, "admm it %d obj %.10g ub %.10g gap %.3e rp %.3e rd %.3e rho %.3e\n", it, obj * scale,
                     ub * scale, gap, rp, rd, rho);
      if (small && std::abs(gap) <= opt.tol_gap) {
        converged = true;
        break;
      }
    }
    // residual balancing
    if (it % 10 == 0) {
      double f = 1.0;
      if (rp > 10 * rd) f = 2.0;
      else if (rd > 10 * rp) f = 0.5;
      if (f != 1.0) {
        rho *= f;
        for (auto& u : U) u /= f;
      }
    }
  }
  double mn = 0;
  for (std::int64_t k = 0; k < nn; ++k) mn = std::min(mn, Z[k]);
  info->n_iter = std::min(it, opt.max_iter);
  info->converged = converged ? 1 : 0;
  info->objective = dot(A.data(), Z, nn) * scale;
  info->dual_bound = ub * scale;
  info->gap = gap;
  info->primal_res = rp;
  info->dual_res = rd;
  info->nonneg_viol = -mn;
  info->rho = rho;
  info->eig_full = proj.full;
}

// ------------------------------------------------------------------------------------------------------------
// K-means for rounding
// ------------------------------------------------------------------------------------------------------------
double lloyd(int n, int d, int K, const double* Y, std::mt19937_64& gen, int max_iter, std::vector<std::int64_t>& lab) {
  std::vector<double> C(std::size_t(K) * d), D2(n);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  // k-means++
  int first = std::min(n - 1, int(unif(gen) * n));
  std::copy(Y + std::size_t(first) * d, Y + std::size_t(first + 1) * d, C.begin());
  for (int i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += (Y[std::size_t(i) * d + j] - C[j]) * (Y[std::size_t(i) * d + j] - C[j]);
    D2[i] = s;
  }
  for (int k = 1; k < K; ++k) {
    double tot = 0;
    for (int i = 0; i < n; ++i) tot += D2[i];
    int pick = 0;
    if (tot > 0) {
      double u = unif(gen) * tot, acc = 0;
      pick = n - 1;
      for (int i = 0; i < n; ++i) {
        acc += D2[i];
        if (acc >= u) {
          pick = i;
          break;
        }
      }
    } else {
      pick = std::min(n - 1, int(unif(gen) * n));
    }
    std::copy(Y + std::size_t(pick) * d, Y + std::size_t(pick + 1) * d, C.begin() + std::size_t(k) * d);
    for (int i = 0; i < n; ++i) {
      double s = 0;
      for (int j = 0; j < d; ++j) {
        const double df = Y[std::size_t(i) * d + j] - C[std::size_t(k) * d + j];
        s += df * df;
      }
      D2[i] = std::min(D2[i], s);
    }
  }
  lab.assign(n, -1);
  std::vector<double> cnt(K);
  double inertia = 0;
  for (int iter = 0; iter < max_iter; ++iter) {
    int changed = 0;
    inertia = 0;
#pragma omp parallel for reduction(+ : changed, inertia) if (big(std::int64_t(n) * K * d))
    for (int i = 0; i < n; ++i) {
      double best = std::numeric_limits<double>::infinity();
      int bk = 0;
      for (int k = 0; k < K; ++k) {
        double s = 0;
        for (int j = 0; j < d; ++j) {
          const double df = Y[std::size_t(i) * d + j] - C[std::size_t(k) * d + j];
          s += df * df;
        }
        if (s < best) {
          best = s;
          bk = k;
        }
      }
      D2[i] = best;
      inertia += best;
      if (lab[i] != bk) {
        lab[i] = bk;
        ++changed;
      }
    }
    if (changed == 0) break;
    std::fill(C.begin(), C.end(), 0.0);
    std::fill(cnt.begin(), cnt.end(), 0.0);
    for (int i = 0; i < n; ++i) {
      const int k = int(lab[i]);
      cnt[k] += 1;
      for (int j = 0; j < d; ++j) C[std::size_t(k) * d + j] += Y[std::size_t(i) * d + j];
    }
    for (int k = 0; k < K; ++k) {
      if (cnt[k] > 0) {
        for (int j = 0; j < d; ++j) C[std::size_t(k) * d + j] /= cnt[k];
      } else {  // empty cluster: restart it at the point farthest from its centre
        int far = int(std::max_element(D2.begin(), D2.end()) - D2.begin());
        std::copy(Y + std::size_t(far) * d, Y + std::size_t(far + 1) * d, C.begin() + std::size_t(k) * d);
        D2[far] = 0;
      }
    }
  }
  return inertia;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------
// typed entry points
// ------------------------------------------------------------------------------------------------------------
template <class T>
void bm_solve(int n, int p, int B, int r, const T* W, const T* c, const double* t, T* U, double* y,
              double* sigma_io, const BMOptions& opt, BMInfo* info) {
  const std::size_t N = std::size_t(B) * n * r;
  vec Wd(W, W + std::size_t(B) * n * p);
  vec cd;
  if (c) cd.assign(c, c + std::size_t(B) * n);
  vec Ud(U, U + N);
  BMProblem P{n, p, B, r, Wd.data(), c ? cd.data() : nullptr, t};
  bm_solve_d(P, Ud.data(), y, sigma_io, opt, info);
  for (std::size_t k = 0; k < N; ++k) U[k] = T(Ud[k]);
}

template <class T>
void admm_kmeans_sdp(int n, int p, int K, const T* X, T* Z, const ADMMOptions& opt, ADMMInfo* info) {
  vec Xd(X, X + std::size_t(n) * p);
  vec Zd(std::size_t(n) * n);
  admm_d(n, p, K, Xd.data(), Zd.data(), opt, info);
  for (std::size_t k = 0; k < Zd.size(); ++k) Z[k] = T(Zd[k]);
}

template <class T>
double round_kmeans(int n, int d, int K, const T* Y, int n_init, int max_iter, std::uint64_t seed,
                    std::int64_t* labels) {
  vec Yd(Y, Y + std::size_t(n) * d);
  std::mt19937_64 gen(seed);
  std::vector<std::int64_t> lab, best_lab;
  double best = std::numeric_limits<double>::infinity();
  for (int s = 0; s < std::max(1, n_init); ++s) {
    const double in = lloyd(n, d, K, Yd.data(), gen, max_iter, lab);
    if (in < best - 1e-12 * std::abs(best) || best_lab.empty()) {
      best = in;
      best_lab = lab;
    }
  }
  std::copy(best_lab.begin(), best_lab.end(), labels);
  return best;
}

template void bm_solve<float>(int, int, int, int, const float*, const float*, const double*, float*, double*,
                              double*, const BMOptions&, BMInfo*);
template void bm_solve<double>(int, int, int, int, const double*, const double*, const double*, double*, double*,
                               double*, const BMOptions&, BMInfo*);
template void admm_kmeans_sdp<float>(int, int, int, const float*, float*, const ADMMOptions&, ADMMInfo*);
template void admm_kmeans_sdp<double>(int, int, int, const double*, double*, const ADMMOptions&, ADMMInfo*);
template double round_kmeans<float>(int, int, int, const float*, int, int, std::uint64_t, std::int64_t*);
template double round_kmeans<double>(int, int, int, const double*, int, int, std::uint64_t, std::int64_t*);

}  // namespace loglik::sdp
