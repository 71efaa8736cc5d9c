"""Projected SGD / GD training of a two-layer network, observed in gradient-flow time.

One run (`train`) trains the network of `dmft_jax._network` on a fixed training set of
n = alpha m d samples with optax's `sgd` followed by a projection of each row w_i onto the unit
sphere or ball (spec section 1). A step of size lr advances gradient-flow time by
dt = lr d / n, so the recorded observables can be laid over the DMFT without any fitted time
factor. Everything the theory predicts is recorded on a fixed schedule (every
`record_every` steps, and at t = 0):

===========  ==========================================================================
`a`          mean_i a_i
`gamma`      mean_i a_i / sqrt(m)
`a_l1`       ||a||_1 / m
`v`          mean_i <u_1, w_i>  (first index direction; 0 for pure noise targets)
`C_d0`       mean_i <w_i(t), w_i(0)>                         (DMFT: C_d(t, 0))
`C_o`        mean_{i != j} <w_i(t), w_j(t)>                  (DMFT: C_o(t, t))
`e_tr`       (1/2n) sum_mu (y_mu - f(x_mu))^2 on the training set
`e_ts`       the exact population risk of spec section 2 (`population_risk`)
===========  ==========================================================================

Sizes and the schedule are static (`Protocol`); the physics (a0, lr, tau, alpha) is traced, so
`jax.vmap` over seeds and hyperparameters compiles once (`dmft_jax._sweep`).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, ArrayLike

from ._network import (
    PROJECTIONS,
    Dataset,
    Problem,
    TwoLayerNetwork,
    dataset_draws,
    dataset_from_normals,
    network_from_normals,
    population_risk,
    project,
)
from ._results import DIVERGENCE_FACTOR
from ._stability import RISE_ATOL, RISE_RTOL

#: The recorded observables, in the order of the module docstring.
OBSERVABLES = ("a", "gamma", "a_l1", "v", "C_d0", "C_o", "e_tr", "e_ts")

# A run has diverged when a loss is non-finite or exceeds DIVERGENCE_FACTOR times (1 + e_tr(0)):
# the one rule of `dmft_jax._results`, shared with the DMFT and the Gaussian-model simulator.


def n_samples(alpha, m: int, d: int) -> int:
    """n = round(alpha m d), the training-set size (spec section 1), at least 1."""
    return max(1, int(round(float(alpha) * m * d)))


class Protocol(eqx.Module):
    """How a network is trained and observed (all static: one compilation per protocol).

    **Fields:** `m` width; `d` input dimension; `steps` optimizer steps (a multiple of
    `record_every`); `record_every` steps between records; `batch` SGD batch size b (0: full
    batch GD); `projection` "sphere" or "ball"; `freeze_a` keep a(t) = a0; `n_max` rows of the
    training set (None: n = alpha m d of the run, which must then be concrete). Runs of a sweep
    over alpha share `n_max` = the largest n and train on their first n rows. `dtype`: e.g.
    "float32" for the network and data (None: the ambient float, float64 under x64).
    """

    m: int = eqx.field(static=True)
    d: int = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    record_every: int = eqx.field(static=True, default=1)
    batch: int = eqx.field(static=True, default=0)
    projection: str = eqx.field(static=True, default="sphere")
    freeze_a: bool = eqx.field(static=True, default=False)
    n_max: int | None = eqx.field(static=True, default=None)
    dtype: str | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        for name in ("m", "d", "steps", "record_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps % self.record_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of record_every "
                             f"({self.record_every})")
        if self.batch < 0:
            raise ValueError(f"batch must be >= 0 (0 = full batch), got {self.batch}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.n_max is not None and self.batch > self.n_max:
            raise ValueError(f"batch {self.batch} exceeds the training set size {self.n_max}")

    @property
    def records(self) -> int:
        """Number of recorded times T = steps / record_every + 1."""
        return self.steps // self.record_every + 1


class Trajectory(eqx.Module):
    """Observables of one run at the recorded times (see the module docstring).

    **Fields:** `t` (T,) gradient-flow times; one (T,) array per name in `OBSERVABLES`;
    `diverged` (bool) a non-finite or huge loss occurred; `divergence_time` its first time
    (NaN if none) and `divergence_step` its step (-1 if none); `rise_step` the first step at
    which the full-batch train loss rises (the edge of stability, `dmft_jax._stability`;
    full-batch GD only, -1 if none or under SGD). Steps count optimizer updates: step k is the
    iterate after k updates, at t = k lr d / n. Under `jax.vmap` every field gains the leading
    batch axes.
    """

    t: Array
    a: Array
    gamma: Array
    a_l1: Array
    v: Array
    C_d0: Array
    C_o: Array
    e_tr: Array
    e_ts: Array
    diverged: Array
    divergence_time: Array
    divergence_step: Array
    rise_step: Array

    def observables(self) -> dict[str, Array]:
        """{name: array} for the names in `OBSERVABLES`."""
        return {name: getattr(self, name) for name in OBSERVABLES}


def _loss(params, sigma, X, y, weights, count):
    # (1/2 count) sum_mu weights_mu (y_mu - f(x_mu))^2 with f = (1/m) sum_i a_i sigma(<w_i, x>).
    a, W = params
    f = sigma(X @ W.T) @ a / W.shape[0]
    return 0.5 * jnp.sum(weights * (y - f) ** 2) / count


def _observe(prob: Problem, params, W0, data: Dataset, y, tau):
    """The recorded observables of the current parameters (dict of scalars)."""
    a, W = params
    m = W.shape[0]
    G = W @ W.T
    off = (jnp.sum(G) - jnp.trace(G)) / max(m * (m - 1), 1)
    e_ts = population_risk(prob, TwoLayerNetwork(a=a, W=W, sigma=prob.sigma), data.U, tau, gram=G)
    return dict(
        a=jnp.mean(a), gamma=jnp.mean(a) / math.sqrt(m), a_l1=jnp.mean(jnp.abs(a)),
        v=jnp.mean(W @ data.U[:, 0]), C_d0=jnp.mean(jnp.sum(W * W0, axis=1)), C_o=off,
        e_tr=_loss(params, prob.sigma, data.X, y, data.weights(), data.n),
        e_ts=e_ts,
    )


def _batch_indices(key, n_max: int, n, b: int) -> Array:
    """b distinct indices drawn uniformly among the first n of n_max rows."""
    u = jr.uniform(key, (n_max,))
    u = jnp.where(jnp.arange(n_max) < n, u, -1.0)
    return jax.lax.top_k(u, b)[1]


def setup(key, prob: Problem, protocol: Protocol, *, a0: ArrayLike, alpha: ArrayLike):
    """The training set and the initial network of the run with this key (as `train` uses them).

    Returns `(data, net)`: `Dataset` with n_max rows of which n = round(alpha m d) are used, and
    the symmetric initialization (`init_network`) with the protocol's projection. Both come from
    one Gaussian draw with `fold_in(key, 0)` (data first, then W(0)); `fold_in(key, 2)` draws
    the SGD batches.
    """
    p = protocol
    dtype = jnp.dtype(p.dtype) if p.dtype else jnp.result_type(float)
    n_max = p.n_max if p.n_max is not None else n_samples(alpha, p.m, p.d)
    n = jnp.clip(jnp.round(jnp.asarray(alpha, dtype) * p.m * p.d), 1, n_max)  # = n_samples
    size = dataset_draws(n_max, p.d, prob.k)
    z = jr.normal(jr.fold_in(key, 0), (size + p.m * p.d,), dtype)
    data = dataset_from_normals(z[:size], prob, n=n_max, d=p.d, n_used=n)
    net = network_from_normals(z[size:].reshape(p.m, p.d), a0=a0, sigma=prob.sigma,
                               projection=p.projection)
    return data, net


def train(key, prob: Problem, protocol: Protocol, *, a0: ArrayLike, lr: ArrayLike,
          tau: ArrayLike, alpha: ArrayLike) -> Trajectory:
    """Train one network by projected SGD / GD and record its observables.

    **Arguments:**

    - `key`: PRNG key; it fixes the data (U, X, eps), W(0) and the SGD batches.
    - `prob`: activation and target (`problem`).
    - `protocol`: sizes, schedule, batch, projection (static).
    - `a0`, `lr`, `tau`, `alpha`: a_i(0), step size, label noise, n / (m d) (traced).

    Each step: loss (1/2|S|) sum_{mu in S} (y_mu - f(x_mu))^2 on a uniformly random batch S
    of b distinct samples (all n for GD), `optax.sgd(lr)` on (a, W), then `project` (spec
    section 1). Gradient-flow time t = steps * lr * d / n.

    **Returns:** a `Trajectory` with `protocol.records` times.
    """
    p = protocol
    if p.n_max is None:
        p = dataclasses.replace(p, n_max=n_samples(alpha, p.m, p.d))
    dtype = jnp.dtype(p.dtype) if p.dtype else jnp.result_type(float)
    n_max = p.n_max
    a0, lr, tau, alpha = (jnp.asarray(x, dtype) for x in (a0, lr, tau, alpha))
    prob = jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, prob)
    data, net = setup(key, prob, p, a0=a0, alpha=alpha)
    k_sgd = jr.fold_in(key, 2)
    n, d = data.n, p.d
    y = data.labels(tau)
    params, W0 = (net.a, net.W), net.W
    opt = optax.sgd(lr)
    full = (data.X, y, data.weights(), n)
    limit = DIVERGENCE_FACTOR * (1.0 + _loss(params, prob.sigma, *full))

    def step(i, carry):
        params, opt_state, first_bad, prev_loss, first_rise = carry
        if p.batch:
            idx = _batch_indices(jr.fold_in(k_sgd, i), n_max, n, p.batch)
            batch = (data.X[idx], y[idx], jnp.ones(p.batch, dtype), p.batch)
        else:
            batch = full
        loss, grads = jax.value_and_grad(_loss)(params, prob.sigma, *batch)
        if p.freeze_a:
            grads = (jnp.zeros_like(grads[0]), grads[1])
        updates, opt_state = opt.update(grads, opt_state, params)
        a, W = optax.apply_updates(params, updates)
        bad = ~jnp.isfinite(loss) | (loss > limit)
        first_bad = jnp.where((first_bad < 0) & bad, jnp.asarray(i, first_bad.dtype), first_bad)
        if not p.batch:  # the loss of iterate i on all n samples: the edge of stability
            rise = (i > 0) & ~(loss <= prev_loss * (1.0 + RISE_RTOL) + RISE_ATOL)
            first_rise = jnp.where((first_rise < 0) & rise, jnp.asarray(i, first_rise.dtype),
                                   first_rise)
        return (a, project(W, p.projection)), opt_state, first_bad, loss, first_rise

    def steps(carry, j):
        return jax.lax.fori_loop(0, p.record_every, lambda i, c: step(j * p.record_every + i, c),
                                 carry)

    def chunk(carry, j):
        # Record j follows chunk j - 1 of steps (none before record 0); `j` is not batched, so
        # the cond stays a branch under vmap, and the observation is traced only once.
        carry = jax.lax.cond(j > 0, steps, lambda c, j: c, carry, j - 1)
        return carry, _observe(prob, carry[0], W0, data, y, tau)

    minus_one = jnp.asarray(-1, jnp.int32)
    carry = (params, opt.init(params), minus_one, jnp.zeros((), dtype), minus_one)
    (params, _, first_bad, last_loss, first_rise), recs = jax.lax.scan(chunk, carry,
                                                                        jnp.arange(p.records))
    dt = lr * d / n
    t = dt * p.record_every * jnp.arange(p.records, dtype=dtype)
    bad_rec = ~jnp.isfinite(recs["e_tr"]) | (recs["e_tr"] > limit)
    # the loop saw the losses of iterates 0 .. steps - 1; the last record adds iterate `steps`
    rec_step = jnp.where(jnp.any(bad_rec), jnp.argmax(bad_rec) * p.record_every, -1)
    step_bad = jnp.where(first_bad >= 0, first_bad, rec_step).astype(jnp.int32)
    if not p.batch:
        last = recs["e_tr"][-1]
        rise = ~(last <= last_loss * (1.0 + RISE_RTOL) + RISE_ATOL)
        first_rise = jnp.where((first_rise < 0) & rise,
                               jnp.asarray(p.steps, jnp.int32), first_rise)
    t_bad = jnp.where(step_bad >= 0, step_bad * dt, jnp.nan)
    return Trajectory(t=t, diverged=step_bad >= 0, divergence_time=t_bad,
                      divergence_step=step_bad, rise_step=first_rise.astype(jnp.int32), **recs)


def gradient_flow_step(lr: ArrayLike, alpha: ArrayLike, m: int, d: int) -> Array:
    """dt = lr d / n with n = round(alpha m d): gradient-flow time per step (spec section 1)."""
    n = jnp.maximum(jnp.round(jnp.asarray(alpha) * m * d), 1)
    return jnp.asarray(lr) * d / n
