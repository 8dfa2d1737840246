// Semidefinite programs for clustering: the Peng-Wei K-means SDP and the likelihood-adjusted SDP (LA-SDP) of
// iLA-SDP. Plain templates over raw row-major pointers; no Python headers, so other frameworks can embed them.
//
// Two solvers:
//  * bm_solve: Burer-Monteiro nonnegative low-rank augmented Lagrangian for the family
//        minimise  sum_b [ c_b^T Z_b 1 - <W_b W_b^T, Z_b> ]
//        s.t.      Z_b = U_b U_b^T, U_b >= 0, tr Z_b = t_b,  sum_b Z_b 1 = 1
//    (K-means SDP: one block, W = X, c = 0, t = K; LA-SDP: K blocks, W_k = X L_k with Omega_k = L_k L_k^T,
//    t_k = 1). n x n matrices are never formed: A_b U_b = W_b (W_b^T U_b), O(n p r) per iteration. Inner solver:
//    projected gradient on {U_b >= 0, ||U_b||_F^2 = t_b} with Barzilai-Borwein steps and a non-monotone
//    backtracking line search; outer: multiplier update and adaptive penalty (raised only while the constraint
//    violation stalls).
//  * admm_kmeans_sdp: ADMM on the full n x n matrix (small n). Splits Z in S = {PSD, Z1 = 1, tr Z = K}
//    (projection by a partial eigendecomposition) and W >= 0; reports primal/dual residuals and a duality gap
//    computed from the dual multiplier of Z = W (an upper bound on the optimum, so the gap certifies optimality).
#pragma once
#include <cstdint>

namespace loglik::sdp {

struct BMOptions {
  int max_iter = 20000;    // total projected-gradient steps over all outer iterations
  int max_outer = 5000;    // multiplier updates
  int inner_max = 50;      // projected-gradient steps per multiplier update (frequent updates pay off)
  double tol = 1e-6;       // feasibility: max_i |(sum_b Z_b 1)_i - 1|
  double tol_kkt = 1e-6;   // relative KKT residual of the U-subproblem
  double sigma0 = 0.0;     // initial penalty (<= 0: automatic)
  double sigma_max = 1e8;  // cap on the penalty
  int verbose = 0;         // print one line per outer iteration to stderr
};

struct BMInfo {
  int n_iter = 0;          // projected-gradient steps
  int n_outer = 0;         // multiplier updates
  int converged = 0;
  double objective = 0;    // sum_b [c_b^T Z_b 1 - <A_b, Z_b>] at the returned U
  double feas_inf = 0;     // max_i |(sum_b Z_b 1)_i - 1|
  double feas_rms = 0;     // ||sum_b Z_b 1 - 1||_2 / sqrt(n)
  double kkt = 0;          // relative KKT residual of the last subproblem
  double sigma = 0;        // final penalty
  int n_backtracks = 0;
};

// U: [B, n, r] (in: start point, any real values; out: solution), y: [n] (in: multipliers, out: updated),
// W: [B, n, p], c: [B, n] or nullptr, t: [B]. sigma_io: in: penalty to start from (<= 0: options), out: final.
template <class T>
void bm_solve(int n, int p, int B, int r, const T* W, const T* c, const double* t, T* U, double* y,
              double* sigma_io, const BMOptions& opt, BMInfo* info);

struct ADMMOptions {
  int max_iter = 20000;
  double tol = 1e-7;       // relative primal/dual residual tolerance
  double tol_gap = 1e-7;   // relative duality gap tolerance
  double rho0 = 0.0;       // initial penalty (<= 0: automatic)
  double relax = 1.6;      // over-relaxation
  int check_every = 10;    // duality gap evaluation period
  int verbose = 0;
};

struct ADMMInfo {
  int n_iter = 0;
  int converged = 0;
  double objective = 0;      // <A, Z> at the returned Z (A = X X^T of the given, already centred, X)
  double dual_bound = 0;     // certified upper bound on the optimum
  double gap = 0;            // (dual_bound - objective) / max(1, |dual_bound|)
  double primal_res = 0;     // ||Z - W||_F / max(1, ||Z||_F)
  double dual_res = 0;       // rho ||W - W_prev||_F / max(1, ||rho U||_F)
  double nonneg_viol = 0;    // max(0, -min Z)
  double rho = 0;
  int eig_full = 0;          // how many projections needed a full eigendecomposition
};

// X: [n, p] (centred by the caller); Z: [n, n] output (PSD, Z 1 = 1, tr Z = K up to rounding, Z >= -nonneg_viol).
template <class T>
void admm_kmeans_sdp(int n, int p, int K, const T* X, T* Z, const ADMMOptions& opt, ADMMInfo* info);

// Lloyd's K-means with k-means++ seeding and n_init restarts on the rows of Y [n, d]; the best labelling (lowest
// inertia) is written to labels [n]. Deterministic given seed. Used to round SDP solutions. Returns the inertia.
template <class T>
double round_kmeans(int n, int d, int K, const T* Y, int n_init, int max_iter, std::uint64_t seed,
                    std::int64_t* labels);

}  // namespace loglik::sdp
