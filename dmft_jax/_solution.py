"""Typed results of a DMFT solve."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from ._algebra import AbstractAlgebra, Symmetric
from ._results import CORRELATION_TOLERANCE, diverged_rows

__all__ = ["CORRELATION_TOLERANCE", "Solution"]


class Solution(eqx.Module):
    """The DMFT solution: one-time series at every step, two-time functions at stored times.

    Neuron-space quantities are stored in the representation of `algebra` (see
    `dmft_jax._algebra`): under `Symmetric(m)` a matrix is the pair (D, O) in the last axis,
    under `General(m)` an m x m block. (*vec, *mat) are () and (2,) under `Symmetric`, (m,)
    and (m, m) under `General`.

    **One-time fields** on the times `t` (T,): every grid time of a fixed-grid solve, every
    accepted step of an adaptive one (padded with t = +inf and repeated values beyond the last
    step: `stats["accepted"] + 1` entries are valid). `a` (T, *vec) second-layer weights;
    `v` (T, *vec, k) overlaps with the target directions; `nu` (T, *vec), `rho` (T,) Lagrange
    multiplier and int R_A; `e_tr`, `e_ts` (T,) train and test errors [C.24, C.25];
    `C_t0` (T, *mat) = C(t, 0); `C_tt` (T, *mat) = C(t, t).

    **Two-time fields** on the stored times `t_stored` (S,) (all grid times of a fixed grid;
    at most `history` times of an adaptive solve, `stats["stored"]` of them valid, the rest
    zero): `C`, `R` (*mat, S, S) with `C[..., n, l]` = C(t_n, t_l) (C_ij(t,s) = C_ji(s,t)) and
    `R[..., n, l]` = R(t_n, t_l) (zero for l >= n; R(t_n^+, t_n) = I is the jump); `C_A`
    (S, S) and `R_A` (S, S) from [C.19]: `R_A` is the regular part of R_A = delta + r_A
    (zero diagonal). Between stored times a two-time function is read by interpolation
    (`dmft_jax.observables`).

    `result` is a `RESULTS` item; `stats` counts accepted and rejected steps, stored times and
    decimations.
    """

    t: Array
    a: Array
    v: Array
    nu: Array
    rho: Array
    e_tr: Array
    e_ts: Array
    C_t0: Array
    C_tt: Array
    t_stored: Array
    C: Array
    R: Array
    C_A: Array
    R_A: Array
    algebra: AbstractAlgebra
    result: Any = None
    stats: Any = None

    @property
    def m(self) -> int:
        return self.algebra.m

    @property
    def symmetric(self) -> bool:
        return isinstance(self.algebra, Symmetric)

    @property
    def gamma(self) -> Array:
        """gamma(t) = a(t) / sqrt(m) (symmetric), or ||a||_1 / (m sqrt(m)) in general."""
        if self.symmetric:
            return self.a / jnp.sqrt(self.m)
        return jnp.mean(jnp.abs(self.a), axis=-1) / jnp.sqrt(self.m)

    def _component(self, x: Array, which: int) -> Array:
        if not self.symmetric:
            raise ValueError("C_d, C_o, R_d, R_o are defined for the symmetric DMFT; use C, R")
        return x[which]

    @property
    def C_d(self) -> Array:
        """C_d(t_n, t_l) = C_ii at the stored times (symmetric DMFT)."""
        return self._component(self.C, 0)

    @property
    def C_o(self) -> Array:
        """C_o(t_n, t_l) = C_ij, i != j, at the stored times (symmetric DMFT)."""
        return self._component(self.C, 1)

    @property
    def R_d(self) -> Array:
        return self._component(self.R, 0)

    @property
    def R_o(self) -> Array:
        return self._component(self.R, 1)

    @property
    def C_d0(self) -> Array:
        """C_d(t, 0) on `t` (symmetric DMFT)."""
        return self._component(jnp.moveaxis(self.C_t0, -1, 0), 0)

    @property
    def C_o_eq(self) -> Array:
        """C_o(t, t) on `t` (symmetric DMFT)."""
        return self._component(jnp.moveaxis(self.C_tt, -1, 0), 1)

    @property
    def bad_rows(self) -> Array:
        """Boolean (T,): rows of the one-time series that break the divergence rule of
        `dmft_jax._results` (non-finite values, |C| > 1, e_tr grown 1000-fold)."""
        a = jnp.reshape(self.a, (self.a.shape[0], -1))
        parts = [jnp.reshape(self.C_t0, (a.shape[0], -1)), jnp.reshape(self.C_tt, (a.shape[0], -1))]
        if self.t_stored.shape == self.t.shape:          # fixed grid: every row of C is stored
            size = self.t.shape[0]
            lower = jnp.tril(jnp.ones((size, size), bool))  # C(t_n, t_l), l <= n: known at t_n
            rows = jnp.where(lower, self.C, 0.0)
            parts.append(jnp.reshape(jnp.moveaxis(rows, -2, 0), (a.shape[0], -1)))
        corr = jnp.concatenate(parts, axis=1)
        padded = ~jnp.isfinite(self.t)
        return diverged_rows(self.e_tr, self.e_ts, a, correlations=corr) & ~padded

    @property
    def diverged(self) -> Array:
        """True if the solve produced a non-finite value or a correlation beyond 1."""
        return jnp.any(self.bad_rows)

    @property
    def divergence_time(self) -> Array:
        """The first time at which `bad_rows` holds (NaN if never)."""
        bad = self.bad_rows
        return jnp.where(jnp.any(bad), self.t[jnp.argmax(bad)], jnp.nan)
