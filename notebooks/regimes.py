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
# # Time scales of wide two-layer networks: lazy and mean-field regimes
#
# The DMFT of a width-m network (docs/equations.md sections 4-6) simplifies as m -> infinity,
# differently on each time scale (docs/equations.md section 7). This notebook follows one
# **lazy** example (a(0) = gamma0 sqrt(m)) and one **mean-field** example (a(0) = 1) through
# their regimes and compares the finite-m symmetric DMFT with the reduced theories of
# `dmft_jax._reduced` and `dmft_jax._meanfield`:
#
# | regime | time | reduced theory |
# |---|---|---|
# | lz1 | t ~ 1/m | closed form `lz1` [F.5-F.13, F.55-F.59] |
# | lz2 | t ~ 1 | Volterra model `Lz2` [F.16-F.27], target via tau' [F.73] |
# | mf1 | t ~ 1 | mean-field ODEs `MeanField` [G.44]; pure noise: closed form `mf1` [G.1-G.8] |
# | mf2 | t ~ sqrt(m) | Volterra model `Mf2` [G.10-G.18] |
# | H.2 | t ~ m, fixed a | Volterra model `H2` [H.4-H.17] |
#
# Run as a script (`python notebooks/regimes.py`); `SMOKE_TEST=1` uses small sizes.

# %%
import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

try:
    get_ipython  # noqa: B018  (inside Jupyter: keep the inline backend)
except NameError:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dmft_jax import target  # noqa: E402
from dmft_jax import symmetric_dmft  # noqa: E402
from dmft_jax import Adaptive, TimeGrid, Trapezoid  # noqa: E402
from dmft_jax import solve  # noqa: E402
from dmft_jax import mean_field_model  # noqa: E402
from dmft_jax import lz1, lz2_model, mf1, mf2_model, tau_prime  # noqa: E402
from dmft_jax import kindex_threshold, threshold  # noqa: E402

SMOKE = os.environ.get("SMOKE_TEST", "0") not in ("", "0")
NOTEBOOK = "regimes"

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


N = 100 if SMOKE else 200
WIDTHS = (16,) if SMOKE else (64, 256, 1024)   # smoke: one width (each width compiles)

# %% [markdown]
# ## 1. Lazy example: single index, h = phihat = 0.9 q + q^2/2, tau = 0.3, alpha = 0.3, gamma0 = 1
#
# (the setting of the paper's figures 3 and 13-17). The target is phi = sigma, so the linear
# part of the target has |grad phihat(0)|^2 / h'(0) = 0.9 and the rest,
# ||phi||^2 - 0.9 = 0.5, is the q^2 part.

# %%
H = [0.0, 0.9, 0.5]
PHI = target("same", H)
TAU, ALPHA, G0 = 0.3, 0.3, 1.0
print("tau' =", float(tau_prime(H, PHI, TAU)), " [F.73]")

# %% [markdown]
# ### lz1: t ~ 1/m
# The network learns the linear part of the target. m C_o, m (C_d - 1), sqrt(m) v and the errors
# follow the closed form; train and test errors agree and reach the plateau [2.7].

# %%
dtau = 0.05
ref1 = lz1(H, PHI, tau=TAU, alpha=ALPHA, gamma0=G0, t=dtau * np.arange(N + 1))
fig, ax = plt.subplots(1, 2, figsize=(10, 4))
for m in WIDTHS:
    sol = solve(symmetric_dmft(H, PHI, tau=TAU, alpha=ALPHA, m=m, gamma0=G0),
                TimeGrid(dtau / m, N))
    ax[0].plot(m * sol.t, sol.e_tr, label=f"train, m = {m}")
    ax[0].plot(m * sol.t, sol.e_ts, ":", color=ax[0].lines[-1].get_color())
    ax[1].plot(m * sol.t, np.sqrt(m) * sol.v[:, 0], label=f"m = {m}")
    print(f"m = {m:4d}: max |e_tr - e^lz1| = {float(np.max(np.abs(sol.e_tr - ref1.e_tr))):.3e}, "
          f"max |sqrt(m) v - v^lz1| = {float(np.max(np.abs(np.sqrt(m) * sol.v - ref1.v))):.3e}")
ax[0].plot(ref1.t, ref1.e_tr, "k--", label="lz1")
ax[0].axhline(float(ref1.plateau), color="gray", lw=0.8)
ax[1].plot(ref1.t, ref1.v[:, 0], "k--", label="lz1")
ax[0].set(xlabel="t m", ylabel="error (dotted: test)")
ax[1].set(xlabel="t m", ylabel="sqrt(m) v")
ax[0].legend(fontsize=7), ax[1].legend(fontsize=7)
save(fig, "lz1")
plt.show()

# %% [markdown]
# ### lz2: t ~ 1
# The weights now move orthogonally to U: the train error falls, the test error stays at the
# plateau. The target acts as extra noise tau' [F.73]. The explicit Euler scheme would need
# dt < 1 / (alpha m gamma0^2 h'(1)) (docs/equations.md section 6), ~10^4 steps at m = 1024;
# the adaptive solver (`Adaptive`, second-order stepper with the stiff part integrated exactly)
# takes ~600-800 steps at every width. The distance to lz2 shrinks like m^(-1/2), and the test
# error approaches the plateau [2.7] from below.

# %%
T2 = 2.0 if SMOKE else 10.0
ref2 = solve(lz2_model(H, PHI, tau=TAU, alpha=ALPHA, gamma0=G0), TimeGrid(T2 / N, N),
             Trapezoid())
fig, ax = plt.subplots(figsize=(5, 4))
for m in (16,) if SMOKE else WIDTHS:
    sol = solve(symmetric_dmft(H, PHI, tau=TAU, alpha=ALPHA, m=m, gamma0=G0),
                Adaptive(T2, rtol=1e-4, atol=1e-6, history=1024))
    done = np.isfinite(np.asarray(sol.t))          # records past the last step: t = inf
    t, e_tr, e_ts = (np.asarray(x)[done] for x in (sol.t, sol.e_tr, sol.e_ts))
    ax.semilogy(t, e_tr, label=f"train, m = {m}")
    ax.semilogy(t, e_ts, ":", color=ax.lines[-1].get_color())
    late = t >= 1
    dev = np.max(np.abs(e_tr[late] - np.interp(t[late], ref2.t, ref2.e_tr)))
    print(f"m = {m:4d}: {int(sol.stats['accepted'])} steps; max |e_tr - e_tr^lz2| for t >= 1: "
          f"{dev:.3e}; e_ts(t = {T2:g}) - plateau = {e_ts[-1] - float(ref2.e_ts[-1]):+.4f}")
ax.semilogy(ref2.t, ref2.e_tr, "k--", label="lz2 train")
ax.semilogy(ref2.t, ref2.e_ts, "k:", label="lz2 test [2.7]")
ax.set(xlabel="t", ylabel="error")
ax.legend(fontsize=7)
save(fig, "lz2")
plt.show()

# %% [markdown]
# ### Does lz2 interpolate? The threshold gamma*_GF
# lz2 fits the data (e_tr -> 0) when gamma0 exceeds gamma*_GF(alpha, phi, tau) =
# tau' gamma*_GF(alpha) [F.74], where gamma*_GF(alpha) is the pure-noise, tau = 1 threshold.
# A short relaxation-time scan (docs/equations.md section 7) estimates it:
# t_rel = inf{t : e_tr < 1e-7 tau^2} diverges as gamma0 approaches the threshold from above.
# (Short scans far from the threshold overestimate it; see benchmarks/results/reduced.md for
# longer runs.)

# %%
values = [1.2, 1.4, 1.6, 1.8] if SMOKE else [0.9, 1.0, 1.1, 1.2, 1.4, 1.6]
steps = 250 if SMOKE else 800
out = threshold(H, parameter="gamma0", values=values, alpha=ALPHA, tau=1.0, dt=0.1, steps=steps)
print({k: out[k] for k in ("threshold", "threshold_err", "exponent", "exponent_err")})
print("t_rel:", out["points"], "not relaxed:", out["unrelaxed"])
if out["threshold"] is not None:
    g_star = float(kindex_threshold(out["threshold"], H, PHI, tau=TAU))
    verdict = "interpolates" if G0 > g_star else "does not interpolate"
    print(f"k-index threshold tau' gamma* = {g_star:.3f}; gamma0 = {G0}: lz2 {verdict}")

# %% [markdown]
# ### The third regime, t ~ m (tau = 2.5: the demo's setting, the paper's figures 13-17)
# With tau = 0.3 the network above interpolates in the second regime (gamma0 = 1 lies above
# the threshold). With more noise, tau = 2.5, it cannot: the train error stalls until
# gamma = a / sqrt(m) has grown on t ~ m, and meanwhile the test error rises. The adaptive step
# stays ~0.02-0.03 (the responses' O(1) structure), so t = 10 m takes ~30000 steps at m = 64
# (~5 minutes on a 2-core CPU) and ~100000 at m = 256 (~20 minutes). This cell draws the
# records that `benchmarks/third_regime.py` wrote (benchmarks/results/third_regime.npz, kept in
# the repository: m = 64, 256 to t = 10 m, m = 1024 to t = 0.84 m, where that solve stopped as
# diverged); with `RECOMPUTE=1` in the
# environment, or without that file, it solves `THIRD_WIDTHS` here instead.

# %%
TAU3, H_3 = 2.5, [0.0, 0.9, 0.5]
PHI_3 = target("same", H_3)
RECORDS = _NB_DIR.parent / "benchmarks" / "results" / "third_regime.npz"
THIRD_WIDTHS, THIRD_T = ((8,), 2.0) if SMOKE else ((16, 64), 10.0)


def third_regime_solve(m, t_over_m):
    """The records of one adaptive solve (as benchmarks/third_regime.py stores them)."""
    sol = solve(symmetric_dmft(H_3, PHI_3, tau=TAU3, alpha=ALPHA, m=m, gamma0=G0),
                Adaptive(t_over_m * m, rtol=1e-3, atol=1e-5, history=512, max_steps=400_000,
                         decimation_norm="row"), throw=False)
    n = int(sol.stats["accepted"])
    print(f"m = {m}: {n} steps to t = {float(sol.t[n]):.1f}")
    return dict(m=m, **{k: np.asarray(getattr(sol, k))[:n + 1]
                        for k in ("t", "e_tr", "e_ts", "gamma")})


if SMOKE or os.environ.get("RECOMPUTE") or not RECORDS.exists():
    runs = [third_regime_solve(m, THIRD_T) for m in THIRD_WIDTHS]
else:
    runs = list(np.load(RECORDS, allow_pickle=True)["runs"])
    print("records of", ", ".join(f"m = {r['m']} to t = {r['t_end']:.0f}" for r in runs))
one3 = lz1(H_3, PHI_3, tau=TAU3, alpha=ALPHA, gamma0=G0, t=np.linspace(0.0, 12.0, 241))
two3 = solve(lz2_model(H_3, PHI_3, tau=TAU3, alpha=ALPHA, gamma0=G0), TimeGrid(T2 / N, N),
             Trapezoid())
fig, ax = plt.subplots(1, 4, figsize=(18, 4))
for r in runs:
    m, t = r["m"], np.asarray(r["t"])
    for axis, x in ((ax[0], t * m), (ax[1], t), (ax[2], t / m)):
        axis.plot(x, r["e_tr"], label=f"train, m = {m}")
        axis.plot(x, r["e_ts"], ":", color=axis.lines[-1].get_color())
    ax[3].plot(t / m, r["gamma"], label=f"m = {m}")
ax[0].plot(one3.t, one3.e_tr, "k--", label="lz1")
ax[1].plot(two3.t, two3.e_tr, "k--", label="lz2 train")
ax[1].plot(two3.t, two3.e_ts, "k-.", label="lz2 test")
ax[0].set(xlim=(0, 12), xlabel="t m", ylabel="error (dotted: test)", title="t ~ 1/m")
ax[1].set(xscale="log", yscale="log", xlim=(1e-2, T2), xlabel="t", title="t ~ 1")
ax[2].set(xscale="log", yscale="log", xlim=(1e-2, None), xlabel="t / m", title="t ~ m")
ax[3].set(xscale="log", xlim=(1e-3, None), xlabel="t / m", ylabel="gamma = a / sqrt(m)")
for axis in ax:
    axis.legend(fontsize=7)
save(fig, "third")
plt.show()

# %% [markdown]
# ## 2. Mean-field example: h = 0.9 q + q^3/6, alpha = 0.3, a(0) = 1
#
# ### With a target (phi = sigma, tau = 0.3; the paper's figure 4): the mean-field ODEs
# At t = O(1) the DMFT approaches the ODEs [G.44] with an O(1/m) error; (a, v) -> (1, 1) and
# both errors approach the Bayes error tau^2/2.

# %%
H3 = [0.0, 0.9, 0.0, 1.0 / 6.0]
PHI3 = target("same", H3)
dt = 0.05
ode = solve(mean_field_model(H3, PHI3, tau=0.3, alpha=ALPHA, a0=1.0), TimeGrid(dt, N))
fig, ax = plt.subplots(1, 2, figsize=(10, 4))
for m in (20,) if SMOKE else (20, 80, 320):
    sol = solve(symmetric_dmft(H3, PHI3, tau=0.3, alpha=ALPHA, m=m, a0=1.0), TimeGrid(dt, N))
    ax[0].plot(sol.t, sol.a, label=f"a, m = {m}")
    ax[0].plot(sol.t, sol.v[:, 0], ":", color=ax[0].lines[-1].get_color())
    ax[1].plot(sol.t, sol.e_ts, label=f"test, m = {m}")
    print(f"m = {m:3d}: max |a - a_ODE| = {float(np.max(np.abs(sol.a - ode.a))):.3e}")
ax[0].plot(ode.t, ode.a, "k--", label="ODE a (dotted: v)")
ax[0].plot(ode.t, ode.v[:, 0], "k:")
ax[1].plot(ode.t, ode.e_ts, "k--", label="ODE")
ax[1].axhline(0.5 * 0.3**2, color="gray", lw=0.8)
ax[0].set(xlabel="t"), ax[1].set(xlabel="t", ylabel="test error")
ax[0].legend(fontsize=7), ax[1].legend(fontsize=7)
save(fig, "threshold")
plt.show()

# %% [markdown]
# ### Pure noise (tau = 0.6; figures 18-23): mf1 then mf2
# mf1 (t ~ 1): a stays at a(0), e_tr = tau^2/2, and the neurons' overlaps follow the closed
# form m C_o -> C_o^mf1 [G.1-G.8]. mf2 (t ~ sqrt(m)): a(t) starts to grow, following the
# Volterra model `Mf2` [G.10-G.18] with O(1/sqrt(m)) corrections.

# %%
TAU_N = 0.6
ref_mf1 = mf1(H3, tau=TAU_N, alpha=ALPHA, a0=1.0, t=dt * np.arange(N + 1))
ds = 0.05 if SMOKE else 0.04
ref_mf2 = solve(mf2_model(H3, tau=TAU_N, alpha=ALPHA, a0=1.0), TimeGrid(ds, N))
fig, ax = plt.subplots(1, 2, figsize=(10, 4))
for m in (20,) if SMOKE else (20, 80, 320):
    sol = solve(symmetric_dmft(H3, tau=TAU_N, alpha=ALPHA, m=m, a0=1.0), TimeGrid(dt, N))
    ax[0].plot(sol.t, m * np.diagonal(np.asarray(sol.C_o)), label=f"m = {m}")
    sol2 = solve(symmetric_dmft(H3, tau=TAU_N, alpha=ALPHA, m=m, a0=1.0),
                 TimeGrid(ds * np.sqrt(m), N))
    ax[1].plot(sol2.t / np.sqrt(m), sol2.a, label=f"m = {m}")
    print(f"m = {m:3d}: m C_o(t, t) error {float(np.max(np.abs(m * sol.C_o - ref_mf1.C_o))):.3e}; "
          f"a(sqrt(m) s) error {float(np.max(np.abs(sol2.a - ref_mf2.a))):.3e}")
ax[0].plot(ref_mf1.t, np.diagonal(np.asarray(ref_mf1.C_o)), "k--", label="mf1")
ax[1].plot(ref_mf2.t, ref_mf2.a, "k--", label="mf2")
ax[0].set(xlabel="t", ylabel="m C_o(t, t)"), ax[1].set(xlabel="t / sqrt(m)", ylabel="a")
ax[0].legend(fontsize=7), ax[1].legend(fontsize=7)
save(fig, "mean_field")
plt.show()

# %% [markdown]
# Later, at t ~ m, a(t) ~ sqrt(m) and the train error goes to zero (benchmarks/reduced_collapse.py
# shows gamma = a/sqrt(m) against t/m). With the target of figure 5 (tau = 0.6) that second
# regime is measured to start later than t ~ m as m grows, and not by t = 10 m at m >= 768
# (benchmarks/meanfield_regimes.py, figure benchmarks/figures/meanfield_regimes.png).
# With a fixed second layer and alpha_bar = n/d fixed that
# time scale is described by the `H2` model, whose threshold alpha_bar*_GF(m = infinity) the
# `threshold(..., parameter="alpha_bar")` scan estimates.
