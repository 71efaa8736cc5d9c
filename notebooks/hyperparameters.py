# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Hyperparameters by exact gradients of the DMFT
#
# The DMFT solution is a differentiable function of its hyperparameters: the initialization
# scale a0 (or gamma0 = a0 / sqrt(m)), alpha, tau, the Taylor coefficients of h and phihat and
# even the step dt. `dmft_jax._adjoint` gives their exact derivatives for any observable of
# the solution, in forward mode (`jax.jvp` through the loop) or reverse mode (an adjoint loop
# that rebuilds each step's state from the final history: O(N^2) memory, cost independent of
# the number of parameters).
#
# Here we use them for a practical question: **which initialization scale, and when to stop,
# minimize the test error?** Setting: m = 8, alpha = 0.5, tau = 0.3, h = phihat = 0.9q + q^3/6,
# a training budget t <= 20.
#
# Set `SMOKE_TEST=1` for a coarse grid that runs in well under two minutes.

# %%
import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.random as jr  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

try:  # run as a script: the repository is the parent of notebooks/
    _HERE = Path(__file__).resolve().parent
except NameError:  # inside Jupyter: search upwards from the working directory
    _HERE = Path.cwd()
ROOT = next(p for p in [_HERE, *_HERE.parents] if (p / "benchmarks" / "hyperopt.py").exists())
sys.path.insert(0, str(ROOT / "benchmarks"))
import hyperopt  # noqa: E402

from dmft_jax import _adjoint as adj  # noqa: E402
from dmft_jax import _observables as obs  # noqa: E402
from dmft_jax import TimeGrid  # noqa: E402

SMOKE = os.environ.get("SMOKE_TEST", "0") not in ("", "0")
NOTEBOOK = "hyperparameters"

# Figures (and any file this notebook writes) go next to the notebook, or to the folder named
# by the environment variable DMFT_JAX_FIGURES; nothing is written anywhere else.
OUT = Path(os.environ.get("DMFT_JAX_FIGURES") or _HERE)
OUT.mkdir(parents=True, exist_ok=True)


def save(fig, name: str) -> None:
    """Write `fig` as OUT/{notebook}_{name}.png."""
    path = OUT / f"{NOTEBOOK}_{name}.png"
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


cfg = dict(hyperopt.SMOKE if SMOKE else hyperopt.FULL)
grid = TimeGrid(cfg["t_max"] / cfg["steps"], cfg["steps"])
print("steps", cfg["steps"], "dt", float(grid.dt))

# %% [markdown]
# ## One gradient, two ways
#
# The test error at the end of the budget and its derivatives with respect to several
# hyperparameters at once. Forward and reverse mode agree to rounding.

# %%
model = hyperopt.model_at(1.0)
wrt = "a0,tau,alpha,h1,h3,dt"
for mode in ("forward",) if SMOKE else ("forward", "reverse"):   # smoke: one compilation
    value, grads = adj.value_and_grad(obs.e_ts, model, grid, wrt, mode=mode)
    print(mode, f"e_ts(T) = {float(value):.6f}",
          {k: round(float(v), 6) for k, v in grads.items()})

# %% [markdown]
# ## Grid search over a0
#
# For each a0 the best stopping time is the argmin of e_ts over the grid (free, from one
# solve): F(a0) = min_t e_ts(t; a0).

# %%
a0s = np.geomspace(*cfg["a0_range"], cfg["grid_points"])
grid_rows = hyperopt.grid_search(grid, a0s)
for r in grid_rows:
    print(f"a0 = {r['a0']:.4g}: min e_ts = {r['F']:.6f} at T* = {r['T']:.3g}")

# %% [markdown]
# ## Gradient search
#
# dF/da0 is the derivative of e_ts at the minimizing time (envelope theorem), which is the
# gradient of the exact minimum `min_e_ts`. A safeguarded secant method on x = log a0 needs
# one forward-mode value-and-gradient per iterate.

# %%
history = hyperopt.secant_search(grid, cfg["start"])
for k, h in enumerate(history):
    print(f"{k:2d}: a0 = {h['a0']:.5g}, F = {h['F']:.7f}, dF/dlog a0 = {h['dF_dlog_a0']:.2e}, "
          f"T* = {h['T']:.3g}")
best = hyperopt.best_of(history)
best_grid = hyperopt.best_of(grid_rows)
print(f"gradient: a0 = {best['a0']:.4g}, F = {best['F']:.7f}, T* = {best['T']:.3g} "
      f"({len(history)} value+gradient evaluations)")
print(f"grid:     a0 = {best_grid['a0']:.4g}, F = {best_grid['F']:.7f}, T* = {best_grid['T']:.3g} "
      f"({len(grid_rows)} solves)")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
ax1.plot([r["a0"] for r in grid_rows], [r["F"] for r in grid_rows], "o-", color="0.6",
         label="grid search")
ax1.plot([h["a0"] for h in history], [h["F"] for h in history], "x", color="C3",
         label="gradient iterates")
ax1.set(xscale="log", xlabel="a0", ylabel="min_t e_ts")
ax1.legend()
t, e = hyperopt.curve(best["a0"], grid)
ax2.plot(t, e, color="C3")
ax2.axvline(best["T"], ls=":", color="C3")
ax2.set(xlabel="t", ylabel="e_ts(t)", title=f"a0 = {best['a0']:.3g}")
fig.tight_layout()
save(fig, "a0")

# %% [markdown]
# With this budget smaller initializations generalize better but learn later: the optimum is
# the scale at which the minimum of the test error arrives just at the end of the budget.
# The soft-min (`min_e_ts(sol, temperature=...)`) and the softmax-weighted time
# (`argmin_time(sol, temperature=...)`) are smooth alternatives when a derivative of the
# stopping time itself is wanted:

# %%
soft_time = jtu.Partial(obs.argmin_time, temperature=1e-3)
value, grads = adj.value_and_grad(soft_time, hyperopt.model_at(0.3), grid, "a0", mode="forward")
print(f"smoothed T*(a0 = 0.3) = {float(value):.4f}, dT*/da0 = {float(grads['a0']):.4f}")

# %% [markdown]
# ## The same for trained networks
#
# `dmft_jax._trainer_grad` differentiates seed-averaged observables of real training runs
# (projected GD here) with respect to a0 and the learning rate: a meta-gradient through the
# optimizer, with the data and initializations fixed by the seeds.

# %%
from dmft_jax import problem  # noqa: E402
from dmft_jax import Protocol  # noqa: E402
from dmft_jax import trainer_value_and_grad  # noqa: E402

prob = problem(hyperopt.H, "same")
protocol = Protocol(m=8, d=20 if SMOKE else 100, steps=40 if SMOKE else 400, record_every=10)
keys = jr.split(jr.PRNGKey(0), 2 if SMOKE else 8)
value, grads = trainer_value_and_grad(obs.e_ts, keys, prob, protocol, a0=0.5, lr=0.1,
                                      tau=0.3, alpha=0.5, wrt="a0,lr")
print(f"mean e_ts at the last step = {float(value):.4f}; "
      f"d/da0 = {float(grads['a0']):.4f}, d/dlr = {float(grads['lr']):.4f}")
