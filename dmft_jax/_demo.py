"""`dmft-jax demo`: the three regimes of train and test error under lazy initialization.

Setting of the paper's Figs. 13-17 (docs/equations.md sections 8-9): single-index target,
h = phihat = 0.9 q + q^2/2, tau = 2.5, alpha = 0.3, lazy init gamma0 = 1, for a few widths m.
The large noise puts gamma0 = 1 below the interpolation threshold, so the three time scales are
visible: t ~ 1/m (the linear part is learned, train = test), t ~ 1 (the weights move orthogonally
to the target: train error falls, test error stays flat), t ~ m (gamma = a/sqrt(m) grows, train
error -> 0, test error rises).
"""

from __future__ import annotations

import sys
import time

import numpy as np

#: (m, dt, t_max) per width: dt inside the stability bound ~1/(alpha gamma^2 m h'(1)) with the
#: gamma ~ 1.5 reached at late times, t_max a few times m.
WIDTHS = ((4, 0.04, 40.0), (8, 0.03, 48.0), (16, 0.025, 48.0))
QUICK = ((4, 0.05, 24.0), (8, 0.04, 32.0))


def solve_widths(widths, tau=2.5, alpha=0.3, gamma0=1.0, log=print):
    """Symmetric DMFT solves for each (m, dt, t_max); returns {m: arrays}."""
    from ._covariance import covariance, target
    from ._dmft import symmetric_dmft
    from ._grid import TimeGrid
    from ._integrate import solve
    c = [0.0, 0.9, 0.5]
    h, tg = covariance(c), target("same", c)
    out = {}
    for m, dt, t_max in widths:
        start = time.perf_counter()
        steps = int(round(t_max / dt))
        sol = solve(symmetric_dmft(h, tg, tau=tau, alpha=alpha, m=m, gamma0=gamma0),
                    TimeGrid(dt, steps), progress=steps >= 1000, label=f"m={m}")
        out[m] = {k: np.asarray(getattr(sol, k)) for k in ("t", "e_tr", "e_ts", "gamma")}
        out[m]["v"] = np.asarray(sol.v)[:, 0]
        log(f"m = {m:3d}: {steps} steps to t = {t_max:g} in {time.perf_counter() - start:.1f} s; "
            f"final e_tr = {out[m]['e_tr'][-1]:.4f}, e_ts = {out[m]['e_ts'][-1]:.4f}, "
            f"gamma = {out[m]['gamma'][-1]:.3f}")
    return out


def plateau(tau: float, gamma0: float = 1.0) -> float:
    """The errors after the first lazy regime [F.59, 2.7] for h = phihat = 0.9q + q^2/2:
    (1/2)(tau^2 + ||phi||^2 - ||grad phihat(0)||^2 / h'(0) + gamma0^2 (h(1) - h'(0)))."""
    h1, dh0 = 1.4, 0.9
    return 0.5 * (tau**2 + h1 - dh0**2 / dh0 + gamma0**2 * (h1 - dh0))


def regimes_figure(results: dict, tau: float = 2.5):
    """One panel per time scale: errors against t m and t, gamma = a/sqrt(m) against t/m."""
    import matplotlib

    from ._plot import new_figure
    fig, axes = new_figure(1, 3, (15, 4.5))
    ax = axes[0]
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(results)))
    for color, (m, r) in zip(colors, sorted(results.items())):
        t = r["t"]
        for axis, x in ((ax[0], t * m), (ax[1], t)):
            axis.plot(x, r["e_tr"], color=color, label=f"train, m = {m}")
            axis.plot(x, r["e_ts"], "--", color=color, label=f"test, m = {m}")
        ax[2].plot(t / m, r["gamma"], color=color, label=f"m = {m}")
    for axis in ax[:2]:
        axis.axhline(plateau(tau), color="gray", lw=0.8, ls=":", label="plateau [2.7]")
        axis.axhline(tau**2 / 2, color="k", lw=0.6, ls="-.", label=r"$\tau^2/2$")
    ax[0].set(xlim=(0, 3), xlabel="t m", ylabel="error",
              title="1: t ~ 1/m: linear part learned (train -> test as m grows)")
    ax[0].legend(fontsize=7, ncol=2)
    ax[1].set(xlim=(0, 6), xlabel="t", title="2: t ~ 1: train falls, test nearly flat")
    ax[2].set(xlabel="t / m", ylabel=r"$\gamma = a/\sqrt{m}$",
              title="3: t ~ m: gamma grows while train -> 0 (collapse in t/m)")
    ax[2].legend(fontsize=8)
    fig.suptitle(r"SymmDMFT, lazy init $\gamma_0 = 1$, $h = \hat\varphi = 0.9q + q^2/2$, "
                 rf"$\tau = {tau}$, $\alpha = 0.3$: curves of different m collapse on each scale")
    return fig


def plot_regimes(results: dict, path: str, tau: float = 2.5) -> None:
    """`regimes_figure` written to `path`."""
    from ._plot import save_figure
    save_figure(regimes_figure(results, tau), path)


def run_demo(path: str, quick: bool = False, save=None) -> dict:
    """Solve the demo's widths and write the figure to `path` (through `save(figure)` when
    given: the command line's atomic writer)."""
    start = time.perf_counter()
    results = solve_widths(QUICK if quick else WIDTHS,
                           log=lambda s: print(s, file=sys.stderr, flush=True))
    if save is None:
        plot_regimes(results, path)
    else:
        save(regimes_figure(results))
    print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")
    return results
