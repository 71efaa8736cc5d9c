"""The interpolation threshold without a range (issue 9, "Threshold"), and a reference.

The judged command is `dmft-jax threshold --h fig8 --tau 1 --a 1 --m inf` (H.2: pure noise,
tau = 1, h = 0.3 q + q^2/2, a = 1, m = infinity, alpha_bar scanned; no --range). This script

1. runs that command (defaults dt = 0.2, 2000 steps; and with `--dt 0.1`, half the horizon
   at the same cost) as a user would, each its own process: wall time, the fit, its
   late-window fit, the points;
2. computes a reference with other numerics: t_rel at `--values` over a longer horizon, at
   two steps dt and 2 dt, Richardson-extrapolated in dt (Euler: t_rel(dt) = t_rel(0) + O(dt),
   measured: t_rel(0.9) = 83.49, 84.33, 85.86 at dt = 0.1, 0.2, 0.4), then the same
   divergence fit, over all of them and over the slowest ones. Its values are chosen (default
   `--values`) where the default command's fit puts t_rel between ~150 and ~500.

Usage: python benchmarks/threshold_auto.py [--skip-cli] [--values 1.0,1.05,...]
       [--dt 0.2] [--steps 4000]
Writes the section `threshold` of benchmarks/results/reduced.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
COMMAND = ["dmft-jax", "threshold", "--h", "fig8", "--tau", "1", "--a", "1", "--m", "inf"]


def cli(extra: list[str]) -> dict:
    """One run of the judged command (plus `extra` flags): its JSON line and wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(COMMAND + extra, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(COMMAND + extra)} failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(out, wall=wall, command=" ".join(COMMAND + extra))


def reference(values: list[float], dt: float, steps: int) -> dict:
    """t_rel at `values` over dt * steps, at dt and 2 dt (steps / 2), extrapolated in dt."""
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    runs = {}
    for step, n in ((dt, steps), (2 * dt, steps // 2)):
        t0 = time.perf_counter()
        _, _, t_rel = dj.relaxation_scan([0.0, 0.3, 0.5], parameter="alpha_bar", values=values,
                                         a=1.0, dt=step, steps=n, chunks=8, batch=2)
        runs[step] = (np.asarray(t_rel), time.perf_counter() - t0)
        print(f"dt = {step:g}: t_rel = {runs[step][0]} ({runs[step][1]:.0f} s)", flush=True)
    fine, coarse = runs[dt][0], runs[2 * dt][0]
    extrapolated = 2 * fine - coarse
    ok = np.isfinite(extrapolated)
    fit = dj.fit_divergence(np.asarray(values)[ok], extrapolated[ok], side=1)
    late = dj.late_fit(np.asarray(values), extrapolated, "alpha_bar")
    return dict(values=values, fine=fine.tolist(), coarse=coarse.tolist(),
                extrapolated=extrapolated.tolist(), fit=fit, late=late, dt=dt, steps=steps,
                seconds=sum(r[1] for r in runs.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cli", action="store_true")
    # t_rel ~ 150 ... 500 by the default command's fit (1.190, nu 2.08, c 6.4)
    parser.add_argument("--values", default="0.97,1.0,1.03,1.05,1.065")
    parser.add_argument("--dt", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    lines = [f"Written by `benchmarks/threshold_auto.py` on {platform.node()} "
             f"({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}.", ""]
    if not args.skip_cli:
        lines += ["| command | wall (s) | solves | alpha_bar* | exponent | late fit (t_rel >= "
                  "max/3) | t_rel of the points |", "|---|---|---|---|---|---|---|"]
        for extra in ([], ["--dt", "0.1"]):
            r = cli(extra)
            t_rel = [p[1] for p in r["points"]]
            lines.append(
                f"| `{r['command']}` | {r['wall']:.0f} | {r['solves']} | "
                f"{r['threshold']:.4f} +- {r['threshold_err']:.4f} | "
                f"{r['exponent']:.3f} +- {r['exponent_err']:.3f} | "
                f"{r['late_threshold']:.4f}, {r['late_exponent']:.3f} | "
                f"{min(t_rel):.0f} ... {max(t_rel):.0f} ({len(t_rel)} points) |")
            print(lines[-1], flush=True)
        lines.append("")
    values = [float(v) for v in args.values.split(",")]
    ref = reference(values, args.dt, args.steps)
    fit, late = ref["fit"], ref["late"]
    lines += [f"Reference: H.2 over t = {args.dt * args.steps:g} at dt = {args.dt:g} and "
              f"{2 * args.dt:g}, t_rel extrapolated in dt ({ref['seconds']:.0f} s):", "",
              "| alpha_bar | t_rel (dt) | t_rel (2 dt) | extrapolated |", "|---|---|---|---|"]
    for x, a, b, c in zip(values, ref["fine"], ref["coarse"], ref["extrapolated"]):
        lines.append(f"| {x:g} | {a:.2f} | {b:.2f} | {c:.2f} |")
    lines += ["", f"Fit of the extrapolated t_rel: alpha_bar* = {fit['threshold']:.4f} +- "
              f"{fit['threshold_err']:.4f}, exponent {fit['exponent']:.3f} +- "
              f"{fit['exponent_err']:.3f}; late fit (t_rel >= max/3): "
              + (f"{late['late_threshold']:.4f}, {late['late_exponent']:.3f}."
                 if late["late_threshold"] is not None else "not available.")]
    text = "\n".join(lines)
    print(text)
    replace_section(os.path.join(HERE, "results", "reduced.md"), "threshold", "auto",
                    "## Threshold without a range (issue 9)\n\n" + text, "")


if __name__ == "__main__":
    main()
