"""Differentiable observables of a DMFT `Solution` (spec sections 4-5).

Each observable is a pure function of a `Solution` (plus keyword options) returning an array,
so `jax.grad` / `jax.jvp` through a solve reach it (see `dmft_jax._adjoint`). To fix options
without retracing use `jax.tree_util.Partial(e_ts, time=T)`: a `time` given as an array is then
a traced leaf, a Python float a static one.

Times between recorded times are read by linear interpolation on `sol.t` (any increasing
times: a uniform grid, or the accepted steps of an adaptive solve, whose +inf padding is
skipped); `time=None` means the last time. A time outside the recorded range is clamped to it
(the derivative in `time` is then zero). Under a change of the step dt at fixed N the grid
moves, and so does the interpolation weight: derivatives in dt include that (at fixed T).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._solution import Solution


def at_time(sol: Solution, x: Array, time=None) -> Array:
    """x (N+1, ...) on the grid of `sol` read at `time` by linear interpolation (None: t_N).

    `time` may be an array of times (result shape time.shape + x.shape[1:]).
    """
    if time is None:
        return x[-1]
    t = sol.t
    last = jnp.sum(jnp.isfinite(t)) - 1                     # adaptive solves pad t with +inf
    safe_t = jnp.where(jnp.isfinite(t), t, t[0])
    time = jnp.clip(jnp.asarray(time, safe_t.dtype), safe_t[0], safe_t[last])
    i = jnp.searchsorted(jax.lax.stop_gradient(safe_t[:-1]), jax.lax.stop_gradient(time),
                         side="right") - 1
    i = jnp.clip(i, 0, jnp.maximum(last - 1, 0))
    gap = safe_t[i + 1] - safe_t[i]
    w = jnp.where(gap > 0, (time - safe_t[i]) / jnp.where(gap > 0, gap, 1.0), 0.0)
    w = w.reshape(w.shape + (1,) * (x.ndim - 1))           # times may be an array
    return (1.0 - w) * x[i] + w * x[i + 1]


def e_tr(sol: Solution, time=None) -> Array:
    """Train error e_tr(T) = -C_A(T, T) / 2 [C.24]."""
    return at_time(sol, sol.e_tr, time)


def e_ts(sol: Solution, time=None) -> Array:
    """Test error e_ts(T) [C.25, C.46]."""
    return at_time(sol, sol.e_ts, time)


def gap(sol: Solution, time=None) -> Array:
    """Generalization gap e_ts(T) - e_tr(T)."""
    return at_time(sol, sol.e_ts - sol.e_tr, time)


def gamma(sol: Solution, time=None) -> Array:
    """Complexity proxy gamma(T) = a(T)/sqrt(m) (symmetric) or ||a(T)||_1/(m sqrt(m))."""
    return at_time(sol, sol.gamma, time)


def a(sol: Solution, time=None) -> Array:
    """Second-layer weights a(T), shape (*vec) (() symmetric, (m,) general)."""
    return at_time(sol, sol.a, time)


def v(sol: Solution, time=None) -> Array:
    """Overlaps v(T) = U^T w(T) with the target directions, shape (*vec, k)."""
    return at_time(sol, sol.v, time)


def min_e_ts(sol: Solution, temperature=None) -> Array:
    """The minimum over the grid of the test error (early-stopping error).

    `temperature=None`: the exact min_n e_ts(t_n); its gradient is the gradient of
    e_ts(t_n*) at the argmin n* (split evenly over exact ties). A temperature T > 0 gives the
    soft-min  -T log( (1/(N+1)) sum_n exp(-e_ts(t_n)/T) ), which lies between the minimum and
    the mean, tends to the minimum as T -> 0 (error <= T log(N+1)) and is smooth in all inputs.
    """
    e = sol.e_ts
    if temperature is None:
        return jnp.min(e)
    return -temperature * (jax.nn.logsumexp(-e / temperature) - jnp.log(e.shape[0]))


def argmin_time(sol: Solution, temperature=None) -> Array:
    """The time of the minimum of the test error (optimal stopping time).

    `temperature=None`: t_n* at the exact argmin (piecewise constant in the parameters, so its
    derivative is only the grid's dependence on dt). A temperature T > 0 gives the
    softmax-weighted time sum_n t_n softmax(-e_ts/T)_n, differentiable in every parameter; use
    a T well below the depth of the minimum so that the weights sit near it.
    """
    e = sol.e_ts
    if temperature is None:
        return sol.t[jnp.argmin(e)]
    return jnp.sum(sol.t * jax.nn.softmax(-e / temperature))


#: Observables by name (the `--observable` choices of `dmft-jax grad`).
OBSERVABLES = {
    "e_ts": e_ts,
    "e_tr": e_tr,
    "gap": gap,
    "gamma": gamma,
    "a": a,
    "v": v,
    "min_e_ts": min_e_ts,
    "argmin_time": argmin_time,
}
