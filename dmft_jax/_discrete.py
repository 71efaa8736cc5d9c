"""The exact DMFT of discrete-time projected gradient descent (docs/discrete_gd.md).

Projected GD with step lr on the Gaussian model, w_i <- (w_i - lr g_i) / ||w_i - lr g_i|| and
a <- a - lr dR/da, has at n, d -> infinity (n/d = alpha_bar, m, k fixed) an exact DMFT for any
fixed step: a causal recursion over the buffers of the flow DMFT on the grid t_k = k eta,
eta = lr d / n. Steps 1-4 of spec section 6 (Sigma_C, Sigma_R, R_A, C_A, rho, the memory
kernels) are exact on that grid with left sums; the Lagrange multiplier's rate is replaced by
the per-step normalization

    N_i(k) = sqrt(1 + 2 eta nu_i(k) + eta^2 Gamma_ii(k))                               [G.8]

with Gamma(k) the equal-time Gram matrix of the gradient field [G.7]; the new rows are divided
by N ([G.9]-[G.12]), so that C_ii = 1 holds exactly and R(s + 1, s) = I / N(s). As eta -> 0,
N = 1 + eta nu + O(eta^2) and the recursion becomes the Euler scheme of spec section 6, hence
the gradient flow at first order in eta.

`DiscreteGD` wraps a `DMFT` (symmetric or general: the same equations in either neuron
algebra) and is solved with the `Map` stepper (no rate, no discretization error) on
`TimeGrid(eta, steps)`.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array

from ._dmft import DMFT
from ._integrate import AbstractModel
from ._stepper import RowWeights


class DiscreteGD(AbstractModel):
    """The DMFT of projected GD with a finite step, on the grid t_k = k eta (eta = lr d / n).

    **Fields:** `dmft`, the flow model whose physics (h, target, tau, alpha_bar, a(0), C(0, 0),
    v(0), frozen second layer) it shares. Solve with `dj.solve(DiscreteGD(model),
    dj.TimeGrid(eta, steps))` (the `Map` stepper is the default for discrete models).

    The solution is a `Solution` on t_k, with e_tr(k) the train loss at the k-th iterate and
    e_ts(k) its population error; `nu` holds X_ii(k, k) [G.5] and the extra buffer `N` the
    normalization [G.8] (in the state; see `docs/discrete_gd.md`).
    """

    dmft: DMFT
    discrete: ClassVar[bool] = True

    @property
    def algebra(self):
        return self.dmft.algebra

    @property
    def m(self) -> int:
        return self.dmft.m

    @property
    def k(self) -> int:
        return self.dmft.k

    # The physics parameters are those of the flow model (read, and moved by `eqx.tree_at` in
    # the gradients, through these properties).
    @property
    def h(self):
        return self.dmft.h

    @property
    def target(self):
        return self.dmft.target

    @property
    def tau(self) -> Array:
        return self.dmft.tau

    @property
    def alpha_bar(self) -> Array:
        return self.dmft.alpha_bar

    @property
    def alpha(self) -> Array:
        return self.dmft.alpha

    @property
    def a0(self) -> Array:
        return self.dmft.a0

    @property
    def freeze_a(self) -> bool:
        return self.dmft.freeze_a

    def init(self, size: int) -> dict:
        s = self.dmft.init(size)
        return dict(s, N=jnp.ones(self.dmft.algebra.vector_shape + (size,), s["rho"].dtype))

    def time_axes(self):
        return dict(self.dmft.time_axes(), N=1)

    def advancing(self):
        return self.dmft.advancing()

    def valid(self) -> Array:
        return self.dmft.valid()

    def row(self, n, s, wts: RowWeights):
        """The auxiliaries of row n (the last row of a solve)."""
        return self.dmft.row(n, s, wts)

    def next(self, n, s, wts: RowWeights, eta):
        """Row k = n + 1 from rows <= n: [G.1]-[G.12] of docs/discrete_gd.md."""
        alg, m = self.dmft.algebra, self.dmft.m
        s, x = self.dmft._terms(n, s, wts)
        past = jnp.arange(s["rho"].shape[-1]) <= n
        eye = alg.identity(x.c_n.dtype)
        X, B, V = x.f_c, x.mem_r, x.f_v                        # [G.5], [G.6a]
        x_n = X[..., n]
        # Gamma: the Gram matrix of the gradient field at equal times [G.7]. The M^R
        # contractions carry the delta of R_A (weight 1) at s = t_k, as in X.
        gamma = (alg.transpose(alg.inner_k(x.force, V))
                 - alg.dot_t(X, x.wm_r) - alg.product(x_n, x.m_delta)
                 - alg.dot_t(x.wm_r, B) - alg.product(x.m_delta, alg.transpose(B[..., n]))
                 - x.m_c[..., n] / m)
        norm = jnp.sqrt(1.0 + 2.0 * eta * x.nu + eta**2 * alg.diag(gamma))   # [G.8]
        inv = 1.0 / norm
        y = -alg.contract(x.wm_r, s["R"]) - alg.product(x.m_delta, x.r_n)     # [G.12]
        jump = jnp.where(jnp.arange(s["rho"].shape[-1]) == n, 1.0, 0.0) * eye[..., None]
        new = dict(
            a=x.a_t + eta * x.d_a,                                              # [G.9]
            v=(x.v_t + eta * V) * inv[..., None],
            C=jnp.where(past, alg.left(inv, x.c_n + eta * X), 0.0),              # [G.10]
            C_eq=(x.c_n[..., n] + eta * (x_n + alg.transpose(x_n)) + eta**2 * gamma)
            * alg.outer(inv, inv),                                              # [G.11]
            R=jnp.where(past, alg.left(inv, x.r_n + eta * y + jump), 0.0),
        )
        return dict(s, N=s["N"].at[..., n].set(norm)), new

    def write(self, n, s, front) -> dict:
        return self.dmft.write(n, s, front)

    def records(self, n, s) -> dict:
        return self.dmft.records(n, s)

    def divergence(self, n, s) -> Array:
        return self.dmft.divergence(n, s)

    def solution(self, s, ts, records=None):
        return self.dmft.solution(s, ts, records)
