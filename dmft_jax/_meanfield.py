"""Mean-field ODEs of the first mean-field regime (spec section 7, "mf1" with a target).

Under the mean-field initialization (a0 = O(1)) the DMFT at times t = O(1) reduces, as
m -> infinity, to ordinary differential equations for the second-layer weight and the overlap
with the target subspace: [G.44] for the symmetric initialization, [3.4] neuron by neuron for
any initialization. They are `AbstractModel`s with one-time state only (a, v) and run through
the same `integrate` / `solve` loop as the DMFT (forward Euler, spec section 6).

Physical parameters are traced arrays (vmap over alpha, tau, a0 without recompiling); the
number of neurons of `MeanFieldNeurons` and k are static through the array shapes.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._checks import check_scalar, target_or_noise
from ._covariance import AbstractKernel, Target, covariance
from ._integrate import AbstractModel
from ._results import diverged_rows
from ._stepper import Row


class MeanFieldSolution(eqx.Module):
    """Solution of the mean-field ODEs on the grid t_n = n dt (the DMFT's own time).

    **Fields:** `t` (N+1,); `a` (N+1, *vec) second-layer weights; `v` (N+1, *vec, k) overlaps
    U^T w; `e_tr`, `e_ts` (N+1,) train and test errors (equal in this regime [G.46]). *vec is
    () for `MeanField` and (m,) for `MeanFieldNeurons`.
    """

    t: Array
    a: Array
    v: Array
    e_tr: Array
    e_ts: Array
    result: Any = None
    stats: Any = None

    @property
    def bad_rows(self) -> Array:
        rows = diverged_rows(self.e_tr, self.a, self.v, correlations=self.v)
        return rows & jnp.isfinite(self.t)

    @property
    def diverged(self) -> Array:
        return jnp.any(self.bad_rows)


class _MeanFieldBase(AbstractModel):
    """Shared plumbing of the mean-field ODEs: one-time state only (a, v), no memory."""

    def time_axes(self):
        return dict(a=1, v=1)

    def advancing(self):
        return frozenset({"a", "v"})

    def write(self, n, s, front):
        return dict(s, a=s["a"].at[..., n].set(front["a"]), v=s["v"].at[..., n].set(front["v"]))

    def records(self, n, s) -> dict:
        return dict(a=s["a"][..., n], v=s["v"][..., n])

    def valid(self):
        return (self.alpha > 0) & (self.tau >= 0) & jnp.isfinite(self.alpha)

    def divergence(self, n, s):
        v = s["v"][..., n]
        return ~(jnp.all(jnp.isfinite(s["a"][..., n])) & jnp.all(jnp.abs(v) <= 1 + 1e-6))

    def solution(self, s, ts, records=None) -> MeanFieldSolution:
        if records is None:
            records = dict(t=ts, a=jnp.moveaxis(s["a"], -1, 0), v=jnp.moveaxis(s["v"], -1, 0))
        err = self.errors(records["a"], records["v"])
        return MeanFieldSolution(t=records["t"], a=records["a"], v=records["v"], e_tr=err,
                                 e_ts=err)

    def _row(self, s, front, rate):
        after = jax.tree_util.tree_map(jnp.zeros_like, front)
        return s, Row(front, rate, after, None)


def _project_out(v: Array, x: Array) -> Array:
    """(I - v v^T) x over the last axis."""
    return x - v * jnp.sum(v * x, axis=-1, keepdims=True)


class MeanField(_MeanFieldBase):
    """The mean-field ODEs of the symmetric initialization [2.10, G.44, G.46] (spec section 7).

    Time: the DMFT time t = O(1) (no rescaling); v(0) = v0 (0 for the symmetric init), a(0) = a0:

        dv/dt = alpha a (I - v v^T) (grad phihat(v) - a h'(|v|^2) v)
        da/dt = alpha (phihat(v) - a h(|v|^2))          (0 with `freeze_a`)
        e_tr = e_ts = (1/2)[tau^2 + ||phi||^2 - 2 a phihat(v) + a^2 h(|v|^2)]

    Finite-m predictions (a0 = O(1), symmetric DMFT of spec section 5): a(t), v(t), e_tr(t),
    e_ts(t) at the same t, with O(1/m) corrections. With k = 1, phihat = h and h'(0) > 0,
    (a, v) -> (1, 1) and both errors -> tau^2 / 2. v(0) = 0 is a fixed point when
    grad phihat(0) = 0 (information exponent 1 is assumed).

    **Fields:** `h`, `target`, `tau`, `alpha` = n / (m d), `a0`, `v0` (k,), `freeze_a` (static).
    Construct with `mean_field_model`.
    """

    h: AbstractKernel
    target: Target
    tau: Array
    alpha: Array
    a0: Array
    v0: Array
    freeze_a: bool = eqx.field(static=True, default=False)

    def init(self, size: int):
        dtype = jnp.result_type(float, self.tau, self.alpha, self.a0)
        return dict(a=jnp.zeros((size,), dtype).at[0].set(self.a0),
                    v=jnp.zeros((self.target.k, size), dtype).at[:, 0].set(self.v0))

    def row(self, n, s, weights):
        del weights
        a, v = s["a"][n], s["v"][:, n]
        q = jnp.sum(v**2)
        pull = self.target.grad_phihat(v) - a * self.h.d1(q) * v
        d_v = self.alpha * a * _project_out(v, pull)
        d_a = self.alpha * (self.target.phihat(v) - a * self.h(q))
        d_a = jnp.zeros_like(d_a) if self.freeze_a else d_a
        return self._row(s, dict(a=a, v=v), dict(a=d_a, v=d_v))

    def errors(self, a, v):
        """e_tr = e_ts over time: a (T,), v (T, k)."""
        q = jnp.sum(v**2, axis=-1)
        return 0.5 * (self.tau**2 + self.target.norm2 - 2 * a * self.target.phihat(v)
                      + a**2 * self.h(q))


def mean_field_model(h, target: Target | None = None, *, tau, alpha, a0, v0=None,
                     freeze_a: bool = False) -> MeanField:
    """`MeanField` with validated parameters (traced arrays); `v0` defaults to 0 (k,)."""
    target = target_or_noise(target)
    a0 = check_scalar("a0", a0, -jnp.inf, strict=False)
    v0 = jnp.zeros(target.k, a0.dtype) if v0 is None else jnp.asarray(v0, a0.dtype)
    if v0.shape != (target.k,):
        raise ValueError(f"v0 must have shape (k,) = ({target.k},), got {v0.shape}")
    return MeanField(h=covariance(h), target=target, tau=check_scalar("tau", tau, 0.0, False),
                     alpha=check_scalar("alpha", alpha, 0.0, True), a0=a0, v0=v0,
                     freeze_a=freeze_a)


class MeanFieldNeurons(_MeanFieldBase):
    """The mean-field ODEs neuron by neuron, for any initialization [3.4] (spec section 7).

    Time: the DMFT time t (the spec's t_hat = alpha t); for i = 1..m (particles of the
    mean-field distribution, <w_i, w_j> -> <v_i, v_j> as d -> infinity):

        dv_i/dt = alpha a_i (I - v_i v_i^T) (grad phihat(v_i) - (1/m) sum_j a_j h'(<v_i, v_j>) v_j)
        da_i/dt = alpha (phihat(v_i) - (1/m) sum_j a_j h(<v_i, v_j>))
        e_tr = e_ts = (1/2)[tau^2 + ||phi||^2 - (2/m) sum_i a_i phihat(v_i)
                            + (1/m^2) sum_ij a_i a_j h(<v_i, v_j>)]

    This is projected gradient flow of the population risk over (a_i, v_i): the error never
    increases. With identical neurons it is `MeanField`.

    **Fields:** `h`, `target`, `tau`, `alpha`, `a0` (m,), `v0` (m, k), `freeze_a` (static).
    Construct with `mean_field_neurons_model`.
    """

    h: AbstractKernel
    target: Target
    tau: Array
    alpha: Array
    a0: Array
    v0: Array
    freeze_a: bool = eqx.field(static=True, default=False)

    def init(self, size: int):
        dtype = jnp.result_type(float, self.tau, self.alpha, self.a0)
        m, k = self.v0.shape
        return dict(a=jnp.zeros((m, size), dtype).at[:, 0].set(self.a0),
                    v=jnp.zeros((m, k, size), dtype).at[:, :, 0].set(self.v0))

    def row(self, n, s, weights):
        del weights
        a, v = s["a"][:, n], s["v"][:, :, n]
        q = v @ v.T
        pull = self.target.grad_phihat(v) - (self.h.d1(q) * a[None, :]) @ v / a.shape[0]
        d_v = self.alpha * a[:, None] * _project_out(v, pull)
        d_a = self.alpha * (self.target.phihat(v) - self.h(q) @ a / a.shape[0])
        d_a = jnp.zeros_like(d_a) if self.freeze_a else d_a
        return self._row(s, dict(a=a, v=v), dict(a=d_a, v=d_v))

    def errors(self, a, v):
        """e_tr = e_ts over time: a (T, m), v (T, m, k)."""
        q = jnp.einsum("tik,tjk->tij", v, v)
        quad = jnp.einsum("ti,tij,tj->t", a, self.h(q), a) / a.shape[1] ** 2
        fit = jnp.mean(a * self.target.phihat(v), axis=1)
        return 0.5 * (self.tau**2 + self.target.norm2 - 2 * fit + quad)


def mean_field_neurons_model(h, target: Target | None = None, *, tau, alpha, a0, v0,
                             freeze_a: bool = False) -> MeanFieldNeurons:
    """`MeanFieldNeurons` with validated parameters: `a0` (m,), `v0` (m, k) with |v_i| <= 1."""
    target = target_or_noise(target)
    dtype = jnp.result_type(float)
    a0, v0 = jnp.asarray(a0, dtype), jnp.asarray(v0, dtype)
    if a0.ndim != 1 or v0.shape != (a0.shape[0], target.k):
        raise ValueError(f"need a0 of shape (m,) and v0 of shape (m, k = {target.k}), got "
                         f"{a0.shape} and {v0.shape}")
    return MeanFieldNeurons(h=covariance(h), target=target,
                            tau=check_scalar("tau", tau, 0.0, False),
                            alpha=check_scalar("alpha", alpha, 0.0, True), a0=a0, v0=v0,
                            freeze_a=freeze_a)
