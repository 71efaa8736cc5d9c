"""`dmft-jax demo`: the three regimes of train and test error under lazy initialization.

Setting of the paper's Figs. 13-17 (docs/equations.md sections 8-9): single-index target,
h = phihat = 0.9 q + q^2/2, tau = 2.5, alpha = 0.3, lazy init gamma0 = 1. The large noise puts
gamma0 = 1 below the interpolation threshold, so the three time scales are visible: t ~ 1/m
(the linear part is learned, train = test), t ~ 1 (the weights move orthogonally to the target:
train error falls, test error stays flat), t ~ m (gamma = a/sqrt(m) grows, train error -> 0,
test error rises).

The first two regimes are solved at real widths, m = 64, 256, 1024, by adaptive solves
(`Adaptive`, second-order stepper) up to t = 10, and drawn with the reduced theories they
approach: the closed form lz1 against t m and the Volterra model lz2 against t [F.5-F.27,
F.55-F.59, F.73]. The third regime needs t ~ m: the adaptive solver reaches it at m = 64 and
256 (and m = 1024 up to t = 0.84 m) with a row-wise decimation check
(`Adaptive(decimation_norm="row")`;
`benchmarks/third_regime.py`, figure benchmarks/figures/third_regime.png), but its steps
stay O(10^-2), so that takes minutes per width (m = 64 to t = 10 m: 28318 steps, ~7 minutes on
2 CPU cores); the demo draws it for m = 4, 8, 16 on fixed Euler grids.
"""

from __future__ import annotations

import sys
import time

import numpy as np

#: Widths of the first two regimes (adaptive solves to T_WIDE) and their tolerance and history.
WIDE, T_WIDE, RTOL, HISTORY = (64, 256, 1024), 10.0, 1e-4, 1024
#: (m, dt, t_max) per width of the third regime: dt inside the stability bound
#: ~1/(alpha gamma^2 m h'(1)) with the gamma ~ 1.5 reached at late times, t_max a few times m.
WIDTHS = ((4, 0.04, 40.0), (8, 0.03, 48.0), (16, 0.025, 48.0))
#: `--quick`: one wide solve to t = 2 (~200 steps: a history of 256 needs no windows) and one
#: long one.
QUICK_WIDE, QUICK_T_WIDE, QUICK_HISTORY = (64,), 2.0, 256
QUICK = ((4, 0.05, 24.0),)
_H = [0.0, 0.9, 0.5]


def _model(m: int, tau: float, alpha: float, gamma0: float):
    from ._covariance import covariance, target
    from ._dmft import symmetric_dmft
    return symmetric_dmft(covariance(_H), target("same", _H), tau=tau, alpha=alpha, m=m,
                          gamma0=gamma0)


def solve_widths(widths, tau=2.5, alpha=0.3, gamma0=1.0, log=print):
    """Fixed-grid symmetric DMFT solves for each (m, dt, t_max); returns {m: arrays}."""
    from ._grid import TimeGrid
    from ._integrate import solve
    out = {}
    for m, dt, t_max in widths:
        start = time.perf_counter()
        steps = int(round(t_max / dt))
        sol = solve(_model(m, tau, alpha, gamma0), TimeGrid(dt, steps),
                    progress=steps >= 1000, label=f"m={m}")
        out[m] = {k: np.asarray(getattr(sol, k)) for k in ("t", "e_tr", "e_ts", "gamma")}
        out[m]["v"] = np.asarray(sol.v)[:, 0]
        log(f"m = {m:3d}: {steps} steps to t = {t_max:g} in {time.perf_counter() - start:.1f} s; "
            f"final e_tr = {out[m]['e_tr'][-1]:.4f}, e_ts = {out[m]['e_ts'][-1]:.4f}, "
            f"gamma = {out[m]['gamma'][-1]:.3f}")
    return out


def solve_wide(widths, t_max: float = T_WIDE, tau=2.5, alpha=0.3, gamma0=1.0, log=print,
               history: int = HISTORY):
    """Adaptive symmetric DMFT solves to `t_max` for each width (rtol `RTOL`, a bounded history
    of `history` times); returns {m: arrays} over the accepted steps."""
    from ._integrate import Adaptive, solve
    out = {}
    for m in widths:
        start = time.perf_counter()
        ctrl = Adaptive(t_max, rtol=RTOL, atol=RTOL * 1e-2, history=history)
        sol = solve(_model(m, tau, alpha, gamma0), ctrl, progress=True, label=f"m={m}")
        t = np.asarray(sol.t)
        keep = np.isfinite(t)
        out[m] = {k: np.asarray(getattr(sol, k))[keep] for k in ("t", "e_tr", "e_ts")}
        log(f"m = {m:4d}: {int(sol.stats['accepted'])} adaptive steps to t = {t_max:g} in "
            f"{time.perf_counter() - start:.1f} s; final e_tr = {out[m]['e_tr'][-1]:.4f}, "
            f"e_ts = {out[m]['e_ts'][-1]:.4f}")
    return out


def reduced_theories(t_max: float = T_WIDE, tau=2.5, alpha=0.3, gamma0=1.0,
                     steps: int = 400) -> dict:
    """lz1 on t m in [0, 12] (closed form) and lz2 on t in [0, t_max] (trapezoid, `steps`)."""
    from ._covariance import covariance, target
    from ._grid import TimeGrid
    from ._integrate import solve
    from ._reduced import lz1, lz2_model
    from ._stepper import Trapezoid
    h, tg = covariance(_H), target("same", _H)
    one = lz1(h, tg, tau=tau, alpha=alpha, gamma0=gamma0, t=np.linspace(0.0, 12.0, 241))
    two = solve(lz2_model(h, tg, tau=tau, alpha=alpha, gamma0=gamma0),
                TimeGrid(t_max / steps, steps), Trapezoid())
    return dict(lz1={"t": np.asarray(one.t), "e": np.asarray(one.e_tr)},
                lz2={"t": np.asarray(two.t), "e_tr": np.asarray(two.e_tr),
                     "e_ts": np.asarray(two.e_ts)})


def plateau(tau: float, gamma0: float = 1.0) -> float:
    """The errors after the first lazy regime [F.59, 2.7] for h = phihat = 0.9q + q^2/2:
    (1/2)(tau^2 + ||phi||^2 - ||grad phihat(0)||^2 / h'(0) + gamma0^2 (h(1) - h'(0)))."""
    h1, dh0 = 1.4, 0.9
    return 0.5 * (tau**2 + h1 - dh0**2 / dh0 + gamma0**2 * (h1 - dh0))


def regimes_figure(results: dict, wide: dict, reduced: dict, tau: float = 2.5):
    """One panel per time scale: errors against t m and t (the adaptive `wide` solves, with lz1
    and lz2 from `reduced_theories`), gamma = a/sqrt(m) against t/m (the fixed-grid
    `results`)."""
    import matplotlib

    from ._plot import new_figure
    fig, axes = new_figure(1, 3, (15, 4.5))
    ax = axes[0]
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(wide)))
    for color, (m, r) in zip(colors, sorted(wide.items())):
        t = r["t"]
        for axis, x in ((ax[0], t * m), (ax[1], t)):
            axis.plot(x, r["e_tr"], color=color, label=f"train, m = {m}")
            axis.plot(x, r["e_ts"], "--", color=color, label=f"test, m = {m}")
    ax[0].plot(reduced["lz1"]["t"], reduced["lz1"]["e"], "k:", lw=1.5, label="lz1 (train = test)")
    ax[1].plot(reduced["lz2"]["t"], reduced["lz2"]["e_tr"], "k:", lw=1.5, label="lz2 train")
    ax[1].axhline(plateau(tau), color="gray", lw=0.8, ls=":", label="lz2 test = plateau [2.7]")
    ax[0].axhline(plateau(tau), color="gray", lw=0.8, ls=":", label="plateau [2.7]")
    for axis in ax[:2]:
        axis.axhline(tau**2 / 2, color="k", lw=0.6, ls="-.", label=r"$\tau^2/2$")
    ax[0].set(xlim=(0, 12), xlabel="t m", ylabel="error",
              title="1: t ~ 1/m: linear part learned (train = test)")
    ax[0].legend(fontsize=7, ncol=2)
    span = max(float(np.max(r["t"])) for r in wide.values())
    ax[1].set(xscale="log", xlim=(span / 1000, span), xlabel="t",
              title="2: t ~ 1: train falls, test flat")
    ax[1].legend(fontsize=7, ncol=2, loc="lower left")
    colors = matplotlib.colormaps["plasma"](np.linspace(0.0, 0.8, len(results)))
    for color, (m, r) in zip(colors, sorted(results.items())):
        ax[2].plot(r["t"] / m, r["gamma"], color=color, label=f"m = {m}")
    ax[2].set(xlabel="t / m", ylabel=r"$\gamma = a/\sqrt{m}$",
              title=f"3: t ~ m: gamma grows, train -> 0 (m <= {max(results)})")
    ax[2].legend(fontsize=8)
    fig.suptitle(r"SymmDMFT, lazy init $\gamma_0 = 1$, $h = \hat\varphi = 0.9q + q^2/2$, "
                 rf"$\tau = {tau}$, $\alpha = 0.3$: each regime against its own time scale, "
                 "with the reduced theory it approaches as m grows")
    return fig


def plot_regimes(results: dict, wide: dict, reduced: dict, path: str, tau: float = 2.5) -> None:
    """`regimes_figure` written to `path`."""
    from ._plot import save_figure
    save_figure(regimes_figure(results, wide, reduced, tau), path)


def run_demo(path: str, quick: bool = False, save=None) -> dict:
    """Solve the demo's widths and write the figure to `path` (through `save(figure)` when
    given: the command line's atomic writer). Returns {"long": ..., "wide": ...}."""
    start = time.perf_counter()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if quick:
        wide = solve_wide(QUICK_WIDE, QUICK_T_WIDE, log=log, history=QUICK_HISTORY)
        reduced = reduced_theories(QUICK_T_WIDE, steps=100)
    else:
        wide, reduced = solve_wide(WIDE, T_WIDE, log=log), reduced_theories(T_WIDE)
    results = solve_widths(QUICK if quick else WIDTHS, log=log)
    if save is None:
        plot_regimes(results, wide, reduced, path)
    else:
        save(regimes_figure(results, wide, reduced))
    print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")
    return dict(long=results, wide=wide)
