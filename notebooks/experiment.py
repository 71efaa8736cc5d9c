# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Theory and experiment: real two-layer networks next to their DMFT
#
# The DMFT of docs/equations.md sections 4-6 predicts the training dynamics of a width-m network
# f(x) = (1/m) sum_i a_i sigma(<w_i, x>) as n, d -> infinity with n / d fixed. Here we train
# real networks (`dmft_jax._train`) in the setting of the paper's Fig. 4 and lay them over the
# symmetric DMFT at the **same m**, with the time map of docs/equations.md section 1: one step
# of size lr is dt = lr d / n of gradient-flow time. There is no fitted time factor.
#
# Setting (docs/equations.md section 9, Fig. 4): h = phihat = 0.9 q + q^3/6, realized exactly by the
# activation sigma(x) = sqrt(0.9) x + (x^3 - 3x)/6 with target phi = sigma; tau = 0.3,
# alpha = n / (m d) = 0.3, a_i(0) = 1.
#
# Run as a script (`python notebooks/experiment.py`); `SMOKE_TEST=1` uses small sizes (< 2 min
# on a CPU).

# %%
import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dmft_jax import problem  # noqa: E402
from dmft_jax import SweepResult, sweep  # noqa: E402
from dmft_jax import n_samples  # noqa: E402

SMOKE = os.environ.get("SMOKE_TEST", "0") not in ("", "0")
NOTEBOOK = "experiment"

# Figures (and any file this notebook writes) go next to the notebook, or to the folder named
# by the environment variable DMFT_JAX_FIGURES; nothing is written anywhere else.
try:
    _NB_DIR = Path(__file__).resolve().parent
except NameError:  # inside Jupyter: the working directory
    _NB_DIR = Path.cwd()
OUT = Path(os.environ.get("DMFT_JAX_FIGURES") or _NB_DIR)
OUT.mkdir(parents=True, exist_ok=True)


def save(fig, name: str) -> None:
    """Write `fig` as OUT/{notebook}_{name}.png."""
    path = OUT / f"{NOTEBOOK}_{name}.png"
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


M = 8 if SMOKE else 16
D = 50 if SMOKE else 200
SEEDS = 4 if SMOKE else 10
T_MAX = 1.0 if SMOKE else 2.0
prob = problem([0.0, 0.9, 0.0, 1.0 / 6.0])
n = n_samples(0.3, M, D)
dt = 0.1 * D / n
print(f"m = {M}, d = {D}, n = alpha m d = {n}; lr = 0.1 is dt = {dt:.4f} of gradient-flow time")

# %% [markdown]
# ## Fig. 4: full-batch GD and the paper's SGD protocol
#
# `sweep` trains all runs under one `jax.vmap` and solves the DMFT with step dt in the same
# compiled graph. GD projects the rows onto the unit sphere; the paper's SGD runs (batch 100,
# step 0.1, W(0) entries N(0, 1/d)) project onto the unit ball.

# %%
steps = int(round(T_MAX / dt))
every = max(1, int(round(0.125 / dt)))
runs = {}
for name, batch, proj in (("GD", 0, "sphere"), ("SGD", min(100, n // 4) if SMOKE else 100, "ball")):
    runs[name] = sweep(prob, m=M, d=D, steps=steps, record_every=every, seeds=SEEDS, a0=1.0,
                       lr=0.1, tau=0.3, alpha=0.3, batch=batch, projection=proj)
    print(name, "diverged runs:", int(runs[name].experiment["diverged"].sum()))

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), constrained_layout=True)
for k, name in enumerate(("a", "v", "e_tr", "e_ts")):
    ax = axes[k]
    res = runs["GD"]
    t = res.t[0, 0, 0, 0]
    ax.plot(t, res.dmft[name][0, 0, 0, 0], "k-", lw=1.5, label="DMFT")
    for marker, (label, r) in zip("os", runs.items()):
        mean, se, _ = r.stats(name)
        ax.errorbar(r.t[0, 0, 0, 0], mean[0, 0, 0, 0], yerr=se[0, 0, 0, 0], fmt=marker, ms=3.5,
                    capsize=2, label=f"{label} ({SEEDS} runs)")
    ax.set(xlabel="t = steps lr d / n", title=name)
axes[0].legend(fontsize=8)
save(fig, "fig4")
plt.show()

# %% [markdown]
# a(t), v(t) and the test error agree within the run-to-run spread. The train error of the
# real networks sits *below* the DMFT: the DMFT is exact for the Gaussian model of
# docs/equations.md section 3, and real features are not Gaussian. The gap shrinks as m grows (see
# `benchmarks/gap_study.py` and `benchmarks/results/gap_study.md`).

# %%
for label, r in runs.items():
    for name in ("a", "v", "e_ts", "e_tr"):
        mean, se, _ = r.stats(name)
        print(f"{label} t = {r.t[0, 0, 0, 0, -1]:.3g} {name:5s}: experiment "
              f"{mean[0, 0, 0, 0, -1]:.4f} +- {se[0, 0, 0, 0, -1]:.4f}, DMFT "
              f"{r.dmft[name][0, 0, 0, 0, -1]:.4f}")

# %% [markdown]
# ## A sweep over a0 x lr, one compiled graph
#
# Every (seed, a0, lr) trains in one `vmap`; the DMFT of every (a0, lr) uses the matching
# step dt = lr d / n. All runs take the same number of steps, so a larger lr reaches a larger
# time. With the time map the curves of different lr fall on one DMFT curve per a0 (up to the
# O(lr) discretization), which is the check that the time factor is right.

# %%
a0s = [0.5, 2.0] if SMOKE else [0.5, 1.0, 2.0]
lrs = [0.05, 0.1] if SMOKE else [0.05, 0.1, 0.2]
grid = sweep(prob, m=M, d=D, steps=steps, record_every=every, seeds=SEEDS, a0=a0s, lr=lrs,
             tau=0.3, alpha=0.3, batch=0, projection="sphere")
grid.save(OUT / "experiment_sweep.npz")
grid = SweepResult.load(OUT / "experiment_sweep.npz")  # labeled arrays round-trip
print({k: v for k, v in grid.axes.items()}, "experiment a:", grid.experiment["a"].shape)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
for i, a0 in enumerate(a0s):
    for j, (lr, marker) in enumerate(zip(lrs, "os^")):
        point = grid.point(a0=a0, lr=lr)
        ok = ~point["diverged"]
        for ax, name in zip(axes, ("e_ts", "a")):
            ax.plot(point["t"], point[f"dmft_{name}"], "-", color=colors[i], lw=1)
            ax.plot(point["t"], point[name][ok].mean(axis=0), marker, color=colors[i], ms=3.5,
                    label=f"a0={a0}, lr={lr}")
axes[0].set(xlabel="t", ylabel="e_ts", title="test error: DMFT (lines) vs GD (symbols)")
axes[1].set(xlabel="t", ylabel="a(t)", title="second layer")
axes[0].legend(fontsize=7)
save(fig, "sweep")
plt.show()

# %%
mean, se, _ = grid.stats("e_ts")
gap = np.abs(mean - grid.dmft["e_ts"])[..., 0, 0, -1]
print("final-time |experiment - DMFT| / s.e. for e_ts (rows a0, columns lr):")
print(np.round(gap / np.maximum(se[..., 0, 0, -1], 1e-12), 2))
