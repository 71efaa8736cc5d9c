"""The mean-field regimes of Figs. 4-5 at real widths: a / sqrt(m) against t / m (issue 9,
"Figures at real widths").

Setting of the paper's Fig. 5: single-index target, h = phihat = 0.9 q + q^3/6, tau = 0.6,
alpha = 0.3, mean-field init a(0) = 1. Spec section 8 expects two regimes: t ~ 1, feature
learning (a -> 1, v -> 1, train = test -> the Bayes error tau^2 / 2, the mean-field ODEs
[2.10, G.44]), then t ~ m, "feature unlearning": a ~ sqrt(m), v ~ 1 / sqrt(m), the train error
-> 0 and the test error rising, the widths collapsing against t / m.

Each width is solved by `dj.Adaptive` (rtol `--rtol`, atol = rtol / 100, `history` stored
times) up to t = `--t-over-m` m, and once more at 10 rtol (`--no-check` skips it): the table
reports both, with the largest change of a / sqrt(m) and e_ts between them over t / m in
[0.1, t_max / m], so the reader can see the figure does not depend on the tolerance. The history
check is off (`max_decimation_error = inf`, its largest score reported): by the entry-wise
check these histories are coarser than rtol 1e-4 at every width (scores up to ~20), and the
tolerance change is the test that matters here. The onset of the second regime is read as the
first time the train error falls below tau^2 / 4 (half the Bayes error).

Usage: python benchmarks/meanfield_regimes.py [--widths 64,256,512,1024] [--t-over-m 10]
       [--rtol 1e-4] [--history 512] [--no-check] [--plot-only]
Writes benchmarks/results/meanfield_regimes.npz (the records at 400 log-spaced times per
solve), the section `meanfield-regimes` of benchmarks/results/integrator.md and
benchmarks/figures/meanfield_regimes.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _report import finish_figure, replace_section, solve_records, t_over_m_table  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, "results", "meanfield_regimes.npz")
H, TAU, ALPHA, A0 = [0.0, 0.9, 0.0, 1.0 / 6.0], 0.6, 0.3, 1.0


def solve_width(m: int, t_max: float, rtol: float, history: int) -> dict:
    """One adaptive solve; its records resampled at t = 0 and 399 log-spaced times."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    model = dj.symmetric_dmft(H, dj.target("same", H), tau=TAU, alpha=ALPHA, m=m, a0=A0)
    ctrl = dj.Adaptive(t_max, rtol=rtol, atol=rtol * 1e-2, history=history, max_steps=200_000,
                       max_decimation_error=np.inf)
    raw, out = solve_records(model, ctrl, f"m={m}, rtol {rtol:g}", lambda sol, n: dict(
        a=np.asarray(sol.a)[:n + 1], e_tr=np.asarray(sol.e_tr)[:n + 1],
        e_ts=np.asarray(sol.e_ts)[:n + 1], v=np.asarray(sol.v)[:n + 1, 0],
        C_o=np.asarray(sol.C_tt)[:n + 1, 1]))
    t, n, wall = raw["t"], out["steps"], out["wall"]
    below = np.nonzero(raw["e_tr"] < TAU**2 / 4)[0]
    out.update(m=m, rtol=rtol, onset=float(t[below[0]]) if below.size else float("nan"))
    print(f"m = {m}, rtol {rtol:g}: {out['result']} to t = {t[-1]:.1f} in {wall:.0f} s, "
          f"{n} steps; e_tr < tau^2/4 from t = {out['onset']:.1f}", flush=True)
    return out


def ode(t_max: float) -> dict:
    """The mean-field ODEs [2.10, G.44] (m -> infinity at t = O(1))."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    steps = 4000
    sol = dj.solve(dj.mean_field_model(H, dj.target("same", H), tau=TAU, alpha=ALPHA, a0=A0),
                   dj.TimeGrid(t_max / steps, steps), dj.Trapezoid())
    return dict(t=np.asarray(sol.t), a=np.asarray(sol.a), e_tr=np.asarray(sol.e_tr))


def finest(runs: list[dict]) -> list[dict]:
    """The run at the finest tolerance of each width."""
    return [r for r in runs if r["rtol"] == min(s["rtol"] for s in runs if s["m"] == r["m"])]


def change(r: dict, s: dict, key: str, scale: float = 1.0) -> float:
    """Largest |r - s| of record `key` (times `scale`) over t / m in [0.1, end]."""
    m = r["m"]
    x = np.geomspace(0.1 * m, min(r["t"][-1], s["t"][-1]), 200)
    return float(np.max(np.abs(np.interp(x, r["t"], r[key]) - np.interp(x, s["t"], s[key]))
                        * scale))


def figure(runs: list[dict], mf: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 5, figsize=(23, 4.6))
    main = finest(runs)
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(main)))
    for c, r in zip(colors, main):
        m, t = r["m"], r["t"]
        ax[0].plot(t, r["a"], color=c, label=f"m = {m}")
        ax[1].plot(t / m, r["a"] / np.sqrt(m), color=c, label=f"m = {m}")
        ax[2].plot(t / m, r["v"], color=c, label=f"v, m = {m}")
        ax[2].plot(t / m, r["C_o"], ":", color=c, label=f"C_o(t, t), m = {m}")
        ax[3].plot(t / m, r["e_tr"], color=c, label=f"train, m = {m}")
        ax[3].plot(t / m, r["e_ts"], "--", color=c, label=f"test, m = {m}")
        ax[4].plot(r["a"] / np.sqrt(m), r["e_ts"] - r["e_tr"], color=c, label=f"m = {m}")
    ax[0].plot(mf["t"], mf["a"], "k:", lw=1.5, label="mean-field ODE [G.44]")
    ax[0].set(xscale="log", xlim=(1e-2, None), yscale="log", xlabel="t", ylabel="a",
              title="1: t ~ 1, feature learning")
    ax[1].set(xscale="log", xlim=(1e-3, None), xlabel="t / m", ylabel=r"$a/\sqrt{m}$",
              title="2: t ~ m, a ~ sqrt(m)?")
    ax[2].set(xscale="log", xlim=(1e-3, None), xlabel="t / m",
              title="overlap v and neuron overlap C_o(t, t)")
    ax[3].axhline(TAU**2 / 2, color="gray", lw=0.8)
    ax[3].set(xscale="log", yscale="log", xlim=(1e-3, None), xlabel="t / m", ylabel="error",
              title="train (solid), test (dashed); gray: Bayes tau^2/2")
    ax[4].set(xlabel=r"$a/\sqrt{m}$", ylabel="test - train", title="gap against a / sqrt(m)")
    finish_figure(fig, ax, r"SymmDMFT, mean-field init $a(0) = 1$, $h = \hat\varphi = 0.9q + "
                  rf"q^3/6$, $\tau = {TAU}$, $\alpha = {ALPHA}$ (Fig. 5); adaptive, bounded "
                  "history", path, legend_size=6, dpi=100)


def report(runs: list[dict], history: int, t_over_m: float) -> str:
    lines = [f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores (shared); "
             f"{time.strftime('%Y-%m-%d')}. `benchmarks/meanfield_regimes.py`: "
             f"`dj.Adaptive(t_max = {t_over_m:g} m, rtol, atol = rtol / 100, "
             f"history={history}, max_decimation_error=inf)`. Onset: first t with "
             "e_tr < tau^2 / 4. Change: largest |difference| from the solve at the other "
             "tolerance over t / m in [0.1, t_max / m].", "",
             "| m | rtol | result | t reached | steps | decimations (largest score) "
             "| run, with compilation (s) "
             "| onset t (t / m) | change of a / sqrt(m), e_ts |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        other = [s for s in runs if s["m"] == r["m"] and s["rtol"] != r["rtol"]]
        diff = (f"{change(r, other[0], 'a', 1 / np.sqrt(r['m'])):.1e}, "
                f"{change(r, other[0], 'e_ts'):.1e}" if other else "-")
        onset = (f"{r['onset']:.0f} ({r['onset'] / r['m']:.2f})" if np.isfinite(r["onset"])
                 else f"none by {r['t_end'] / r['m']:.3g} m")
        lines.append(f"| {r['m']} | {r['rtol']:g} | {r['result']} | {r['t_end']:.0f} | "
                     f"{r['steps']} | {r['decimations']} ({r['decimation_error']:.2g}) | "
                     f"{r['wall']:.0f} | {onset} | {diff} |")
    lines += t_over_m_table(finest(runs), [
        ("a / sqrt(m)", "a", "{:.4f}", lambda r: 1 / np.sqrt(r["m"])), ("v", "v", "{:.4f}"),
        ("e_tr", "e_tr", "{:.3e}"), ("e_ts", "e_ts", "{:.4f}")],
        [0.1, 0.5, 1.0, 2.0, 4.0, 10.0], " (the finer tolerance)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="64,256,512,1024")
    p.add_argument("--t-over-m", type=float, default=10.0)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--history", type=int, default=512)
    p.add_argument("--no-check", action="store_true", help="skip the solves at rtol * 10")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw the figure and the report from the cached records")
    args = p.parse_args(argv)
    runs = []
    if args.plot_only:
        runs = list(np.load(CACHE, allow_pickle=True)["runs"])
    else:
        for m in (int(w) for w in args.widths.split(",")):
            tols = [args.rtol] if args.no_check else [10 * args.rtol, args.rtol]
            for rtol in tols:
                runs.append(solve_width(m, args.t_over_m * m, rtol, args.history))
                np.savez(CACHE, runs=np.array(runs, dtype=object))
    figure(runs, ode(100.0), os.path.join(HERE, "figures", "meanfield_regimes.png"))
    text = report(runs, args.history, args.t_over_m)
    print(text)
    replace_section(os.path.join(HERE, "results", "integrator.md"), "section",
                    "meanfield-regimes", text, "# Integrator benchmarks\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
