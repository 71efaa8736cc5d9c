"""Does the Gaussian DMFT's error shrink with the width m, at what rate, and does the
non-Gaussian DMFT close it? (issue 10, item 7)

Fig. 4 setting (h = phihat = 0.9 q + q^3/6, tau = 0.3, alpha = 0.3, a_i(0) = 1, w_i(0) on the
sphere), t <= 2, widths `--ms` (default 4 8 16 32):

- networks: full-batch projected GD (dt = lr d / n = 0.01) at each `--ds` (default 1000 2000),
  `--seeds` each (the d dependence: finite-d effects must be below the error bars);
- the Gaussian DMFT (`dmft-jax solve --init`, Euler, dt = `--dt-gauss`, default 0.01);
- the non-Gaussian DMFT (`dmft-jax solve --theory nongaussian`, Euler, dt = `--dt`,
  `--draws`; the causal pass, which solves as many replicas at a time as fit in memory, or the
  fixed-point method with draws in batches from `--fixed-point-from` on; the cached m = 16
  point was computed with the fixed point, whose fixed point is the pass's solution for the
  same draws).

For each m and observable (e_tr, e_ts) at t = 1 and 2: the differences theory - networks (at
the largest d), with combined standard errors, and a log-log fit of |Gaussian - networks|
against m. Writes the section `study` of benchmarks/results/nongaussian.md and the figure
benchmarks/figures/nongaussian_study.png.

Each width's results are kept in `--cache` (default benchmarks/results/nongaussian_study.pkl,
not in git):
a later run with other `--ms` adds to them (per-width settings are recorded), and the report
covers every cached width.

Usage: python benchmarks/nongaussian_study.py [--ms 4 8 16 32] [--ds 1000 2000] [--seeds 20]
       [--draws 8000] [--dt 0.1] [--dt-gauss 0.01] [--fixed-point-from 64] [--cache FILE]
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section  # noqa: E402
from nongaussian_agreement import SETTINGS, at, cli, networks  # noqa: E402

TIMES = (1.0, 2.0)
NAMES = ("e_tr", "e_ts")
HERE = os.path.dirname(__file__)


def solve(setting, m, dt, extra, tmp, name):
    """One `dmft-jax solve` of the Fig. 4 setting at width m; returns (npz dict, seconds)."""
    init = os.path.join(tmp, f"init{m}.npz")
    np.savez(init, a=np.ones(m), C=np.eye(m))
    out = os.path.join(tmp, f"{name}{m}.npz")
    t0 = time.perf_counter()
    cli(["--h", ",".join(repr(c) for c in setting["h"]), "--target", "same",
         "--tau", str(setting["tau"]), "--alpha", str(setting["alpha"]), "--m", str(m),
         "--init", init, "--dt", str(dt), "--steps", str(int(round(2.0 / dt))),
         "--out", out] + extra)
    return dict(np.load(out)), time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ms", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--ds", type=int, nargs="+", default=[1000, 2000])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--draws", type=int, default=8000)
    p.add_argument("--dt", type=float, default=0.1)
    p.add_argument("--dt-gauss", type=float, default=0.01)
    p.add_argument("--fixed-point-from", type=int, default=64,
                   help="use --method fixed-point (batches of 250) from this width on")
    p.add_argument("--out", default=os.path.join(HERE, "results", "nongaussian.md"))
    p.add_argument("--cache", default=os.path.join(HERE, "results", "nongaussian_study.pkl"))
    args = p.parse_args(argv)
    setting = SETTINGS["fig4"]
    res, timing = {}, {}
    if os.path.exists(args.cache):
        with open(args.cache, "rb") as f:
            res, timing = pickle.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.ms:
            t0 = time.perf_counter()
            nets = {d: networks(setting, m, d, args.seeds, 0.01, 2.0)[0] for d in args.ds}
            timing[(m, "networks")] = time.perf_counter() - t0
            g, timing[(m, "gaussian")] = solve(setting, m, args.dt_gauss, [], tmp, "g")
            fp = m >= args.fixed_point_from
            extra = ["--theory", "nongaussian", "--draws", str(args.draws), "--seed", "0"]
            if fp:
                extra += ["--method", "fixed-point", "--batch", "250"]
            ng, timing[(m, "nongaussian")] = solve(setting, m, args.dt, extra, tmp, "ng")
            keep = ("t", "e_tr", "e_ts", "e_tr_se", "e_ts_se")
            g = {k: g[k] for k in keep if k in g}
            ng = {k: ng[k] for k in keep}
            res[m] = dict(nets=nets, g=g, ng=ng, fp=fp, ds=list(args.ds), seeds=args.seeds,
                          draws=args.draws, dt=args.dt, dt_gauss=args.dt_gauss)
            with open(args.cache, "wb") as f:
                pickle.dump((res, timing), f)
            print(f"m = {m} done: " + ", ".join(f"{k[1]} {v:.0f} s" for k, v in timing.items()
                                                  if k[0] == m), flush=True)
    res = dict(sorted(res.items()))
    ds = sorted({d for r in res.values() for d in r["ds"]})
    lines = ["## Study: the Gaussian DMFT's error against m, and the non-Gaussian DMFT", "",
             "Fig. 4 setting; networks under full-batch projected GD (dt = 0.01) at the d "
             "listed; per width: " + "; ".join(
                 f"m = {m}: d = {', '.join(map(str, r['ds']))} x {r['seeds']} seeds, Gaussian "
                 f"DMFT Euler dt = {r['dt_gauss']:g}, non-Gaussian DMFT Euler dt = {r['dt']:g} "
                 f"with {r['draws']} draws ({'fixed-point method, batches of 250' if r['fp'] else 'causal pass'})"
                 for m, r in res.items())
             + ". Differences are taken to the networks at the largest d of each width. "
             "Cells: value (se).", ""]
    fits = {}
    for name in NAMES:
        for t in TIMES:
            lines += [f"**{name}(t = {t:g})**", "",
                      "| m | " + " | ".join(f"networks d = {d}" for d in ds)
                      + " | Gaussian | non-Gaussian | Gaussian - net | non-Gaussian - net |",
                      "|---|" + "---|" * (len(ds) + 4)]
            gaps = []
            for m, r in res.items():
                net = [r["nets"][d][name][TIMES.index(t) + 1] if d in r["nets"] else None
                       for d in ds]
                x_net, s_net = r["nets"][max(r["ds"])][name][TIMES.index(t) + 1]
                g = at(r["g"]["t"], r["g"][name], t)
                ng = at(r["ng"]["t"], r["ng"][name], t)
                s_ng = at(r["ng"]["t"], r["ng"][name + "_se"], t)
                gaps.append((m, g - x_net, s_net))
                lines.append(f"| {m} | " + " | ".join("" if c is None else f"{c[0]:.4f} ({c[1]:.4f})"
                                                      for c in net)
                             + f" | {g:.4f} | {ng:.4f} ({s_ng:.4f}) | {g - x_net:+.4f} "
                             f"({s_net:.4f}) | {ng - x_net:+.4f} ({np.hypot(s_ng, s_net):.4f}) |")
            ms = np.array([m for m, _, _ in gaps], float)
            dg = np.abs(np.array([x for _, x, _ in gaps]))
            ok = dg > 0
            slope = np.polyfit(np.log(ms[ok]), np.log(dg[ok]), 1)[0] if ok.sum() >= 2 else np.nan
            fits[(name, t)] = slope
            lines += ["", f"log-log slope of |Gaussian - networks| against m: {slope:.2f}", ""]
    lines += ["Wall times (s, 2-core CPU, with compilation): "
              + ", ".join(f"m = {m} {k} {v:.0f}" for (m, k), v in timing.items()), ""]
    text = "\n".join(lines)
    print(text)
    replace_section(args.out, "nongaussian", "study", text, "")
    _figure(res)


def _figure(res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(res)))
    for c, (m, r) in zip(colors, res.items()):
        for ax, name in zip(axes[:2], NAMES):
            ax.plot(r["g"]["t"], r["g"][name], "--", color=c, lw=1)
            ax.plot(r["ng"]["t"], r["ng"][name], "-", color=c, lw=1.5, label=f"m = {m}")
            ax.fill_between(r["ng"]["t"], r["ng"][name] - r["ng"][name + "_se"],
                            r["ng"][name] + r["ng"][name + "_se"], color=c, alpha=0.2)
            x = np.array([v for v, _ in r["nets"][max(r["ds"])][name]])
            s = np.array([v for _, v in r["nets"][max(r["ds"])][name]])
            ax.errorbar((0.5, 1.0, 2.0), x, yerr=s, fmt="o", color=c, ms=4)
    for ax, name in zip(axes[:2], NAMES):
        ax.set_xlabel("t")
        ax.set_title(f"{name}: networks (dots, largest d), Gaussian (dashed), "
                     "non-Gaussian (band)", fontsize=8)
    axes[0].legend(fontsize=8)
    ms = np.array(list(res), float)
    for name, mk in zip(NAMES, "os"):
        i = 3                                   # t = 2 in the networks' record (0, .5, 1, 2)
        net = np.array([res[m]["nets"][max(res[m]["ds"])][name][i - 1][0] for m in res])
        g = np.array([at(res[m]["g"]["t"], res[m]["g"][name], 2.0) for m in res])
        ng = np.array([at(res[m]["ng"]["t"], res[m]["ng"][name], 2.0) for m in res])
        axes[2].loglog(ms, np.abs(g - net), mk + "--", label=f"|Gaussian - net| {name}")
        axes[2].loglog(ms, np.abs(ng - net), mk + "-", label=f"|non-Gaussian - net| {name}")
    axes[2].set_xlabel("m")
    axes[2].set_title("errors at t = 2", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(HERE, "figures", "nongaussian_study.png")
    fig.savefig(path, dpi=120)
    print("wrote", path)


if __name__ == "__main__":
    main()
