"""Initialization scale and stopping time by exact gradients, against a grid search.

    python benchmarks/hyperopt.py            # the full setting (~several minutes on 2 CPUs)
    python benchmarks/hyperopt.py --smoke    # a coarse grid, for CI / the notebook

Setting (symmetric DMFT, spec section 5): m = 8, alpha = 0.5, tau = 0.3,
h = phihat = 0.9q + q^3/6, a training budget t <= T_max = 20. For each initialization scale a0
the best stopping time is the argmin of the test error over the grid, so the problem is

    F(a0) = min_{t_n <= T_max} e_ts(t_n; a0),     T*(a0) = argmin,     minimize F over a0.

By the envelope theorem dF/da0 is the a0-derivative of e_ts at the fixed minimizing time,
which is what `value_and_grad(min_e_ts, ...)` returns (the gradient of the exact minimum is
the gradient at the argmin). The search runs on x = log a0 (a0 > 0; F is even in a0 because
a -> -a, v -> -v is a symmetry of this odd target) with a safeguarded secant method on
dF/dx; one forward-mode value+gradient per iterate. The grid search solves on log-spaced a0.
F is only piecewise smooth (the minimizing grid time jumps from one t_n to the next), so the
search stops when its steps become small (|dx| < 1e-3) and reports its best iterate.
Writes benchmarks/results/hyperopt.md and benchmarks/figures/hyperopt.png.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dmft_jax import _adjoint as adj  # noqa: E402
from dmft_jax import _observables as obs  # noqa: E402
from dmft_jax import covariance, target  # noqa: E402
from dmft_jax import symmetric_dmft  # noqa: E402
from dmft_jax import TimeGrid  # noqa: E402
from dmft_jax import solve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTING = dict(m=8, alpha=0.5, tau=0.3)
H = [0.0, 0.9, 0.0, 1.0 / 6.0]
FULL = dict(steps=500, t_max=20.0, grid_points=13, a0_range=(0.01, 2.0), start=1.0)
SMOKE = dict(steps=100, t_max=20.0, grid_points=6, a0_range=(0.01, 2.0), start=1.0)


def model_at(a0: float):
    """The symmetric DMFT of the setting with a_i(0) = a0."""
    return symmetric_dmft(covariance(H), target("same", H), a0=a0, **SETTING)


def curve(a0: float, grid: TimeGrid):
    """(t, e_ts(t)) of one solve."""
    sol = solve(model_at(a0), grid)
    return np.asarray(sol.t), np.asarray(sol.e_ts)


def grid_search(grid: TimeGrid, a0s) -> list[dict]:
    """F(a0), T*(a0) on the given a0 values: one solve each."""
    rows = []
    for a0 in a0s:
        t, e = curve(float(a0), grid)
        rows.append(dict(a0=float(a0), F=float(e.min()), T=float(t[e.argmin()])))
    return rows


def min_and_argmin(sol):
    """(min_t e_ts, argmin time): one forward-mode pass gives both and d/da0 of both."""
    return jnp.stack([obs.min_e_ts(sol), obs.argmin_time(sol)])


def value_and_slope(x: float, grid: TimeGrid) -> tuple[float, float, float]:
    """F and dF/dx at x = log a0 (forward mode), and T*."""
    a0 = float(np.exp(x))
    value, jac = adj.jacobian(min_and_argmin, model_at(a0), grid, "a0", mode="forward")
    return float(value[0]), a0 * float(jac["a0"][0]), float(value[1])


def secant_search(grid: TimeGrid, start: float, tol: float = 1e-6, max_iter: int = 15,
                  max_step: float = 1.0) -> list[dict]:
    """Minimize F over x = log a0 by a safeguarded secant method on dF/dx."""
    x = float(np.log(start))
    F, g, T = value_and_slope(x, grid)
    history = [dict(a0=np.exp(x), F=F, dF_dlog_a0=g, T=T)]
    lo, hi = -np.inf, np.inf          # bracket of the root of dF/dx once signs differ
    step = -np.sign(g) * 0.5
    for _ in range(max_iter):
        if g > 0:
            hi = min(hi, x)
        else:
            lo = max(lo, x)
        x_new = x + float(np.clip(step, -max_step, max_step))
        if not lo < x_new < hi:       # stay inside the bracket: bisect
            x_new = 0.5 * (lo + hi) if np.isfinite(lo + hi) else x_new
        F_new, g_new, T = value_and_slope(x_new, grid)
        history.append(dict(a0=np.exp(x_new), F=F_new, dF_dlog_a0=g_new, T=T))
        curvature = (g_new - g) / (x_new - x)
        step = -g_new / curvature if curvature > 0 else 2.0 * (x_new - x)
        done = abs(g_new) < tol or abs(x_new - x) < 1e-3
        x, g = x_new, g_new
        if done:
            break
    return history


def best_of(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: r["F"])


def figure(grid_rows, history, grid, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([r["a0"] for r in grid_rows], [r["F"] for r in grid_rows], "o-", color="0.6",
             label="grid search")
    ax1.plot([h["a0"] for h in history], [h["F"] for h in history], "x", color="C3",
             label="secant iterates (exact gradients)")
    best = best_of(history)
    ax1.plot([best["a0"]], [best["F"]], "*", color="C3", ms=14)
    ax1.set(xscale="log", xlabel="a0", ylabel=r"$\min_t e_{ts}(t)$",
            title=r"test error at the best stopping time")
    ax1.legend()
    t, e = curve(best["a0"], grid)
    ax2.plot(t, e, color="C3", label=f"a0 = {best['a0']:.3g}")
    ax2.axvline(best["T"], color="C3", ls=":", label=f"T* = {best['T']:.3g}")
    ax2.set(xlabel="t", ylabel=r"$e_{ts}(t)$", title="test error at the optimum")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: dict) -> dict:
    """Grid search and gradient search for one configuration; returns both with timings."""
    grid = TimeGrid(cfg["t_max"] / cfg["steps"], cfg["steps"])
    a0s = np.geomspace(*cfg["a0_range"], cfg["grid_points"])
    t0 = time.perf_counter()
    grid_rows = grid_search(grid, a0s)
    t1 = time.perf_counter()
    history = secant_search(grid, cfg["start"])
    t2 = time.perf_counter()
    return dict(grid=grid, grid_rows=grid_rows, history=history, grid_seconds=t1 - t0,
                gradient_seconds=t2 - t1)


def report(cfg, res) -> str:
    best_grid = best_of(res["grid_rows"])
    best = best_of(res["history"])
    lines = [
        "# Initialization scale and stopping time by exact gradients (benchmarks/hyperopt.py)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}; machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs (shared), jax {jax.__version__}, float64",
        f"- setting: symmetric DMFT, m = {SETTING['m']}, alpha = {SETTING['alpha']}, "
        f"tau = {SETTING['tau']}, h = phihat = 0.9q + q^3/6; budget t <= {cfg['t_max']} with "
        f"N = {cfg['steps']} steps (dt = {cfg['t_max'] / cfg['steps']:g})",
        "- objective: F(a0) = min over the grid times of e_ts(t; a0); T* = argmin",
        "",
        "| method | solves | a0 | F = min_t e_ts | T* | seconds (incl. compile) |",
        "|---|---|---|---|---|---|",
        f"| grid search ({cfg['grid_points']} log-spaced a0 in {cfg['a0_range']}) | "
        f"{len(res['grid_rows'])} | {best_grid['a0']:.4g} | {best_grid['F']:.6f} | "
        f"{best_grid['T']:.3g} | {res['grid_seconds']:.1f} |",
        f"| secant on exact dF/dlog a0 (forward mode) | {len(res['history'])} value+gradient | "
        f"{best['a0']:.4g} | {best['F']:.6f} | {best['T']:.3g} | "
        f"{res['gradient_seconds']:.1f} |",
        "",
        "Reading: smaller initializations generalize better here but learn later (escape from "
        "a ~ 0 takes ~log(1/a0)), so with this budget the optimum is the scale whose test-error "
        "minimum arrives at the end of the budget (T* at or next to T_max). F is flat near "
        "the optimum: the gradient search pins it down (|dF/dlog a0| -> 0 up to the kinks "
        "where the minimizing grid time jumps), the grid search lands within its spacing. "
        "Each value+gradient costs ~2-5 solves (forward mode, one parameter) on this CPU.",
        "",
        "Gradient iterates:",
        "",
        "| k | a0 | F | dF/dlog a0 | T* |",
        "|---|---|---|---|---|",
    ]
    for k, h in enumerate(res["history"]):
        lines.append(f"| {k} | {h['a0']:.5g} | {h['F']:.7f} | {h['dF_dlog_a0']:.3e} | "
                     f"{h['T']:.3g} |")
    lines += ["", "![hyperopt](../figures/hyperopt.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="coarse, fast configuration")
    p.add_argument("--steps", type=int, default=None, help="number of steps N")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "hyperopt.md"))
    p.add_argument("--figure", default=str(ROOT / "benchmarks" / "figures" / "hyperopt.png"))
    args = p.parse_args(argv)
    cfg = dict(SMOKE if args.smoke else FULL)
    if args.steps:
        cfg["steps"] = args.steps
    res = run(cfg)
    text = report(cfg, res)
    if not args.smoke:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(text)
        figure(res["grid_rows"], res["history"], res["grid"], Path(args.figure))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
