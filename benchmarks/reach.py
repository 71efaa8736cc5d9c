"""Reach of the adaptive solver at large width (issue 9, "Reach (benchmark, 2-core CPU)").

The judged target: in the lazy Fig. 3 setting (h = phihat = 0.9 q + q^2/2, tau = 0.3,
alpha = 0.3, gamma0 = 1) at m = 1024, integrate from t = 0 to t = 1e4 in <= 10 minutes and
<= 2 GB; the same for the mean-field Fig. 5 setting (h = phihat = 0.9 q + q^3/6, tau = 0.6,
alpha = 0.3, a(0) = 1) up to t = 10 m. This script measures how far `dj.solve` with
`dj.Adaptive` (the trapezoid/ETD2 stepper, bounded history) gets: every configuration is its
own process (peak resident memory from the operating system), with `max_steps` bounding the
work; it records the result code, the time reached, accepted and rejected steps, the last step
sizes, the decimations and their interpolation error (`max_decimation_error = inf`: decimation
is allowed, its error reported), e_tr and e_ts at the last accepted time, run and compile time.

With `--tenfold`, every configuration is solved again at rtol / 10 (and atol / 10), and the
largest relative change of e_ts, a and e_tr between the two solves is reported, read at 40
log-spaced times in [1, t_reached] by linear interpolation of the one-time records (kept at
every accepted step); for e_tr, relative to max(|e_tr|, 1e3 atol), since near interpolation
e_tr falls to the absolute tolerance's floor (issue 9: "observables change by <= 1e-3
relative when the tolerance is divided by 10").

Usage: python benchmarks/reach.py [--configs lazy:256:100:512 ...] [--rtol 1e-4] [--tenfold]
       [--tenfold-up-to T] [--fit-ends]
Configurations `setting:m:t_max:history[:max_steps]`. Writes the section `reach` of
benchmarks/results/integrator.md (`reach-fitted` with `--fit-ends`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section, result_name  # noqa: E402

SETTINGS = {
    "lazy": dict(h=[0.0, 0.9, 0.5], tau=0.3, alpha=0.3, scale=dict(gamma0=1.0)),
    "meanfield": dict(h=[0.0, 0.9, 0.0, 1.0 / 6.0], tau=0.6, alpha=0.3, scale=dict(a0=1.0)),
}
DEFAULT = ["lazy:64:64:512", "lazy:256:100:512", "lazy:256:100:2048", "lazy:1024:100:512:20000",
           "meanfield:64:640:512:20000", "meanfield:256:2560:512:20000"]


def child(spec: str, rtol: float, series: str | None = None, fit_ends: bool = False) -> dict:
    """One configuration, in this process (called by the parent through a subprocess); the
    one-time records of the accepted steps go to the .npz `series` if given."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    parts = spec.split(":")
    name, m, t_max, history = parts[0], int(parts[1]), float(parts[2]), int(parts[3])
    max_steps = int(parts[4]) if len(parts) > 4 else 20000
    p = SETTINGS[name]
    model = dj.symmetric_dmft(p["h"], dj.target("same", p["h"]), tau=p["tau"],
                              alpha=p["alpha"], m=m, fit_ends=fit_ends, **p["scale"])
    ctrl = dj.Adaptive(t_max, rtol=rtol, atol=rtol * 1e-2, history=history,
                       max_steps=max_steps, max_decimation_error=np.inf)
    # compile with a two-step horizon (t_max and dt0 are traced: the same program), then run
    warm = dj.Adaptive(2 * float(ctrl.dt0), rtol=rtol, atol=rtol * 1e-2, dt0=float(ctrl.dt0),
                       history=history, max_steps=max_steps, max_decimation_error=np.inf)
    t0 = time.perf_counter()
    jax.block_until_ready(dj.solve(model, warm, throw=False).t)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol = dj.solve(model, ctrl, throw=False)
    jax.block_until_ready(sol.t)
    run = time.perf_counter() - t0
    n = int(sol.stats["accepted"])
    t = np.asarray(sol.t)[:n + 1]
    steps = np.diff(t)
    if series:
        np.savez(series, t=t, **{k: np.asarray(getattr(sol, k))[:n + 1]
                                 for k in ("e_ts", "a", "e_tr")})
    return dict(spec=spec, m=m, t_max=t_max, history=history, max_steps=max_steps,
                result=result_name(sol),
                t_reached=float(t[-1]), accepted=n, rejected=int(sol.stats["rejected"]),
                decimations=int(sol.stats["decimations"]),
                decimation_error=float(sol.stats["decimation_error"]),
                last_step=float(steps[-1]) if steps.size else float("nan"),
                e_tr=float(np.asarray(sol.e_tr)[n]), e_ts=float(np.asarray(sol.e_ts)[n]),
                run_s=run, compile_s=compile_s)


def parent(spec: str, rtol: float, series: str | None = None, fit_ends: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", spec, "--rtol", repr(rtol)]
    if fit_ends:
        cmd += ["--fit-ends"]
    if series:
        cmd += ["--series", series]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    lines = out.strip().splitlines()
    row = json.loads(lines[-1]) if lines and os.waitstatus_to_exitcode(status) == 0 else dict(
        spec=spec, result="crashed: " + err.strip()[-120:])
    row.update(peak_gb=usage.ru_maxrss / 1e6, process_s=time.perf_counter() - t0)
    return row


def tenfold_change(paths: list[str], atol: float) -> list[float]:
    """Largest relative change of (e_ts, a, e_tr) between the solves at rtol and rtol / 10,
    at 40 log-spaced times in [1, t] (t the shorter of the two solves' last times)."""
    base, tenth = (np.load(p) for p in paths)
    t_end = min(base["t"][-1], tenth["t"][-1])
    times = np.geomspace(1.0, t_end, 40)
    out = []
    for name in ("e_ts", "a", "e_tr"):
        x = np.interp(times, base["t"], base[name])
        y = np.interp(times, tenth["t"], tenth[name])
        floor = 1e3 * atol if name == "e_tr" else 0.0
        out.append(float(np.max(np.abs(x - y) / np.maximum(np.abs(y), floor))))
    return out


def _tenfold_cell(r: dict) -> str:
    if "tenth_result" not in r:
        return " not run |"
    if r.get("change") is None:
        return f" {r.get('tenth_result', '')} |"
    steps = str(r["tenth_accepted"])
    if r.get("tenth_result") != "successful":        # compared over the time both reached
        steps += f" ({r.get('tenth_result')})"
    return (f" {steps}, {r['tenth_run_s']:.0f}, "
            + ", ".join(f"{c:.1e}" for c in r["change"]) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=DEFAULT)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--tenfold", action="store_true",
                   help="also solve at rtol/10 and report the largest relative change")
    p.add_argument("--tenfold-up-to", type=float, default=np.inf,
                   help="with --tenfold: only for configurations with t_max <= this")
    p.add_argument("--fit-ends", action="store_true",
                   help="solve with the fitted diagonal ends (symmetric_dmft(fit_ends=True)); "
                        "writes the section `reach-fitted`")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--series", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "integrator.md"))
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.rtol, args.series, args.fit_ends)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="reach_") as tmp:     # the rtol/10 series
        for i, spec in enumerate(args.configs):
            paths = [os.path.join(tmp, f"{i}_{k}.npz") for k in ("base", "tenth")]
            tenfold = args.tenfold and float(spec.split(":")[2]) <= args.tenfold_up_to
            r = parent(spec, args.rtol, paths[0] if tenfold else None, args.fit_ends)
            if tenfold and "t_reached" in r:
                fine = parent(spec, args.rtol / 10, paths[1], args.fit_ends)
                r.update(tenth_result=fine.get("result"), tenth_run_s=fine.get("run_s"),
                         tenth_accepted=fine.get("accepted"),
                         change=tenfold_change(paths, args.rtol * 1e-2)
                         if "t_reached" in fine else None)
            rows.append(r)
            print(json.dumps(r), flush=True)
    head = ("| setting | m | t_max | history | result | t reached | accepted | rejected | last "
            "step | decimations | decimation error | e_tr | e_ts | run (s) | compile (s) | "
            "peak (GB) |")
    if args.tenfold:
        head += " rtol/10: steps, run (s), largest change (e_ts, a, e_tr) |"

    title = "## Reach of the adaptive solver (issue 9)"
    if args.fit_ends:
        title += ", with the fitted diagonal ends (`fit_ends=True`)"
    lines = [title, "",
             f"Written by `benchmarks/reach.py` on {platform.node()} ({os.cpu_count()} CPUs), "
             f"{time.strftime('%Y-%m-%d')}. `dj.Adaptive(t_max, rtol={args.rtol:g}, atol="
             f"{args.rtol * 1e-2:g}, history, max_steps, max_decimation_error=inf)` with the "
             "default stepper, symmetric DMFT; lazy = Fig. 3 (h = phihat = 0.9 q + q^2/2, "
             "tau 0.3, alpha 0.3, gamma0 = 1), meanfield = Fig. 5 (h = phihat = 0.9 q + q^3/6, "
             "tau 0.6, alpha 0.3, a(0) = 1). Each configuration is its own process; run time "
             "excludes compilation. The decimation error is the largest interpolation error "
             "of a dropped time in units of the tolerance.", "", head,
             "|" + "---|" * (17 if args.tenfold else 16)]
    for r in rows:
        if "t_reached" not in r:
            lines.append(f"| {r['spec']} | | | | {r['result']} |" + " |" * 11)
            continue
        name = r["spec"].split(":")[0]
        lines.append(
            f"| {name} | {r['m']} | {r['t_max']:g} | {r['history']} | {r['result']} | "
            f"{r['t_reached']:.4g} | {r['accepted']} | {r['rejected']} | {r['last_step']:.3g} "
            f"| {r['decimations']} | {r['decimation_error']:.3g} | {r['e_tr']:.4g} | "
            f"{r['e_ts']:.4g} | {r['run_s']:.1f} | {r['compile_s']:.1f} | "
            f"{r['peak_gb']:.2f} |" + (_tenfold_cell(r) if args.tenfold else ""))
    text = "\n".join(lines) + "\n"
    print(text)
    section = "reach-fitted" if args.fit_ends else "reach"
    replace_section(args.out, "problem", section, text, "")


if __name__ == "__main__":
    main()
