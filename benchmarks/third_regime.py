"""The three lazy regimes at real widths, the third (t ~ m) included (issue 9, "Figures at real
widths").

Setting of `dmft-jax demo` (the paper's Figs. 13-17): single-index target, h = phihat =
0.9 q + q^2/2, tau = 2.5, alpha = 0.3, lazy init gamma0 = 1, where gamma0 = 1 lies below the
interpolation threshold, so that the network interpolates only in the third regime, once
gamma = a / sqrt(m) has grown. Each width is solved by `dj.Adaptive` (rtol 1e-3, atol 1e-5,
`decimation_norm="row"`, the default `max_decimation_error = 1`: a solve whose bounded history
turns coarser than the tolerance stops with `history_too_coarse` instead of returning it; with
the default entry-wise decimation norm m = 64 stops so at t = 220 on 512 stored times, see
`dmft_jax._integrate._interpolation_scores`) up to t = `--t-over-m` m,
and drawn against t m (with the closed form lz1), t (with the Volterra model lz2, m = inf)
and t / m (where the widths should collapse).

Usage: python benchmarks/third_regime.py [--widths 64,256] [--t-over-m 10] [--history 512]
       [--append] [--plot-only]
Writes benchmarks/results/third_regime.npz (the one-time records at 400 log-spaced times per
width), the section `third-regime` of benchmarks/results/integrator.md and
benchmarks/figures/third_regime.png. `--append` keeps the cached runs of the other widths
(a long solve at one more width, e.g. `--widths 1024 --t-over-m 4 --append`).
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
CACHE = os.path.join(HERE, "results", "third_regime.npz")
H, TAU, ALPHA, GAMMA0 = [0.0, 0.9, 0.5], 2.5, 0.3, 1.0
RTOL, ATOL = 1e-3, 1e-5


def solve_width(m: int, t_max: float, history: int) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    model = dj.symmetric_dmft(H, dj.target("same", H), tau=TAU, alpha=ALPHA, m=m, gamma0=GAMMA0)
    ctrl = dj.Adaptive(t_max, rtol=RTOL, atol=ATOL, history=history, max_steps=400_000,
                       decimation_norm="row")
    _, out = solve_records(model, ctrl, f"m={m}", lambda sol, n: {
        key: np.asarray(getattr(sol, key))[:n + 1] for key in ("e_tr", "e_ts", "gamma")})
    out.update(m=m, t_max=t_max)
    t_end, n, wall = out["t_end"], out["steps"], out["wall"]
    print(f"m = {m}: {out['result']} to t = {t_end:.1f} in {wall:.0f} s, "
          f"{n} steps, decimation error {out['decimation_error']:.2f}", flush=True)
    return out


def reduced(t_max: float) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    h, tg = dj.covariance(H), dj.target("same", H)
    one = dj.lz1(h, tg, tau=TAU, alpha=ALPHA, gamma0=GAMMA0, t=np.linspace(0.0, 12.0, 241))
    steps = 800
    two = dj.solve(dj.lz2_model(h, tg, tau=TAU, alpha=ALPHA, gamma0=GAMMA0),
                   dj.TimeGrid(t_max / steps, steps), dj.Trapezoid())
    return dict(lz1_t=np.asarray(one.t), lz1_e=np.asarray(one.e_tr), lz2_t=np.asarray(two.t),
                lz2_e_tr=np.asarray(two.e_tr), lz2_e_ts=np.asarray(two.e_ts))


def figure(runs: list[dict], red: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.6))
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.8, len(runs)))
    for c, r in zip(colors, runs):
        m, t = r["m"], r["t"]
        if r["result"] != "successful":     # say where a stopped solve's curves end
            m_label = f"{m} ({r['result']} at t / m = {r['t_end'] / m:.2g})"
        else:
            m_label = f"{m}"
        for axis, x in ((ax[0], t * m), (ax[1], t), (ax[2], t / m)):
            axis.plot(x, r["e_tr"], color=c, label=f"train, m = {m_label}")
            axis.plot(x, r["e_ts"], "--", color=c, label=f"test, m = {m}")
        ax[3].plot(t / m, r["gamma"], color=c, label=f"m = {m_label}")
    ax[0].plot(red["lz1_t"], red["lz1_e"], "k:", lw=1.5, label="lz1 (train = test)")
    ax[1].plot(red["lz2_t"], red["lz2_e_tr"], "k:", lw=1.5, label="lz2 train")
    ax[1].plot(red["lz2_t"], red["lz2_e_ts"], "k-.", lw=1.0, label="lz2 test")
    ax[0].set(xlim=(0, 12), xlabel="t m", ylabel="error", title="1: t ~ 1/m")
    ax[1].set(xscale="log", xlim=(1e-2, red["lz2_t"][-1]), yscale="log", xlabel="t",
              title="2: t ~ 1 (lz2 = m -> inf)")
    ax[2].set(xscale="log", yscale="log", xlim=(1e-2, None), xlabel="t / m",
              title="3: t ~ m: train -> 0, test rises")
    ax[3].set(xscale="log", xlim=(1e-3, None), xlabel="t / m", ylabel=r"$\gamma = a/\sqrt{m}$",
              title="3: gamma grows on t ~ m")
    finish_figure(fig, ax, r"SymmDMFT, lazy $\gamma_0 = 1$, $h = \hat\varphi = 0.9q + q^2/2$, "
                  rf"$\tau = {TAU}$, $\alpha = {ALPHA}$; adaptive, rtol {RTOL:g}, bounded "
                  "history", path)


def report(runs: list[dict], history: int) -> str:
    lines = [f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores (shared); "
             f"{time.strftime('%Y-%m-%d')}. `dj.Adaptive(t_max, rtol={RTOL:g}, "
             f"atol={ATOL:g}, history={history}, decimation_norm=\"row\")`, default "
             "`max_decimation_error = 1`.", "",
             "| m | t_max | result | t reached | steps | last step | decimations (largest error) "
             "| run (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['m']} | {r['t_max'] / r['m']:g} m | {r['result']} | "
                     f"{r['t_end']:.1f} | {r['steps']} | {r['last_step']:.4f} | "
                     f"{r['decimations']} ({r['decimation_error']:.2f}) | {r['wall']:.0f} |")
    lines += t_over_m_table(runs, [("gamma", "gamma", "{:.4f}"), ("e_tr", "e_tr", "{:.3e}"),
                                   ("e_ts", "e_ts", "{:.4f}")], [0.1, 0.5, 1.0, 2.0, 4.0, 8.0])
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="64,256")
    p.add_argument("--t-over-m", type=float, default=10.0)
    p.add_argument("--history", type=int, default=512)
    p.add_argument("--append", action="store_true",
                   help="keep the cached runs of widths not solved now")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw the figure and the report from the cached records")
    args = p.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    cached = list(np.load(CACHE, allow_pickle=True)["runs"]) if (
        args.plot_only or args.append) else []
    if args.plot_only:
        runs = cached
    else:
        runs = [r for r in cached if r["m"] not in widths]
        for m in widths:
            runs.append(solve_width(m, args.t_over_m * m, args.history))
            runs.sort(key=lambda r: r["m"])
            np.savez(CACHE, runs=np.array(runs, dtype=object))
    red = reduced(10.0)
    figure(runs, red, os.path.join(HERE, "figures", "third_regime.png"))
    text = report(runs, args.history)
    print(text)
    replace_section(os.path.join(HERE, "results", "integrator.md"), "section", "third-regime",
                    text, "# Integrator benchmarks\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
