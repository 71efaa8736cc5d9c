"""Typed results of a DMFT solve."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from ._algebra import AbstractAlgebra, Symmetric

#: |C(t, s)| may exceed 1 by at most this much before a solve counts as diverged.
CORRELATION_TOLERANCE = 1e-6


class Solution(eqx.Module):
    """The DMFT solution on the grid t_n = n dt, n = 0..N.

    Neuron-space quantities are stored in the representation of `algebra` (see
    `dmft_jax._algebra`): under `Symmetric(m)` a matrix is the pair (D, O) in the last axis,
    under `General(m)` an m x m block.

    **Fields:** `t` (N+1,); `a` (N+1, *vec) second-layer weights; `v` (N+1, *vec, k) overlaps
    with the target directions; `nu` (N+1, *vec), `rho` (N+1,) Lagrange multiplier and
    int R_A; `C`, `R` (*mat, N+1, N+1) with `C[..., n, l]` = C(t_n, t_l) (full square,
    C_ij(t,s) = C_ji(s,t)) and `R[..., n, l]` = R(t_n, t_l) (zero for l >= n); `C_A`, `R_A`
    (N+1, N+1) from [C.19] (R_A with 1/dt on its diagonal); `e_tr`, `e_ts` (N+1,) train and
    test errors [C.24, C.25]. (*vec, *mat) are () and (2,) under `Symmetric`, (m,) and (m, m)
    under `General`.
    """

    t: Array
    a: Array
    v: Array
    nu: Array
    rho: Array
    C: Array
    R: Array
    C_A: Array
    R_A: Array
    e_tr: Array
    e_ts: Array
    algebra: AbstractAlgebra

    @property
    def m(self) -> int:
        return self.algebra.m

    @property
    def gamma(self) -> Array:
        """gamma(t) = a(t) / sqrt(m) (symmetric), or ||a||_1 / (m sqrt(m)) in general."""
        if isinstance(self.algebra, Symmetric):
            return self.a / jnp.sqrt(self.m)
        return jnp.mean(jnp.abs(self.a), axis=-1) / jnp.sqrt(self.m)

    def _component(self, x: Array, which: int) -> Array:
        if not isinstance(self.algebra, Symmetric):
            raise ValueError("C_d, C_o, R_d, R_o are defined for the symmetric DMFT; use C, R")
        return x[which]

    @property
    def C_d(self) -> Array:
        """C_d(t_n, t_l) = C_ii (symmetric DMFT)."""
        return self._component(self.C, 0)

    @property
    def C_o(self) -> Array:
        """C_o(t_n, t_l) = C_ij, i != j (symmetric DMFT)."""
        return self._component(self.C, 1)

    @property
    def R_d(self) -> Array:
        return self._component(self.R, 0)

    @property
    def R_o(self) -> Array:
        return self._component(self.R, 1)

    @property
    def bad_rows(self) -> Array:
        """Boolean (N+1,): rows with a non-finite value or a correlation |C| > 1."""
        axes = tuple(range(self.C.ndim - 2)) + (self.C.ndim - 1,)
        over = jnp.max(jnp.abs(self.C), axis=axes) > 1.0 + CORRELATION_TOLERANCE
        finite = jnp.isfinite(self.e_tr) & jnp.isfinite(self.e_ts)
        finite &= jnp.all(jnp.isfinite(self.a.reshape(self.a.shape[0], -1)), axis=1)
        return over | ~finite

    @property
    def diverged(self) -> Array:
        """True if the solve produced a non-finite value or a correlation beyond 1."""
        return jnp.any(self.bad_rows)

    @property
    def divergence_time(self) -> Array:
        """The first time at which `bad_rows` holds (NaN if never)."""
        bad = self.bad_rows
        return jnp.where(jnp.any(bad), self.t[jnp.argmax(bad)], jnp.nan)
