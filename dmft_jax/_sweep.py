"""Sweeps: networks (seeds x a0 x lr x tau x alpha) and their DMFT in one compiled graph.

`sweep` trains every (seed, grid point) with `dmft_jax._train.train` under one `jax.vmap` and
solves the symmetric DMFT (spec section 5) of every grid point under another, inside a single
`jax.jit`. The experiment's gradient-flow step dt = lr d / n (spec section 1) is the DMFT's time
step, and both run the same number of steps, so the two are compared at identical times.

Which DMFT: networks trained by full-batch GD (`batch=0`) are described by the exact
discrete-time DMFT of projected GD (`DiscreteGD`, docs/discrete_gd.md) on their iterates
t_k = k lr d / n, so that the learning-rate axis means in theory what it means in experiment
(including where GD becomes unstable or diverges); SGD (`batch > 0`) keeps the gradient-flow
DMFT, integrated by Euler on the same grid. `SweepResult.params["dmft_dynamics"]` says which
("gd" or "flow"). Both the runs and the theory record the step at which they diverge and the
first step at which their train error rises (the edge of stability, `dmft_jax._stability`).
Both batch axes are sharded across all devices (`jax.sharding`); results do not depend on the
number of devices. The result is a `SweepResult` of labeled NumPy arrays, saved to and loaded
from `.npz`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from ._covariance import AbstractKernel, Target, covariance
from ._discrete import DiscreteGD
from ._dmft import symmetric_dmft
from ._grid import TimeGrid
from ._integrate import integrate
from ._network import Problem
from ._results import RESULTS
from ._stability import divergence_step, edge_of_stability_step
from ._train import OBSERVABLES, Protocol, n_samples, train

#: Parameter axes of a sweep, in array order (`seed` only on experiment arrays).
AXES = ("seed", "a0", "lr", "tau", "alpha")
GRID_AXES = AXES[1:]


@dataclasses.dataclass
class SweepResult:
    """Labeled results of `sweep` (NumPy arrays).

    **Fields:**

    - `axes`: {name: values} for `AXES` (seed indices, a0, lr, tau, alpha).
    - `t` (a0, lr, tau, alpha, T): gradient-flow times of each grid point (dt = lr d / n).
    - `experiment`: {observable: (seed, a0, lr, tau, alpha, T)} for `OBSERVABLES`, plus
      `diverged`, `divergence_time`, `divergence_step` and `rise_step` (the edge of stability;
      full-batch GD only) of shape (seed, a0, lr, tau, alpha); steps are -1 where nothing
      happened.
    - `dmft`: {observable: (a0, lr, tau, alpha, T)}, `diverged`, `divergence_step` and
      `rise_step` (a0, lr, tau, alpha), or None.
    - `params`: the static settings (m, d, batch, steps, record_every, projection,
      `dmft_dynamics` "gd" or "flow", ...).
    """

    axes: dict
    t: np.ndarray
    experiment: dict
    dmft: dict | None
    params: dict

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(len(self.axes[name]) for name in GRID_AXES)

    def index(self, **coords) -> tuple[int, ...]:
        """The grid index (a0, lr, tau, alpha) of the given coordinates (default: the first value
        of each axis); values are matched to within 1e-12 relative."""
        out = []
        for name in GRID_AXES:
            values = np.asarray(self.axes[name])
            if name not in coords:
                out.append(0)
                continue
            hit = np.flatnonzero(np.isclose(values, coords[name], rtol=1e-12, atol=0))
            if hit.size == 0:
                raise KeyError(f"{name} = {coords[name]} is not on the sweep's axis "
                               f"{values.tolist()}")
            out.append(int(hit[0]))
        return tuple(out)

    def point(self, **coords) -> dict:
        """Arrays of one grid point: `t` (T,), experiment observables (seed, T) and `diverged`
        (seed,), and `dmft_<observable>` (T,) when the DMFT was solved."""
        idx = self.index(**coords)
        out = {"t": self.t[idx]}
        out.update({name: arr[(slice(None), *idx)] for name, arr in self.experiment.items()})
        if self.dmft is not None:
            out.update({f"dmft_{name}": arr[idx] for name, arr in self.dmft.items()})
        return out

    def stats(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, standard error, count) of an experiment observable over the seeds that did not
        diverge; shapes (a0, lr, tau, alpha, T)."""
        x = np.asarray(self.experiment[name], dtype=float)
        ok = ~np.asarray(self.experiment["diverged"])[..., None] & np.isfinite(x)
        count = ok.sum(axis=0)
        mean = np.where(ok, x, 0.0).sum(axis=0) / np.maximum(count, 1)
        var = np.where(ok, (x - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count - 1, 1)
        mean = np.where(count > 0, mean, np.nan)
        return mean, np.sqrt(var / np.maximum(count, 1)), count

    def save(self, path) -> None:
        """Write an `.npz` (arrays `t`, `axis_<name>`, `exp_<name>`, `dmft_<name>`, JSON
        `params` and `axes`); `SweepResult.load` reads it back."""
        arrays = {"t": self.t, "kind": np.asarray("sweep"),
                  "axes": np.asarray(json.dumps(list(AXES))),
                  "params": np.asarray(json.dumps(self.params))}
        if self.dmft is not None:
            arrays["dmft_dynamics"] = np.asarray(self.params.get("dmft_dynamics", "flow"))
        arrays.update({f"axis_{k}": np.asarray(v) for k, v in self.axes.items()})
        arrays.update({f"exp_{k}": v for k, v in self.experiment.items()})
        if self.dmft is not None:
            arrays.update({f"dmft_{k}": v for k, v in self.dmft.items()})
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> "SweepResult":
        with np.load(path) as data:
            if "kind" not in data or str(data["kind"]) != "sweep":
                raise ValueError(f"{path} is not a saved sweep (no kind = 'sweep')")
            names = json.loads(str(data["axes"]))
            axes = {k: data[f"axis_{k}"] for k in names}
            exp = {k[4:]: data[k] for k in data.files if k.startswith("exp_")}
            dmft = {k[5:]: data[k] for k in data.files
                    if k.startswith("dmft_") and k != "dmft_dynamics"} or None
            return cls(axes=axes, t=data["t"], experiment=exp, dmft=dmft,
                       params=json.loads(str(data["params"])))


# ------------------------------------------------------------------------------------- DMFT
#: The DMFT of each kind of training: the exact discrete-time DMFT for full-batch GD, the
#: gradient flow for SGD.
DYNAMICS = ("gd", "flow")


def theory_for(batch: int, dynamics: str | None = None) -> str:
    """The DMFT that describes a run with this `batch` ("gd" for full-batch GD, "flow" for SGD),
    or the requested `dynamics` after checking that it applies (ValueError)."""
    if dynamics is None:
        return "gd" if not batch else "flow"
    if dynamics not in DYNAMICS:
        raise ValueError(f"dmft_dynamics must be one of {DYNAMICS}, got {dynamics!r}")
    if dynamics == "gd" and batch:
        raise ValueError(f"the discrete-time DMFT describes full-batch GD (batch 0), not SGD "
                         f"with batch {batch}: use the flow DMFT")
    return dynamics


def dmft_observables(h: AbstractKernel, tgt: Target, *, m: int, d: int, steps: int,
                     record_every: int, a0, lr, tau, alpha, freeze_a: bool = False,
                     dynamics: str = "flow") -> dict:
    """The symmetric DMFT matching one experiment, at the experiment's recorded times.

    Step dt = lr d / n and alpha = n / (m d) with n = round(alpha m d) exactly as the run's;
    `dynamics` "flow": the gradient-flow DMFT (Euler at step dt), "gd": the exact DMFT of
    projected GD with that step (`DiscreteGD`, one row per GD step). Returns {observable: (T,)}
    for `OBSERVABLES` (a = a(t), gamma = a / sqrt(m), a_l1 = |a|, v = v_1(t), C_d0 = C_d(t, 0),
    C_o = C_o(t, t), e_tr, e_ts [C.45, C.46]), `diverged`, and the steps `divergence_step`
    and `rise_step` (first rise of e_tr, the edge of stability of GD), -1 if none.
    Traceable (vmap over the physics: the outcome is read from `sol.result`, never raised).
    """
    dtype = jnp.result_type(float)
    n = jnp.maximum(jnp.round(jnp.asarray(alpha, dtype) * m * d), 1)
    model = symmetric_dmft(h, tgt, tau=tau, alpha=n / (m * d), m=m, a0=a0, freeze_a=freeze_a)
    if dynamics == "gd":
        model = DiscreteGD(model)
    elif dynamics != "flow":
        raise ValueError(f"dynamics must be 'flow' or 'gd', got {dynamics!r}")
    sol = integrate(model, TimeGrid(lr * d / n, steps), throw=False)
    bad = divergence_step(sol)
    # the rise is read on the rows before divergence (later rows are not iterates any more)
    rows_ok = (bad < 0) | (jnp.arange(steps + 1) <= bad)
    e_ok = jnp.where(rows_ok, sol.e_tr, -jnp.inf)
    rows = np.arange(0, steps + 1, record_every)
    a = sol.a[rows]
    out = dict(a=a, gamma=a / math.sqrt(m), a_l1=jnp.abs(a), v=sol.v[rows, 0],
               C_d0=sol.C_d0[rows], C_o=sol.C_o_eq[rows], e_tr=sol.e_tr[rows],
               e_ts=sol.e_ts[rows])
    out["diverged"] = sol.result != RESULTS.successful
    out["divergence_step"] = jnp.where(out["diverged"], jnp.maximum(bad, 0), -1).astype(jnp.int32)
    out["rise_step"] = edge_of_stability_step(e_ok).astype(jnp.int32)
    return out


# ------------------------------------------------------------------------------------ sweep
def _pad(x: jax.Array, size: int) -> jax.Array:
    """x with its leading axis padded to `size` by repeating the last entry."""
    extra = size - x.shape[0]
    return x if extra == 0 else jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)])


def _shard(tree, devices):
    """Pad the leading axis to a multiple of the device count and shard it over the devices.

    The mesh axis is `Auto`: with the default explicit axis types, jit(vmap(solver)) fails with
    ShardingTypeError when zero-initialized buffers receive sharded rows (engineering notes).
    """
    count = len(devices)
    size = jax.tree_util.tree_leaves(tree)[0].shape[0]
    padded = -(-size // count) * count
    mesh = jax.make_mesh((count,), ("batch",), axis_types=(AxisType.Auto,), devices=devices)
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    return jax.tree_util.tree_map(lambda x: jax.device_put(_pad(x, padded), sharding), tree)


def _grid(a0, lr, tau, alpha) -> dict[str, np.ndarray]:
    axes = {}
    for name, values in zip(GRID_AXES, (a0, lr, tau, alpha)):
        values = np.atleast_1d(np.asarray(values, dtype=float))
        if values.ndim != 1 or values.size < 1 or not np.all(np.isfinite(values)):
            raise ValueError(f"sweep axis {name} needs finite values, got {values.tolist()}")
        axes[name] = values
    return axes


def sweep(prob: Problem, *, m: int, d: int, steps: int, record_every: int = 1,
          seeds: int | Sequence[int] = 10, seed: int = 0, a0=(1.0,), lr=(0.1,), tau=(0.3,),
          alpha=(0.3,), batch: int = 0, projection: str = "sphere", freeze_a: bool = False,
          dmft: bool = True, dmft_h=None, dmft_target: Target | None = None,
          dmft_dynamics: str | None = None, dtype=None, devices=None) -> SweepResult:
    """Train networks over seeds x a0 x lr x tau x alpha and solve the matching DMFTs, compiled
    together.

    **Arguments:**

    - `prob`: activation and target (`problem`).
    - `m`, `d`, `steps`, `record_every`, `batch` (0 = full-batch GD), `projection`,
      `freeze_a`, `dtype`: as in `Protocol` (shared by all runs; `steps` is rounded up to a
      multiple of `record_every`).
    - `seeds`: a count S (run seeds 0..S-1) or explicit seed indices; run `s` uses the key
      `fold_in(PRNGKey(seed), s)` for data, W(0) and batches at every grid point.
    - `a0`, `lr`, `tau`, `alpha`: axis values (scalars or 1-d sequences).
    - `dmft`: also solve the symmetric DMFT of each grid point (dt = lr d / n, same steps);
      `dmft_h`, `dmft_target`: its covariance and target (default `prob.h`, `prob.target`; e.g.
      a Hermite truncation for ReLU, whose h''(1) is infinite).
    - `dmft_dynamics`: "gd" (the exact discrete-time DMFT of projected GD; the default for
      `batch=0`) or "flow" (gradient flow; the default, and the only choice, for SGD).
    - `devices`: devices to shard the batch axes over (default all).
    """
    axes = _grid(a0, lr, tau, alpha)
    dynamics = theory_for(batch, dmft_dynamics) if dmft else None
    seed_ids = np.arange(seeds) if np.ndim(seeds) == 0 else np.asarray(seeds, dtype=int)
    if seed_ids.size < 1:
        raise ValueError("a sweep needs at least one seed")
    axes = {"seed": seed_ids, **axes}
    if np.any(axes["lr"] <= 0) or np.any(axes["alpha"] <= 0) or np.any(axes["tau"] < 0):
        raise ValueError("sweep needs lr > 0, alpha > 0 and tau >= 0")
    sizes = [n_samples(al, m, d) for al in axes["alpha"]]
    if batch > min(sizes):
        raise ValueError(f"batch {batch} exceeds the smallest training set n = {min(sizes)}")
    steps = -(-int(steps) // record_every) * record_every
    protocol = Protocol(m=m, d=d, steps=steps, record_every=record_every, batch=batch,
                        projection=projection, freeze_a=freeze_a, n_max=max(sizes), dtype=dtype)
    devices = list(jax.devices() if devices is None else devices)
    grid = np.array(list(itertools.product(*(axes[k] for k in GRID_AXES))))  # (G, 4)
    G, S = grid.shape[0], seed_ids.size
    ftype = jnp.result_type(float)

    keys = jax.vmap(lambda s: jr.fold_in(jr.PRNGKey(seed), s))(jnp.asarray(seed_ids))
    exp_in = (jnp.repeat(keys, G, axis=0), jnp.tile(jnp.asarray(grid, ftype), (S, 1)))
    theory = None
    if dmft:
        h = covariance(prob.h if dmft_h is None else dmft_h)
        tgt = prob.target if dmft_target is None else dmft_target
        theory = (h, tgt)
        symmetric_dmft(h, tgt, tau=float(axes["tau"][0]), alpha=float(axes["alpha"][0]), m=m,
                       a0=float(axes["a0"][0]))  # validates h (finite h''(1)) and the target

    def run_one(key, g):
        return train(key, prob, protocol, a0=g[0], lr=g[1], tau=g[2], alpha=g[3])

    def theory_one(g):
        return dmft_observables(*theory, m=m, d=d, steps=steps, record_every=record_every,
                                a0=g[0], lr=g[1], tau=g[2], alpha=g[3], freeze_a=freeze_a,
                                dynamics=dynamics)

    @jax.jit
    def compiled(exp_in, dmft_in):
        runs = jax.vmap(run_one)(*exp_in)
        return runs, (jax.vmap(theory_one)(dmft_in) if dmft else None)

    runs, sols = compiled(_shard(exp_in, devices), _shard(jnp.asarray(grid, ftype), devices))
    return _result(axes, runs, sols, protocol, S, G, dict(seed=seed, devices=len(devices),
                                                          dmft_dynamics=dynamics))


def _result(axes, runs, sols, protocol, S, G, extra) -> SweepResult:
    shape = tuple(len(axes[k]) for k in GRID_AXES)
    T = protocol.records

    def exp(x):
        return np.asarray(x)[: S * G].reshape(S, *shape, *np.shape(x)[1:])

    experiment = {name: exp(getattr(runs, name)) for name in OBSERVABLES}
    experiment.update(diverged=exp(runs.diverged), divergence_time=exp(runs.divergence_time),
                      divergence_step=exp(runs.divergence_step), rise_step=exp(runs.rise_step))
    t = exp(runs.t)[0]
    dmft = None
    if sols is not None:
        dmft = {k: np.asarray(v)[:G].reshape(*shape, *np.shape(v)[1:]) for k, v in sols.items()}
    params = dict(m=protocol.m, d=protocol.d, steps=protocol.steps, records=T,
                  record_every=protocol.record_every, batch=protocol.batch,
                  projection=protocol.projection, freeze_a=protocol.freeze_a,
                  n=[n_samples(al, protocol.m, protocol.d) for al in axes["alpha"]],
                  dtype=protocol.dtype, **extra)
    return SweepResult(axes=axes, t=t, experiment=experiment, dmft=dmft, params=params)
