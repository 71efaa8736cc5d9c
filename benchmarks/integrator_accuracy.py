"""Accuracy against cost of the integrators (issue 9): Euler (spec section 6), the second-order
exponential trapezoid on uniform grids, and adaptive stepping, on the same problems.

Problems:
  fig4  single index, h = phihat = 0.9 q + q^3/6, tau = 0.3, alpha = 0.3, m = 16, a0 = 1, t = 10
  lazy  single index, h = phihat = 0.9 q + q^2/2, tau = 0.3, alpha = 0.3, m = 64, gamma0 = 1,
        t = 8 (Fig. 3 setting: stiff, explicit Euler needs dt < ~0.027)

Reference: Richardson extrapolation of the two finest trapezoid solves (second order, error
far below 1e-6), cross-checked against a Richardson-extrapolated fine Euler solve. Reported:
relative errors of e_ts, e_tr, a at t_max; run time (best of 3, compilation excluded) and
compile time; steps. Writes a section of results/integrator.md and figures/integrator_accuracy.png.

    python benchmarks/integrator_accuracy.py [--problem fig4|lazy|all] [--quick] [--windows]

`--windows` only times the adaptive rows with and without the history windows of
`dj.Adaptive` (`window_from`; the same solution) and writes the sections `windows`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import dmft_jax as dj  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

PROBLEMS = {
    "fig4": dict(h=[0.0, 0.9, 0.0, 1.0 / 6.0], tau=0.3, alpha=0.3, m=16, scale=dict(a0=1.0),
                 t_max=10.0, euler=(100, 200, 400, 800, 1600), trap=(25, 50, 100, 200, 400),
                 rtol=(1e-3, 1e-4, 1e-5), ref=(1600, 3200), euler_ref=(2000, 4000)),
    "lazy": dict(h=[0.0, 0.9, 0.5], tau=0.3, alpha=0.3, m=64, scale=dict(gamma0=1.0),
                 t_max=8.0, euler=(400, 800, 1600), trap=(50, 100, 200, 400, 800),
                 rtol=(1e-3, 1e-4, 1e-5), ref=(1600, 3200), euler_ref=(2000, 4000)),
}


def model_of(p):
    return dj.symmetric_dmft(p["h"], dj.target("same", p["h"]), tau=p["tau"],
                             alpha=p["alpha"], m=p["m"], **p["scale"])


def observables(sol, n=-1) -> np.ndarray:
    return np.array([float(sol.e_ts[n]), float(sol.e_tr[n]), float(sol.a[n])])


def timed(fn, repeats=3):
    """(result, compile + first run seconds, best run seconds)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = first
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return out, first - best, best


def fixed(model, stepper, t_max, steps, chunks=None, repeats=3):
    grid = dj.TimeGrid(t_max / steps, steps)
    return timed(lambda: dj.solve(model, grid, stepper, chunks=chunks), repeats)


def reference(model, stepper, t_max, steps):
    """One untimed solve (the references are the largest runs: no repeats)."""
    return fixed(model, stepper, t_max, steps, chunks=8, repeats=0)[0]


def adaptive(model, t_max, rtol, window_from=256):
    # Any decimation accepted (max_decimation_error = inf), so that the table shows what a
    # decimated history does to the accuracy; its decimation_error column says how coarse.
    ctrl = dj.Adaptive(t_max, rtol=rtol, atol=rtol * 1e-2, max_steps=20_000, history=1024,
                       max_decimation_error=np.inf, window_from=window_from)
    return timed(lambda: dj.solve(model, ctrl))


def windows(name: str) -> str:
    """Run and compile time of the adaptive rows with the history's leading-block windows
    (default, widths 256 and 512 of 1024) and without (one loop over the whole buffer); the
    solutions are the same (checked here to 1e-12)."""
    p = PROBLEMS[name]
    model, t_max = model_of(p), p["t_max"]
    lines = [f"### {name}: adaptive solves with and without history windows", "",
             "| rtol | steps | run, windows 256/512 (s) | run, whole history (s) | "
             "compile, windows (s) | compile, whole (s) |", "|---|---|---|---|---|---|"]
    for rtol in p["rtol"]:
        win, comp_w, best_w = adaptive(model, t_max, rtol)
        whole, comp, best = adaptive(model, t_max, rtol, window_from=1024)
        k = int(whole.stats["accepted"])
        assert int(win.stats["accepted"]) == k
        assert np.allclose(observables(win, k), observables(whole, k), rtol=1e-12, atol=0)
        lines.append(f"| {rtol:g} | {k} | {best_w:.3f} | {best:.3f} | {comp_w:.1f} | "
                     f"{comp:.1f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def run(name: str, quick: bool) -> tuple[str, dict]:
    p = PROBLEMS[name]
    model, t_max = model_of(p), p["t_max"]
    print(f"[{name}] reference ...", flush=True)
    ref_sols = [reference(model, dj.Trapezoid(), t_max, n) for n in p["ref"]]
    r1, r2 = (observables(s) for s in ref_sols)
    ref = r2 + (r2 - r1) / 3.0
    rows, curves = [], {"Euler": [], "Trapezoid": [], "Adaptive": []}
    if not quick:
        e_sols = [reference(model, dj.Euler(), t_max, n) for n in p["euler_ref"]]
        e1, e2 = (observables(s) for s in e_sols)
        euler_ref = 2 * e2 - e1
        cross = np.max(np.abs(euler_ref - ref) / np.abs(ref))
    else:
        cross = np.nan
    for meth, stepper, sizes, n_quick in (("Euler", dj.Euler(), p["euler"], 2),
                                           ("Trapezoid", dj.Trapezoid(), p["trap"], 3)):
        for n in (sizes[:n_quick] if quick else sizes):
            sol, comp, best = fixed(model, stepper, t_max, n)
            err = np.abs(observables(sol) - ref) / np.abs(ref)
            rows.append((meth, f"N = {n}", n, err, best, comp))
            curves[meth].append((best, err.max()))
            print(rows[-1], flush=True)
    for rtol in (p["rtol"][:2] if quick else p["rtol"]):
        sol, comp, best = adaptive(model, t_max, rtol)
        k = int(sol.stats["accepted"])
        err = np.abs(observables(sol, k) - ref) / np.abs(ref)
        dec = (int(sol.stats["decimations"]), float(sol.stats["decimation_error"]))
        rows.append(("Adaptive", f"rtol = {rtol:g} (decimations {dec[0]}, "
                     f"decimation_error {dec[1]:.3g})", k, err, best, comp))
        curves["Adaptive"].append((best, err.max()))
        print(rows[-1], flush=True)
    lines = [f"### {name}: {describe(p)}", "",
             f"Reference: Richardson extrapolation of trapezoid N = {p['ref'][0]}, "
             f"{p['ref'][1]}; Richardson-extrapolated Euler (N = {p['euler_ref'][0]}, "
             f"{p['euler_ref'][1]}) agrees with it to {cross:.2g} relative.", "",
             "| method | setting | steps | rel. err. e_ts | rel. err. e_tr | rel. err. a | "
             "run (s) | compile (s) |", "|---|---|---|---|---|---|---|---|"]
    for meth, setting, steps, err, best, comp in rows:
        lines.append(f"| {meth} | {setting} | {steps} | {err[0]:.2e} | {err[1]:.2e} | "
                     f"{err[2]:.2e} | {best:.3f} | {comp:.1f} |")
    return "\n".join(lines), curves


def describe(p) -> str:
    scale = ", ".join(f"{k} = {v}" for k, v in p["scale"].items())
    return (f"h = {p['h']}, tau = {p['tau']}, alpha = {p['alpha']}, m = {p['m']}, {scale}, "
            f"t = {p['t_max']}")


def figure(curves_by_problem: dict, path: str) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.2 * len(curves_by_problem), 3.6))
    for j, (name, curves) in enumerate(curves_by_problem.items()):
        ax = fig.add_subplot(1, len(curves_by_problem), j + 1)
        for meth, pts in curves.items():
            if pts:
                x, y = zip(*pts)
                ax.loglog(x, y, "o-", label=meth)
        ax.set_xlabel("run time (s, compilation excluded)")
        ax.set_ylabel("max relative error (e_ts, e_tr, a)")
        ax.set_title(name)
        ax.axhline(1e-4, color="0.6", lw=0.8, ls="--")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="all", choices=("fig4", "lazy", "all"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--windows", action="store_true",
                        help="only time the adaptive rows with and without history windows")
    args = parser.parse_args()
    names = ("fig4", "lazy") if args.problem == "all" else (args.problem,)
    header = ("# Integrator accuracy against cost (benchmarks/integrator_accuracy.py)\n\n"
              "Each section: one machine and problem.\n")
    curves = {}
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
               f"{datetime.date.today()}")
    if args.windows:
        for name in names:
            text = windows(name)
            replace_section(os.path.join(HERE, "results", "integrator.md"), "windows",
                            f"{name} {platform.machine()}", f"Machine: {machine}\n\n{text}",
                            header)
            print(text, flush=True)
        return
    for name in names:
        text, curves[name] = run(name, args.quick)
        replace_section(os.path.join(HERE, "results", "integrator.md"), "problem",
                        f"{name} {platform.machine()}",
                        f"Machine: {machine}\n\n{text}", header)
        print(text, flush=True)
    figure(curves, os.path.join(HERE, "figures", "integrator_accuracy.png"))


if __name__ == "__main__":
    main()
