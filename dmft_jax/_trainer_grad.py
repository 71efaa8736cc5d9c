"""Meta-gradients of network-training observables with respect to a0, the learning rate and tau.

Built on the trainer `dmft_jax._train.train` (projected SGD / GD, observables recorded in
gradient-flow time): the observable of each run is differentiated *through the optimizer
steps*, and averaged over seeds with `jax.vmap`. The data, W(0) and the SGD batches are fixed
by each seed's key, so the average is a smooth function of the hyperparameters
(common random numbers) and its derivative is exact, not a stochastic estimate of it.

Observables are functions of a `Trajectory` (`dmft_jax._train`): those of
`dmft_jax._observables` apply unchanged, since a trajectory has the fields `t`, `e_ts`,
`e_tr`, `gamma`, `a`, `v` (e.g. `e_ts(traj, time=T)` interpolates at gradient-flow time T on
the recorded times t = j record_every lr d / n, which move with lr).

Modes: `"forward"` (`jax.jacfwd`, memory independent of the number of steps, one tangent per
hyperparameter) and `"reverse"` (`jax.grad` through the training loop; stores the parameters
and the activations of every step, O(steps (m d + n m)) per seed).
Only a0, lr and tau are differentiable: alpha fixes the integer number of samples.

Note (sphere projection): the exact-for-any-norm population risk of `dmft_jax._network`
(`rescaled_hermite`, used when sigma is a polynomial) has a NaN derivative at ||w_i|| = 1
(`jnp.power(0., 0)` in its rescaling table). On the sphere the unit-norm formula
(1/m) sum a_i phihat(U^T w_i), (1/m^2) sum a_i a_j h(<w_i, w_j>) is exact, so for
`projection="sphere"` the derivatives (and their values) use it (`differentiable_problem`).
With the ball projection rows that land exactly on the unit sphere still give NaN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike

from ._network import Problem
from ._train import Protocol, n_samples, train

#: Hyperparameters the trainer can be differentiated in.
TRAINER_WRT = ("a0", "lr", "tau")


def parse_trainer_wrt(wrt: str | Sequence[str]) -> tuple[str, ...]:
    """Validate `wrt` ("a0,lr" or a sequence of names in `TRAINER_WRT`)."""
    names = tuple(x.strip() for x in (wrt.split(",") if isinstance(wrt, str) else wrt)
                  if x.strip())
    if not names:
        raise ValueError("wrt is empty: name at least one of a0, lr, tau")
    for name in names:
        if name not in TRAINER_WRT:
            hint = " (alpha sets the integer sample size n)" if name == "alpha" else ""
            raise ValueError(f"unknown trainer parameter {name!r}{hint}; known: a0, lr, tau")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated parameter in {list(names)}")
    return names


def differentiable_problem(prob: Problem, protocol: Protocol) -> Problem:
    """`prob` with the unit-norm population risk when the rows stay on the sphere (exact there,
    and differentiable; see the module note)."""
    if protocol.projection != "sphere":
        return prob
    return dataclasses.replace(prob, sigma_hermite=None, phi_hermite=None)


def seed_average(observable: Callable, keys, prob: Problem, protocol: Protocol,
                 hyper: dict) -> jax.Array:
    """Mean over the seeds `keys` (leading axis) of observable(train(key, ...)).

    `hyper` holds a0, lr, tau, alpha (scalars); `protocol.n_max` must be set.
    """
    prob = differentiable_problem(prob, protocol)

    def one(key):
        return observable(train(key, prob, protocol, **hyper))
    return jnp.mean(jax.vmap(one)(keys), axis=0)


@eqx.filter_jit
def _value_and_grad(observable, keys, prob, protocol, hyper, wrt, mode):
    def f(sub):
        return seed_average(observable, keys, prob, protocol, dict(hyper, **sub))

    sub = {name: hyper[name] for name in wrt}
    if mode == "reverse":
        return jax.value_and_grad(f)(sub)

    def with_value(s):
        y = f(s)
        return y, y

    grads, value = jax.jacfwd(with_value, has_aux=True)(sub)
    return value, grads


def _prepared(protocol: Protocol, alpha) -> Protocol:
    if protocol.n_max is not None:
        return protocol
    return dataclasses.replace(protocol, n_max=n_samples(alpha, protocol.m, protocol.d))


def trainer_value_and_grad(observable: Callable, keys, prob: Problem, protocol: Protocol, *,
                           a0: ArrayLike, lr: ArrayLike, tau: ArrayLike, alpha: ArrayLike,
                           wrt="a0,lr", mode: str = "forward"):
    """Seed-averaged observable of trained networks and its exact derivatives.

    **Arguments:**

    - `observable`: Trajectory -> scalar (e.g. `Partial(e_ts, time=T)`, `min_e_ts`).
    - `keys`: PRNG keys, one per seed (leading axis; e.g. `jr.split(key, 8)`).
    - `prob`, `protocol`: as for `train` (`protocol.n_max` defaults to n = alpha m d).
    - `a0`, `lr`, `tau`, `alpha`: hyperparameters of `train`.
    - `wrt`: names among a0, lr, tau ("a0,lr" or a sequence).
    - `mode`: "forward" (default; memory independent of the number of steps) or "reverse".

    **Returns:** `(value, grads)`: the mean over seeds and {name: d value / d name}.
    """
    names = parse_trainer_wrt(wrt)
    if mode not in ("forward", "reverse"):
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    dtype = jnp.result_type(float)
    hyper = {k: jnp.asarray(v, dtype) for k, v in dict(a0=a0, lr=lr, tau=tau, alpha=alpha).items()}
    return _value_and_grad(observable, keys, prob, _prepared(protocol, alpha), hyper, names, mode)


def trainer_value(observable: Callable, keys, prob: Problem, protocol: Protocol, *,
                  a0: ArrayLike, lr: ArrayLike, tau: ArrayLike, alpha: ArrayLike):
    """The seed-averaged observable alone (compiled; e.g. for finite differences or a grid)."""
    dtype = jnp.result_type(float)
    hyper = {k: jnp.asarray(v, dtype) for k, v in dict(a0=a0, lr=lr, tau=tau, alpha=alpha).items()}
    return _value(observable, keys, prob, _prepared(protocol, alpha), hyper)


@eqx.filter_jit
def _value(observable, keys, prob, protocol, hyper):
    return seed_average(observable, keys, prob, protocol, hyper)
