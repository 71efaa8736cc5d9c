"""The DMFT of gradient-flow training (spec sections 4-6), written once for any neuron algebra.

`DMFT(algebra=General(m), ...)` is the general theory of spec section 4 (m x m neuron matrices,
any deterministic initialization); `DMFT(algebra=Symmetric(m), ...)` is the same equations in
the two-number algebra D I + O (J - I) of spec section 5 (SymmDMFT). The causal row update
follows the discretization of spec section 6 step by step; see `DMFT.row`.

History buffers put neuron axes first and time axes last (see `dmft_jax._algebra`):
a (*vec, L), v (*vec, k, L), C and R (*mat, L, L) with C[..., n, l] = C(t_n, t_l),
R_A and C_A (L, L).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._algebra import AbstractAlgebra, General, Symmetric
from ._covariance import AbstractKernel, Target
from ._grid import TimeGrid
from ._integrate import AbstractModel
from ._solution import Solution


def d2_times(kernel: AbstractKernel, q: Array, r: Array) -> Array:
    """h''(q) * r, defined as 0 where r == 0.

    The response R vanishes on the diagonal t = s, exactly where C_ii = 1 and where h'' may be
    infinite. The double `where` keeps gradients finite there.
    """
    nonzero = r != 0
    safe_q = jnp.where(nonzero, q, jnp.zeros_like(q))
    return jnp.where(nonzero, kernel.d2(safe_q) * r, jnp.zeros_like(r))


def response_rows(sigma_r: Array, sigma_c: Array, r_a: Array, c_a: Array, n, dt):
    """Row n of R_A and C_A from [C.19] by the explicit recursion of spec section 6.

    `sigma_r`, `sigma_c`: rows n of Sigma_R, Sigma_C (zero beyond n; sigma_r[n] = 0);
    `r_a`: R_A with rows < n written (lower triangular, 1/dt on the diagonal);
    `c_a`: C_A with rows and columns < n written (symmetric). Returns the buffers with row n
    (and column n of C_A) written, and the two rows:

        R_A[n, k] = delta_nk / dt - dt sum_{l<n} Sigma_R[n, l] R_A[l, k]                  [D.5]
        C_A[n, k] = -dt sum_{l<n} Sigma_R[n, l] C_A[l, k] - dt sum_{l<=k} Sigma_C[n, l] R_A[k, l]

    C_A[n, n] uses the entries C_A[n, l < n] just computed, as C_A[l, n] = C_A[n, l].   [D.6]
    """
    e_n = (jnp.arange(r_a.shape[0]) == n).astype(r_a.dtype)
    r_row = e_n / dt - dt * (sigma_r @ r_a)
    r_a = r_a.at[n].set(r_row)
    c_row = -dt * (sigma_r @ c_a) - dt * (r_a @ sigma_c)
    c_row = c_row.at[n].add(-dt * jnp.dot(sigma_r, c_row))
    c_a = c_a.at[n].set(c_row).at[:, n].set(c_row)
    return r_a, c_a, r_row, c_row


def set_next(x: Array, n, value: Array) -> Array:
    """x with entry n + 1 of its last axis set to `value` (no-op past the end)."""
    return jnp.where(jnp.arange(x.shape[-1]) == n + 1, value[..., None], x)


class DMFT(AbstractModel):
    """Dynamical mean field theory of a two-layer network under gradient flow.

    Equations [C.7]-[C.10], [C.18]-[C.20], [C.24], [C.25] (spec section 4) in the neuron
    algebra `algebra`; under `Symmetric(m)` they are [C.32]-[C.46] (spec section 5).

    **Fields:**

    - `algebra`: `Symmetric(m)` or `General(m)` (m static).
    - `h`: the activation covariance h(q) [A.5].
    - `target`: phihat, grad phihat, ||phi||^2 [A.7] (k = `target.k`, static).
    - `tau`: label-noise level; `alpha_bar`: n / d (= alpha m).
    - `a0` (*vec), `c0` (*mat), `v0` (*vec, k): a_i(0), C_ij(0, 0), v_i(0) in the
      algebra's representation.
    - `freeze_a`: keep the second layer at a(0) (drop [C.7] / [C.32]).

    Construct with `symmetric_dmft` / `general_dmft`, which validate their input.
    """

    algebra: AbstractAlgebra
    h: AbstractKernel
    target: Target
    tau: Array
    alpha_bar: Array
    a0: Array
    c0: Array
    v0: Array
    freeze_a: bool = eqx.field(static=True, default=False)

    @property
    def m(self) -> int:
        return self.algebra.m

    @property
    def k(self) -> int:
        return self.target.k

    @property
    def alpha(self) -> Array:
        """Overparametrization ratio alpha = n / (m d) = alpha_bar / m."""
        return self.alpha_bar / self.m

    # ----------------------------------------------------------------- buffers
    def init(self, grid: TimeGrid):
        alg, size = self.algebra, grid.size
        dtype = jnp.result_type(float, self.tau, self.alpha_bar, self.a0, grid.dt)
        vec, mat = alg.vector_shape, alg.matrix_shape
        return dict(
            a=jnp.zeros((*vec, size), dtype).at[..., 0].set(self.a0),
            v=jnp.zeros((*vec, self.k, size), dtype).at[..., 0].set(self.v0),
            C=alg.history_set(alg.history_zeros(size, dtype), 0,
                              jnp.zeros((*mat, size), dtype).at[..., 0].set(self.c0), True),
            R=alg.history_zeros(size, dtype),
            R_A=jnp.zeros((size, size), dtype),
            C_A=jnp.zeros((size, size), dtype),
            nu=jnp.zeros((*vec, size), dtype),
            rho=jnp.zeros((size,), dtype),
        )

    def time_axes(self):
        return dict(a=1, v=1, C=2, R=2, R_A=2, C_A=2, nu=1, rho=1)

    # -------------------------------------------------------------- one row
    def _phihat_over_time(self, v: Array) -> Array:
        return self.target.phihat(jnp.moveaxis(v, -2, -1))

    def _sigmas(self, n, s, c_n, r_n, past):
        """Rows n of Sigma_C and Sigma_R [C.20] (zero beyond n), and a_i(t_n) a_j(s)."""
        alg = self.algebra
        a_t = s["a"][..., n]
        aa = alg.outer(a_t, s["a"])
        fit_t = alg.mean_vec(a_t * self.target.phihat(s["v"][..., n]))
        fit_s = alg.mean_vec(s["a"] * self._phihat_over_time(s["v"]))
        sigma_c = (self.tau**2 + self.target.norm2 - fit_t - fit_s
                   + alg.mean_all(aa * self.h(c_n)))
        sigma_r = alg.mean_all(aa * self.h.d1(c_n) * r_n)
        return jnp.where(past, sigma_c, 0.0), jnp.where(past, sigma_r, 0.0), aa

    def row(self, n, s, grid: TimeGrid):
        """Steps 1-5 of spec section 6 for row n: returns the front (a, v, C[n], R[n]) and rate."""
        alg, h, dt = self.algebra, self.h, grid.dt
        past = jnp.arange(s["rho"].shape[-1]) <= n
        c_n, r_n = alg.history_row(s["C"], n), alg.history_row(s["R"], n)
        a_t, v_t = s["a"][..., n], s["v"][..., n]

        # 1-3. Sigma_C, Sigma_R, then the rows of R_A and C_A [C.19].
        sigma_c, sigma_r, aa = self._sigmas(n, s, c_n, r_n, past)
        r_a, c_a, r_row, c_row = response_rows(sigma_r, sigma_c, s["R_A"], s["C_A"], n, dt)
        rho = dt * jnp.sum(r_row)

        # 4. Memory kernels on row n [C.18]; zero beyond n because r_row and c_row are.
        w = self.alpha * aa
        dh_c = h.d1(c_n)
        m_r = w * (r_row * dh_c + c_row * d2_times(h, c_n, r_n))
        m_c = w * c_row * dh_c

        # Right side of [C.9] without the nu term for every s' <= n; nu is its s' = t value,
        # so that C_ii(t, t) = 1 is kept exactly by the discrete scheme.
        g_t = self.target.grad_phihat(v_t)
        f_c = (self.alpha * rho * alg.left(a_t, alg.inner_k(g_t, s["v"]))
               - dt * alg.contract(m_r, s["C"]) - dt * alg.contract_t(m_c, s["R"]))
        nu = alg.diag(f_c[..., n])

        # 5. Rates: [C.9] for C(t, s'), [C.6] for the new equal-time entry, [C.10] for R.
        d_c = jnp.where(past, f_c - alg.left(nu, c_n), 0.0)
        d_c = set_next(d_c, n, d_c[..., n] + alg.transpose(d_c[..., n]))
        d_r = -alg.left(nu, r_n) - dt * alg.contract(m_r, s["R"])
        d_r = jnp.where(past, d_r, 0.0)
        d_r = d_r.at[..., n].add(alg.identity(d_r.dtype) / dt)   # delta(t - s'): R[n+1, n] = 1
        d_v = (-nu[..., None] * v_t + self.alpha * rho * a_t[..., None] * g_t
               - dt * jnp.sum(alg.matvec_k(m_r, s["v"]), axis=-1))            # [C.8]

        s = dict(s, R_A=r_a, C_A=c_a, nu=s["nu"].at[..., n].set(nu),
                 rho=s["rho"].at[n].set(rho))
        front = dict(a=a_t, v=v_t, C=set_next(jnp.where(past, c_n, 0.0), n, c_n[..., n]), R=r_n)
        rate = dict(a=self._da(n, s, c_n, r_n, r_row, c_row, rho, dt), v=d_v, C=d_c, R=d_r)
        return s, front, rate

    def _da(self, n, s, c_n, r_n, r_row, c_row, rho, dt):
        """da_i/dt of [C.7] / [C.32]; zero with a frozen second layer."""
        if self.freeze_a:
            return jnp.zeros_like(s["a"][..., n])
        alg, h = self.algebra, self.h
        fit = self.target.phihat(s["v"][..., n]) * rho
        mem = r_row * alg.matvec(h(c_n), s["a"]) + c_row * alg.matvec(h.d1(c_n) * r_n, s["a"])
        return self.alpha * (fit - dt * jnp.sum(mem, axis=-1))

    def write(self, n, s, front):
        alg = self.algebra
        return dict(
            s,
            a=s["a"].at[..., n].set(front["a"]),
            v=s["v"].at[..., n].set(front["v"]),
            C=alg.history_set(s["C"], n, front["C"], column=True),
            R=alg.history_set(s["R"], n, front["R"], column=False),
        )

    # --------------------------------------------------------------- result
    def test_error(self, a: Array, v: Array, c_eq: Array) -> Array:
        """e_ts = (1/2)[tau^2 + ||phi||^2 - (2/m) sum a_i phihat(v_i) + (1/m^2) sum a_i a_j h(C_ij(t,t))].

        [C.25] / [C.46], vectorized over a trailing time axis; `c_eq` is C(t, t).
        """
        alg = self.algebra
        fit = alg.mean_vec(a * self._phihat_over_time(v))
        quad = alg.mean_all(alg.outer(a, a) * self.h(c_eq))
        return 0.5 * (self.tau**2 + self.target.norm2 - 2.0 * fit + quad)

    def solution(self, s, grid: TimeGrid) -> Solution:
        idx = jnp.arange(grid.size)
        C, R = self.algebra.history_array(s["C"]), self.algebra.history_array(s["R"])
        c_eq = C[..., idx, idx]
        return Solution(
            t=grid.ts,
            a=jnp.moveaxis(s["a"], -1, 0),
            v=jnp.moveaxis(s["v"], -1, 0),
            nu=jnp.moveaxis(s["nu"], -1, 0),
            rho=s["rho"], C=C, R=R, C_A=s["C_A"], R_A=s["R_A"],
            e_tr=-0.5 * jnp.diagonal(s["C_A"]),                                   # [C.24]
            e_ts=self.test_error(s["a"], s["v"], c_eq),
            algebra=self.algebra,
        )


# ------------------------------------------------------------------------------ construction
def _concrete(x):
    """x as a NumPy array, or None while tracing (checks then ran on the concrete call)."""
    try:
        return np.asarray(x, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_scalar(name: str, value, lower: float, strict: bool) -> Array:
    val = _concrete(value)
    if val is not None:
        if val.ndim != 0 or not np.isfinite(val):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if (strict and not val > lower) or (not strict and not val >= lower):
            op = ">" if strict else ">="
            raise ValueError(f"{name} must be {op} {lower}, got {float(val)}")
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _check_kernel(h: AbstractKernel) -> AbstractKernel:
    """The DMFT needs a finite h''(1): reject kernels (ReLU) whose memory term diverges.

    In the scheme of spec section 6, C_ii(t + dt, t) = 1 exactly while R_ii(t + dt, t) = 1, so
    M^R contains h''(1) R: with ReLU's h''(q) ~ 1/sqrt(1 - q) the continuous-time memory
    integral diverges logarithmically (1 - C_ii(t, s) ~ (t - s)^2). A Hermite truncation of the
    activation (`covariance("relu", degree=K)`) is smooth and has a finite h''(1).
    """
    val = _concrete(h.d2(jnp.ones(())))
    if val is not None and not np.isfinite(val):
        raise ValueError(
            "h''(1) is infinite for this covariance (e.g. ReLU's arc-cosine kernel): the DMFT "
            "memory term h''(C_d) R_d diverges logarithmically at equal times. Use a smooth "
            "activation, or the degree-K Hermite truncation covariance('relu', degree=K).")
    return h


def _target_or_noise(target: Target | None) -> Target:
    return Target.pure_noise() if target is None else target


def symmetric_dmft(h, target: Target | None = None, *, tau, alpha, m: int, a0=None,
                   gamma0=None, freeze_a: bool = False) -> DMFT:
    """The symmetric DMFT (SymmDMFT, spec section 5) with validated parameters.

    Symmetric initialization: w_i(0) iid uniform on the sphere (C(0,0) = I, v(0) = 0) and
    a_i(0) = a0 for all i; mean-field scale `a0`, or lazy scale `gamma0` (a0 = gamma0 sqrt(m)).

    **Arguments:** `h` a kernel or a `covariance` spec; `target` a `Target` (None: pure noise);
    `tau` >= 0; `alpha` = n / (m d) > 0; `m` >= 1 (static); exactly one of `a0`, `gamma0`;
    `freeze_a` keeps a(t) = a0.
    """
    from ._covariance import covariance
    if int(m) != m or m < 1:
        raise ValueError(f"the width m must be an integer >= 1, got {m}")
    if (a0 is None) == (gamma0 is None):
        raise ValueError("give exactly one of a0 (mean-field scale) and gamma0 (lazy scale)")
    alpha = _check_scalar("alpha", alpha, 0.0, strict=True)
    a0 = (_check_scalar("a0", a0, -np.inf, strict=False) if gamma0 is None
          else _check_scalar("gamma0", gamma0, -np.inf, strict=False) * np.sqrt(m))
    target = _target_or_noise(target)
    return DMFT(
        algebra=Symmetric(int(m)), h=_check_kernel(covariance(h)), target=target,
        tau=_check_scalar("tau", tau, 0.0, strict=False), alpha_bar=alpha * m,
        a0=a0, c0=jnp.array([1.0, 0.0], a0.dtype), v0=jnp.zeros(target.k, a0.dtype),
        freeze_a=freeze_a)


def check_initialization(a, C, v, k: int, atol: float = 1e-8):
    """Validate a general initialization (a (m,), C (m, m), v (m, k) or None) and return arrays.

    C must be a Gram matrix of unit vectors (symmetric, unit diagonal, positive semidefinite);
    with v, the joint Gram matrix [[C, v], [v^T, I_k]] of (w_i, u_j) must be PSD too.
    """
    a, C = np.asarray(a, dtype=np.float64), np.asarray(C, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"a must have shape (m,), got {a.shape}")
    m = a.shape[0]
    if C.shape != (m, m):
        raise ValueError(f"C must have shape (m, m) = ({m}, {m}) to match a, got {C.shape}")
    v = np.zeros((m, k)) if v is None else np.asarray(v, dtype=np.float64)
    if v.shape != (m, k):
        raise ValueError(f"v must have shape (m, k) = ({m}, {k}) (k from the target), got {v.shape}")
    for name, x in (("a", a), ("C", C), ("v", v)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} has non-finite entries")
    if not np.allclose(C, C.T, atol=atol):
        raise ValueError("C is not symmetric: not a Gram matrix of the w_i(0)")
    if not np.allclose(np.diag(C), 1.0, atol=atol):
        raise ValueError(f"C must have unit diagonal (||w_i|| = 1), got diag {np.diag(C).tolist()}")
    joint = np.block([[C, v], [v.T, np.eye(k)]])
    low = np.linalg.eigvalsh((joint + joint.T) / 2).min()
    if low < -atol * max(1, m):
        what = "C" if np.linalg.eigvalsh((C + C.T) / 2).min() < -atol * m else "[[C, v], [v^T, I]]"
        raise ValueError(f"{what} is not positive semidefinite (smallest eigenvalue {low:.3g}): "
                         "no unit vectors w_i have these overlaps")
    return a, C, v


def general_dmft(h, target: Target | None = None, *, tau, a, C, v=None, alpha=None,
                 alpha_bar=None, freeze_a: bool = False) -> DMFT:
    """The general DMFT (spec section 4) from a deterministic initialization, validated.

    **Arguments:** `h`, `target`, `tau` as in `symmetric_dmft`; `a` (m,) the a_i(0); `C` (m, m)
    the overlaps <w_i(0), w_j(0)>; `v` (m, k) the overlaps U^T w_i(0) (default 0); exactly one
    of `alpha` = n / (m d) and `alpha_bar` = n / d.
    """
    from ._covariance import covariance
    target = _target_or_noise(target)
    if (alpha is None) == (alpha_bar is None):
        raise ValueError("give exactly one of alpha (= n/(m d)) and alpha_bar (= n/d)")
    a, C, v = check_initialization(a, C, v, target.k)
    m = a.shape[0]
    alpha_bar = (_check_scalar("alpha_bar", alpha_bar, 0.0, strict=True) if alpha is None
                 else _check_scalar("alpha", alpha, 0.0, strict=True) * m)
    dtype = jnp.result_type(float)
    return DMFT(
        algebra=General(m), h=_check_kernel(covariance(h)), target=target,
        tau=_check_scalar("tau", tau, 0.0, strict=False), alpha_bar=alpha_bar,
        a0=jnp.asarray(a, dtype), c0=jnp.asarray(C, dtype), v0=jnp.asarray(v, dtype),
        freeze_a=freeze_a)
