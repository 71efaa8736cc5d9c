"""Independent NumPy reference: the exact DMFT of discrete-time projected gradient descent.

Implements the recursion of ``docs/discrete_gd.md`` (equation labels [G.n] below refer to that
file) for the Gaussian model of spec section 3 trained by

    a   <- a - lr dR_n/da              (unless the second layer is frozen)
    w_i <- (w_i - lr dR_n/dw_i) / || w_i - lr dR_n/dw_i ||,

at n, d -> infinity with n/d = alpha_bar and the step eta = lr d/n fixed (t_k = k eta):

* [G.1]  Sigma_C, Sigma_R on row k (as spec [C.20]);
* [G.2]  R_A row k:  R_A[k, s] = delta_ks/eta - eta sum_{l=s}^{k-1} Sigma_R[k, l] R_A[l, s];
* [G.3]  C_A row k:  C_A = -(I + eta Sigma_R)^-1 Sigma_C (I + eta Sigma_R)^-T, by rows;
* [G.4]  rho, M^R, M^C on row k (spec [C.18] with the exact R_A, C_A);
* [G.5]  X(k, s') = <g_i(k), w_j(s')>, split as P + A + B (target, memory, noise);
         nu_i(k) = X_ii(k, k);
* [G.6a] V_i(k) = U^T g_i(k) (the v rate); [G.9a] the a rate A_i(k) ([C.7] with sums);
* [G.7]  Gamma(k) = <g_i(k), g_j(k)> (equal-time gradient Gram matrix, incl. the noise
         variance K(k, k) = -(1/m) M^C(k, k));
* [G.8]  N_i(k) = sqrt(1 + 2 eta nu_i(k) + eta^2 Gamma_ii(k));
* [G.9]  a(k+1) = a(k) + eta A(k) [G.9a];  v(k+1) = (v(k) + eta V(k)) / N [G.9b];
* [G.10] C(k+1, s') = (C(k, s') + eta X(k, s')) / N_i   (s' <= k);
* [G.11] C(k+1, k+1) = [C(k, k) + eta (X(k, k) + X(k, k)^T) + eta^2 Gamma(k)] / (N_i N_j);
* [G.12] R(k+1, s') = [R(k, s') + eta Y(k, s') + delta_{s' k} I] / N_i, with the memory
         Y(k, s') = -eta sum_{s=s'+1}^{k} (1/m) M^R(k, s) R(s, s');
* [G.13] e_tr(k) = -C_A(k, k)/2, e_ts(k) the population formula.

``mode="euler"`` replaces [G.8]-[G.12] by the forward-Euler scheme of spec section 6 (the same
sums, nu instead of N, no eta^2 Gamma, R[k+1, k] = I): a plumbing check against
``benchmarks/numpy_reference.py``. Both neuron algebras are provided: :class:`General` (m x m
matrices, any initialization, spec section 4) and :class:`Symmetric` (pairs (D, O) for
D I + O (J - I), spec section 5); the recursion is written once against them.

Conventions: ``X[k, s]`` = X(t_k, t_s); a two-time neuron matrix at (k, s) is the trailing
``mat`` axis (general (m, m) with [i, j], symmetric (2,) = (D, O)); ``C[s, k] = C[k, s]^T``;
``R[k, s] = 0`` for s >= k; ``R_A`` lower triangular with 1/eta on the diagonal; ``C_A``
symmetric. Pure NumPy float64, a plain causal Python loop (O(K^3) time, O(K^2) memory).
"""

from __future__ import annotations

import numpy as np

__all__ = ["General", "Symmetric", "solve", "solve_general", "solve_symmetric"]


# ------------------------------------------------------------------------------ algebras
class General:
    """Dense m x m neuron matrices (trailing axes (m, m)); neuron vectors (..., m)."""

    def __init__(self, m: int):
        self.m = int(m)
        self.mat = (self.m, self.m)
        self.vec = (self.m,)

    def eye(self):
        return np.eye(self.m)

    def T(self, x):
        return np.swapaxes(x, -1, -2)

    def prod(self, x, y):
        """(1/m) x @ y, broadcast over leading axes."""
        return np.matmul(x, y) / self.m

    def contract(self, x, Y):
        """sum_s (1/m) x[s] @ Y[s, q]  ->  (q, m, m)."""
        return np.einsum("sil,sqlj->qij", x, Y, optimize=True) / self.m

    def contract_t(self, x, Y):
        """sum_s (1/m) x[s] @ Y[q, s]^T  ->  (q, m, m)."""
        return np.einsum("sil,qsjl->qij", x, Y, optimize=True) / self.m

    def dot_rows(self, x, y):
        """sum_s (1/m) x[s] @ y[s]^T  ->  (m, m)."""
        return np.einsum("sil,sjl->ij", x, y) / self.m

    def matvec(self, x, a):
        """(1/m) sum_l x_il a_l; x (..., m, m), a (..., m) -> (..., m)."""
        return np.einsum("...il,...l->...i", x, a) / self.m

    def matvec_k(self, x, v):
        """(1/m) sum_l x_il v_l; x (..., m, m), v (..., m, k) -> (..., m, k)."""
        return np.einsum("...il,...lc->...ic", x, v) / self.m

    def mean_all(self, x):
        return x.mean(axis=(-1, -2))

    def mean_vec(self, a):
        return a.mean(axis=-1)

    def outer(self, a, b):
        """a_i b_j; a (m,) or (..., m), b (..., m)."""
        return a[..., :, None] * b[..., None, :]

    def left(self, a, x):
        """a_i x_ij; a (m,), x (..., m, m)."""
        return a[:, None] * x

    def diag(self, x):
        return np.diagonal(x, axis1=-2, axis2=-1).copy()

    def inner(self, g, v):
        """<g_i, v_j>; g (m, k), v (..., m, k) -> (..., m, m)."""
        return np.einsum("ic,...jc->...ij", g, v)

    def phihat(self, phihat, v):
        return np.array([phihat(v[i]) for i in range(self.m)])

    def grad_phihat(self, grad, v, k):
        return np.array([np.asarray(grad(v[i]), float).reshape(k) for i in range(self.m)])


class Symmetric:
    """Matrices D I + O (J - I) as pairs (D, O) (trailing axis 2); neuron vectors: one value.

    (D1 I + O1 (J-I))(D2 I + O2 (J-I)) = [D1 D2 + (m-1) O1 O2] I
                                         + [D1 O2 + O1 D2 + (m-2) O1 O2] (J - I)   (spec 5)
    """

    def __init__(self, m: int):
        self.m = int(m)
        self.mat = (2,)
        self.vec = ()

    def eye(self):
        return np.array([1.0, 0.0])

    def T(self, x):
        return x

    def _combine(self, xy):
        """(D, O) of (x @ y)/m from the four products xy[..., a, b] = x_a y_b."""
        m = self.m
        d = xy[..., 0, 0] + (m - 1.0) * xy[..., 1, 1]
        o = xy[..., 0, 1] + xy[..., 1, 0] + (m - 2.0) * xy[..., 1, 1]
        return np.stack([d, o], axis=-1) / m

    def prod(self, x, y):
        return self._combine(x[..., :, None] * y[..., None, :])

    def contract(self, x, Y):
        return self._combine(np.einsum("sa,sqb->qab", x, Y))

    def contract_t(self, x, Y):
        return self._combine(np.einsum("sa,qsb->qab", x, Y))

    def dot_rows(self, x, y):
        return self._combine(np.einsum("sa,sb->ab", x, y))

    def _row_sum(self, x):
        return x[..., 0] + (self.m - 1.0) * x[..., 1]

    def matvec(self, x, a):
        return self._row_sum(x) * a / self.m

    def matvec_k(self, x, v):
        return (self._row_sum(x) / self.m)[..., None] * v

    def mean_all(self, x):
        return self._row_sum(x) / self.m

    def mean_vec(self, a):
        return a

    def outer(self, a, b):
        ab = np.asarray(a * b)
        return np.stack([ab, ab], axis=-1)

    def left(self, a, x):
        return a * x

    def diag(self, x):
        return x[..., 0].copy()

    def inner(self, g, v):
        gv = v @ g
        return np.stack([gv, gv], axis=-1)

    def phihat(self, phihat, v):
        return float(phihat(v))

    def grad_phihat(self, grad, v, k):
        return np.asarray(grad(v), float).reshape(k)


# ------------------------------------------------------------------------------ helpers
def _zero(v):
    return 0.0


def _targets(phihat, grad_phihat, k):
    if not callable(phihat):
        phihat = _zero
    if not callable(grad_phihat):
        zero = np.zeros(k)
        grad_phihat = lambda v, _z=zero: _z          # noqa: E731
    return phihat, grad_phihat


def _tw(r, x):
    """r[s] * x[s, ...]: a time row r (S,) times a row of neuron objects x (S, ...)."""
    return r.reshape((-1,) + (1,) * (x.ndim - 1)) * x


def _hpp_times_r(d2h, c, r):
    """h''(c) r, 0 where r == 0 (h'' is not evaluated there: C_ii = 1 where R_ii = 0)."""
    out = np.zeros_like(r)
    mask = r != 0.0
    if mask.any():
        out[mask] = d2h(c[mask]) * r[mask]
    return out


# ------------------------------------------------------------------------------ the solver
def solve(alg, h, dh, d2h, phihat, grad_phihat, norm2, tau, alpha_bar, a0, c0, v0, eta,
          steps, freeze_a=False, mode="gd"):
    """Run the recursion [G.1]-[G.12] for `steps` steps of size `eta` (= lr d/n).

    Arguments: `alg` a :class:`General` or :class:`Symmetric`; `h, dh, d2h` vectorized
    callables; `phihat(v)` (v of shape (k,)) and `grad_phihat(v)`, or None for pure noise;
    `norm2` = ||phi||^2; `tau`; `alpha_bar` = n/d; `a0` (vec), `c0` (mat) = C(0, 0), `v0`
    (vec, k) in the algebra's representation; `mode` "gd" (exact discrete GD) or "euler"
    (spec section 6 with step eta). Returns a dict of arrays over t_k = k eta, k = 0..steps:
    t, a, v, C, R, R_A, C_A, Sigma_C, Sigma_R, rho, nu, N, Gamma, e_tr, e_ts, diverged
    (the first k at which a value became non-finite, else -1).
    """
    if mode not in ("gd", "euler"):
        raise ValueError(f"mode must be 'gd' or 'euler', got {mode!r}")
    v0 = np.asarray(v0, float)
    k_dim = v0.shape[-1]
    phihat, grad_phihat = _targets(phihat, grad_phihat, k_dim)
    K, P, m, eta = int(steps), int(steps) + 1, alg.m, float(eta)
    ab, cst = float(alpha_bar), float(tau) ** 2 + float(norm2)
    mat, vec = alg.mat, alg.vec

    a = np.zeros((P, *vec))
    v = np.zeros((P, *vec, k_dim))
    C = np.zeros((P, P, *mat))
    R = np.zeros((P, P, *mat))
    RA, CA, SC, SR = (np.zeros((P, P)) for _ in range(4))
    rho, e_tr, e_ts = np.zeros(P), np.zeros(P), np.zeros(P)
    nu, N = np.zeros((P, *vec)), np.ones((P, *vec))
    Gam = np.zeros((P, *mat))
    ph = np.zeros((P, *vec))
    a[0], v[0], C[0, 0] = a0, v0, c0
    diverged = -1

    for k in range(P):
        k1 = k + 1
        ak, av = a[k], a[:k1]
        ph[k] = alg.phihat(phihat, v[k])
        g = alg.grad_phihat(grad_phihat, v[k], k_dim)
        Ck, Rk = C[k, :k1], R[k, :k1]                     # (k1, *mat)
        aa = alg.outer(ak, av)                            # a_i(t_k) a_j(s)
        hC, dhC = h(Ck), dh(Ck)

        # [G.1] Sigma_C, Sigma_R on row k  (spec [C.20])
        sc = cst - alg.mean_vec(ak * ph[k]) - alg.mean_vec(av * ph[:k1]) + alg.mean_all(aa * hC)
        sr = alg.mean_all(aa * dhC * Rk)
        sr[k] = 0.0
        SC[k, :k1], SC[:k1, k], SR[k, :k1] = sc, sc, sr

        # [G.2] R_A row k  (exact: eta R_A = (I + eta Sigma_R)^-1, [D.5])
        ra = np.zeros(k1)
        ra[k] = 1.0 / eta
        ra[:k] = -eta * (sr[:k] @ RA[:k, :k])
        RA[k, :k1] = ra

        # [G.3] C_A row k, s < k then s = k  ([D.6])
        ca = np.zeros(k1)
        ca[:k] = -eta * (sr[:k] @ CA[:k, :k]) - eta * (RA[:k, :k] @ sc[:k])
        ca[k] = -eta * (sr[:k] @ ca[:k]) - eta * (sc @ ra)
        CA[k, :k1], CA[:k1, k] = ca, ca

        # [G.4] rho and the memory kernels on row k  (spec [C.18])
        rho[k] = eta * ra.sum()
        pref = (ab / m) * aa
        MR = pref * (_tw(ra, dhC) + _tw(ca, _hpp_times_r(d2h, Ck, Rk)))
        MC = pref * _tw(ca, dhC)

        e_tr[k] = -0.5 * ca[k]
        e_ts[k] = 0.5 * (cst - 2.0 * alg.mean_vec(ak * ph[k]) + alg.mean_all(alg.outer(ak, ak) * h(C[k, k])))
        if not (np.all(np.isfinite(Ck)) and np.isfinite(ca[k]) and np.all(np.isfinite(ak))):
            diverged = k
            break

        # [G.5] X(k, s') = P + A + B for s' <= k; nu = diag X(k, k)
        Pm = (ab / m) * rho[k] * alg.left(ak, alg.inner(g, v[:k1]))
        Am = -eta * alg.contract(MR, C[:k1, :k1])
        Bm = -eta * alg.contract_t(MC, R[:k1, :k1])
        X = Pm + Am + Bm
        nu[k] = alg.diag(X[k])
        if k == K:
            break

        # [G.6a] v rate, [G.9a] a rate  ([C.8] and [C.7] with sums)
        V = (ab / m) * rho[k] * (np.asarray(ak)[..., None] * g) \
            - eta * np.sum(alg.matvec_k(MR, v[:k1]), axis=0)
        if freeze_a:
            A = np.zeros_like(ak)
        else:
            mem = _tw(ra, alg.matvec(hC, av)) + _tw(ca, alg.matvec(dhC * Rk, av))
            A = (ab / m) * (ph[k] * rho[k] - eta * mem.sum(axis=0))

        # response memory: Y(k, s') = -eta sum_{s} (1/m) M^R(k, s) R(s, s')
        Y = -eta * alg.contract(MR, R[:k1, :k1])

        if mode == "euler":
            D = X - alg.left(nu[k], Ck)
            a[k1] = ak + eta * A
            v[k1] = v[k] + eta * (V - np.asarray(nu[k])[..., None] * v[k])
            C[k1, :k1] = Ck + eta * D
            C[k1, k1] = C[k, k] + eta * (D[k] + alg.T(D[k]))
            R[k1, :k1] = Rk + eta * (Y - alg.left(nu[k], Rk))
            R[k1, k] += alg.eye()
        else:
            # [G.7] Gamma(k) = <g_i(k), g_j(k)>
            Q = (ab / m) * rho[k] * alg.T(alg.left(ak, alg.inner(g, V)))
            Kn = -MC[k] / m                               # equal-time noise covariance
            Gm = Q - eta * alg.dot_rows(X, MR) - eta * alg.dot_rows(MR, Bm) + Kn
            Gam[k] = Gm
            # [G.8] the normalization
            Nk = np.sqrt(alg.diag(C[k, k]) + 2.0 * eta * nu[k] + eta ** 2 * alg.diag(Gm))
            N[k] = Nk
            inv = 1.0 / Nk
            # [G.9]-[G.12]
            a[k1] = ak + eta * A
            v[k1] = (v[k] + eta * V) * np.asarray(inv)[..., None]
            C[k1, :k1] = alg.left(inv, Ck + eta * X)
            C[k1, k1] = (C[k, k] + eta * (X[k] + alg.T(X[k])) + eta ** 2 * Gm) * alg.outer(inv, inv)
            R[k1, :k1] = alg.left(inv, Rk + eta * Y)
            R[k1, k] += alg.left(inv, alg.eye())
        C[:k1, k1] = alg.T(C[k1, :k1])

    return dict(t=eta * np.arange(P), a=a, v=v, C=C, R=R, R_A=RA, C_A=CA, Sigma_C=SC,
                Sigma_R=SR, rho=rho, nu=nu, N=N, Gamma=Gam, e_tr=e_tr, e_ts=e_ts,
                diverged=diverged)


def solve_general(h, dh, d2h, phihat, grad_phihat, norm2, tau, alpha_bar, a0, C0, v0, eta,
                  steps, freeze_a=False, mode="gd"):
    """[G.1]-[G.12] in the general algebra: a0 (m,), C0 (m, m), v0 (m, k) or None."""
    a0 = np.asarray(a0, float)
    m = a0.shape[0]
    v0 = np.zeros((m, 1)) if v0 is None else np.asarray(v0, float).reshape(m, -1)
    return solve(General(m), h, dh, d2h, phihat, grad_phihat, norm2, tau, alpha_bar, a0,
                 np.asarray(C0, float), v0, eta, steps, freeze_a, mode)


def solve_symmetric(h, dh, d2h, phihat, grad_phihat, norm2, tau, alpha_bar, m, a0, eta,
                    steps, k=1, freeze_a=False, mode="gd"):
    """[G.1]-[G.12] in the symmetric algebra (w_i(0) iid uniform, a_i(0) = a0, v(0) = 0)."""
    return solve(Symmetric(m), h, dh, d2h, phihat, grad_phihat, norm2, tau, alpha_bar,
                 float(a0), np.array([1.0, 0.0]), np.zeros(k), eta, steps, freeze_a, mode)


def to_neurons(sol, m):
    """A symmetric solution expanded to per-neuron arrays: a (T, m), C0 (T, m, m) = C(t, 0)."""
    eye = np.eye(m)
    T = sol["a"].shape[0]
    c0 = sol["C"][:, 0]
    return dict(a=np.repeat(sol["a"][:, None], m, 1),
                C0=c0[:, 0, None, None] * eye + c0[:, 1, None, None] * (1 - eye),
                Ct=np.array([sol["C"][j, j, 0] * eye + sol["C"][j, j, 1] * (1 - eye)
                             for j in range(T)]))
