"""The DMFT of gradient-flow training (spec sections 4-6), written once for any neuron algebra.

`DMFT(algebra=General(m), ...)` is the general theory of spec section 4 (m x m neuron matrices,
any deterministic initialization); `DMFT(algebra=Symmetric(m), ...)` is the same equations in
the two-number algebra D I + O (J - I) of spec section 5 (SymmDMFT). The causal row update
follows the discretization of spec section 6 step by step; see `DMFT.row`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from ._algebra import AbstractAlgebra, General, Symmetric
from ._covariance import AbstractKernel, Target
from ._grid import TimeGrid
from ._integrate import AbstractModel
from ._solution import Solution


def _float(x) -> Array:
    return jnp.asarray(x, dtype=jnp.result_type(float))


def d2_times(kernel: AbstractKernel, q: Array, r: Array) -> Array:
    """h''(q) * r, defined as 0 where r == 0.

    The response R vanishes on the diagonal t = s, exactly where C_ii = 1 and where h'' may be
    infinite (ReLU's arc-cosine kernel). The double `where` keeps gradients finite there.
    """
    nonzero = r != 0
    safe_q = jnp.where(nonzero, q, jnp.zeros_like(q))
    return jnp.where(nonzero, kernel.d2(safe_q) * r, jnp.zeros_like(r))


def response_rows(sigma_r: Array, sigma_c: Array, r_a: Array, c_a: Array, n, dt):
    """Row n of R_A and C_A from [C.19] by the explicit recursion of spec section 6.

    sigma_r, sigma_c: rows n of Sigma_R, Sigma_C (zero beyond n; sigma_r[n] = 0).
    r_a: R_A with rows < n written (lower triangular, 1/dt on the diagonal).
    c_a: C_A with rows and columns < n written (symmetric).
    Returns (r_a, c_a) with row n (and column n of c_a) written, and the rows themselves.

        R_A[n, k] = delta_nk / dt - dt sum_{l<n} Sigma_R[n, l] R_A[l, k]                 [D.5]
        C_A[n, k] = -dt sum_{l<n} Sigma_R[n, l] C_A[l, k] - dt sum_{l<=k} Sigma_C[n, l] R_A[k, l]
    (C_A[n, n] uses the entries C_A[n, l<n] just computed, as C_A[l, n] = C_A[n, l].)   [D.6]
    """
    size = r_a.shape[0]
    e_n = (jnp.arange(size) == n).astype(r_a.dtype)
    r_row = e_n / dt - dt * (sigma_r @ r_a)
    r_a = r_a.at[n].set(r_row)
    c_row = -dt * (sigma_r @ c_a) - dt * (r_a @ sigma_c)
    c_row = c_row.at[n].add(-dt * jnp.dot(sigma_r, c_row))
    c_a = c_a.at[n].set(c_row).at[:, n].set(c_row)
    return r_a, c_a, r_row, c_row


class DMFT(AbstractModel):
    """Dynamical mean field theory of a two-layer network under gradient flow.

    Equations [C.7]-[C.10], [C.18]-[C.20], [C.24], [C.25] (spec section 4) in the neuron
    algebra `algebra`; under `Symmetric(m)` they reduce to [C.32]-[C.46] (spec section 5).

    **Fields:**

    - `algebra`: `Symmetric(m)` or `General(m)` (m static).
    - `h`: the activation covariance h(q) [A.5].
    - `target`: phihat, grad phihat, ||phi||^2 [A.7] (k = `target.k` static).
    - `tau`: label noise; `alpha_bar`: n / d (= alpha m).
    - `a0`, `c0`, `v0`: the initial a_i(0), C_ij(0, 0), v_i(0) in the algebra's representation.
    - `freeze_a`: keep the second layer at a(0) (drop [C.7] / [C.32]).
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
        """Overparametrization ratio n / (m d)."""
        return self.alpha_bar / self.m

    # ----------------------------------------------------------------- buffers
    def init(self, grid: TimeGrid):
        alg, size = self.algebra, grid.size
        dtype = jnp.result_type(float, self.tau, self.alpha_bar, self.a0, grid.dt)
        vec, mat = alg.vector_shape, alg.matrix_shape
        a = jnp.zeros((size, *vec), dtype).at[0].set(self.a0)
        v = jnp.zeros((size, *vec, self.k), dtype).at[0].set(self.v0)
        c = jnp.zeros((size, size, *mat), dtype).at[0, 0].set(self.c0)
        return dict(
            a=a, v=v, C=c,
            R=jnp.zeros((size, size, *mat), dtype),
            R_A=jnp.zeros((size, size), dtype),
            C_A=jnp.zeros((size, size), dtype),
            nu=jnp.zeros((size, *vec), dtype),
            rho=jnp.zeros((size,), dtype),
        )

    # -------------------------------------------------------------- one row
    def _sigmas(self, n, s, past):
        """Rows n of Sigma_C and Sigma_R [C.20] (zero beyond n)."""
        alg, tgt = self.algebra, self.target
        a_t = s["a"][n]
        aa = alg.outer(a_t, s["a"])                     # a_i(t) a_j(s), over s
        fit_t = alg.mean_vec(a_t * tgt.phihat(s["v"][n]))
        fit_s = alg.mean_vec(s["a"] * tgt.phihat(s["v"]))
        const = self.tau**2 + tgt.norm2 - fit_t
        sigma_c = const - fit_s + alg.mean_all(aa * self.h(s["C"][n]))
        sigma_r = alg.mean_all(aa * self.h.d1(s["C"][n]) * s["R"][n])
        return jnp.where(past, sigma_c, 0.0), jnp.where(past, sigma_r, 0.0), aa

    def row(self, n, s, grid: TimeGrid):
        """Steps 1-5 of spec section 6 for row n; returns the front (a, v, C[n], R[n]) and rate."""
        alg, h, tgt, dt = self.algebra, self.h, self.target, grid.dt
        size = grid.size
        idx = jnp.arange(size)
        past = idx <= n
        mat = (slice(None),) + (None,) * len(alg.matrix_shape)  # broadcast a time row over neurons

        # 1-3. Sigma_C, Sigma_R, then R_A and C_A rows [C.19].
        sigma_c, sigma_r, aa = self._sigmas(n, s, past)
        r_a, c_a, r_row, c_row = response_rows(sigma_r, sigma_c, s["R_A"], s["C_A"], n, dt)
        rho = dt * jnp.sum(r_row)

        # 4. Memory kernels on row n [C.18] (zero beyond n since r_row, c_row are).
        c_n, r_n = s["C"][n], s["R"][n]
        w = self.alpha_bar / self.m * aa
        dh_c = h.d1(c_n)
        m_r = w * (r_row[mat] * dh_c + c_row[mat] * d2_times(h, c_n, r_n))
        m_c = w * c_row[mat] * dh_c

        # Right side of [C.9] without the nu term, for every s' <= n; nu from s' = t.
        a_t, v_t = s["a"][n], s["v"][n]
        g_t = tgt.grad_phihat(v_t)
        lin = self.alpha_bar / self.m * rho * alg.left(a_t, alg.inner_k(g_t, s["v"]))
        f_c = lin - dt * alg.contract(m_r, s["C"]) - dt * alg.contract_t(m_c, s["R"])
        nu = alg.diag(f_c[n])
        d_c = f_c - alg.left(nu, s["C"][n])

        # 5. Rates of the front; the new equal-time entry C[n+1, n+1] advances by [C.6].
        d_r = -alg.left(nu, r_n) - dt * alg.contract(m_r, s["R"])
        d_r = d_r.at[n].add(alg.identity(d_r.dtype) / dt)     # delta(t - s'): R[n+1, n] = 1
        d_r = jnp.where(past[mat], d_r, 0.0)
        d_c = jnp.where(past[mat], d_c, 0.0)
        d_c = _set_next(d_c, n, d_c[n] + alg.transpose(d_c[n]))
        c_front = _set_next(jnp.where(past[mat], c_n, 0.0), n, c_n[n])
        d_v = (-nu[..., None] * v_t + self.alpha * rho * a_t[..., None] * g_t
               - dt * jnp.sum(alg.matvec_k(m_r, s["v"]), axis=0))      # [C.8]
        d_a = self._da(n, s, r_row, c_row, rho, dt)

        s = dict(s, R_A=r_a, C_A=c_a, nu=s["nu"].at[n].set(nu), rho=s["rho"].at[n].set(rho))
        front = dict(a=a_t, v=v_t, C=c_front, R=r_n)
        rate = dict(a=d_a, v=d_v, C=d_c, R=d_r)
        return s, front, rate

    def _da(self, n, s, r_row, c_row, rho, dt):
        """da_i/dt, [C.7] / [C.32]; zero with a frozen second layer."""
        alg, h = self.algebra, self.h
        if self.freeze_a:
            return jnp.zeros_like(s["a"][n])
        c_n, r_n = s["C"][n], s["R"][n]
        vec = (slice(None),) + (None,) * len(alg.vector_shape)
        fit = self.target.phihat(s["v"][n]) * rho
        mem_r = alg.matvec(h(c_n), s["a"])                   # (1/m) sum_l h(C_il(t,s)) a_l(s)
        mem_c = alg.matvec(h.d1(c_n) * r_n, s["a"])
        integral = dt * jnp.sum(r_row[vec] * mem_r + c_row[vec] * mem_c, axis=0)
        return self.alpha * (fit - integral)

    def write(self, n, s, front):
        alg = self.algebra
        c_row = front["C"]
        return dict(
            s,
            a=s["a"].at[n].set(front["a"]),
            v=s["v"].at[n].set(front["v"]),
            C=s["C"].at[n].set(c_row).at[:, n].set(alg.transpose(c_row)),
            R=s["R"].at[n].set(front["R"]),
        )

    # --------------------------------------------------------------- result
    def test_error(self, a: Array, v: Array, c_eq: Array) -> Array:
        """e_ts = (1/2)[tau^2 + ||phi||^2 - (2/m) sum a_i phihat(v_i) + (1/m^2) sum a_i a_j h(C_ij(t,t))].

        [C.25] / [C.46]; `c_eq` is C(t, t).
        """
        alg = self.algebra
        fit = alg.mean_vec(a * self.target.phihat(v))
        quad = alg.mean_all(alg.outer(a, a) * self.h(c_eq))
        return 0.5 * (self.tau**2 + self.target.norm2 - 2.0 * fit + quad)

    def solution(self, s, grid: TimeGrid) -> Solution:
        idx = jnp.arange(grid.size)
        c_eq = s["C"][idx, idx]
        return Solution(
            t=grid.ts, a=s["a"], v=s["v"], nu=s["nu"], rho=s["rho"], C=s["C"], R=s["R"],
            C_A=s["C_A"], R_A=s["R_A"],
            e_tr=-0.5 * jnp.diagonal(s["C_A"]),                                   # [C.24]
            e_ts=jax.vmap(self.test_error)(s["a"], s["v"], c_eq),
            algebra=self.algebra,
        )


def _set_next(x: Array, n, value: Array) -> Array:
    """x with entry n + 1 set to `value` (a no-op past the end of the buffer)."""
    size = x.shape[0]
    keep = jnp.arange(size) == n + 1
    keep = keep.reshape((size,) + (1,) * (x.ndim - 1))
    return jnp.where(keep, value, x)
