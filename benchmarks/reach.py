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

Usage: python benchmarks/reach.py [--configs lazy:256:100:512 ...] [--rtol 1e-4]
Configurations `setting:m:t_max:history[:max_steps]`. Writes the section `reach` of
benchmarks/results/integrator.md.
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

SETTINGS = {
    "lazy": dict(h=[0.0, 0.9, 0.5], tau=0.3, alpha=0.3, scale=dict(gamma0=1.0)),
    "meanfield": dict(h=[0.0, 0.9, 0.0, 1.0 / 6.0], tau=0.6, alpha=0.3, scale=dict(a0=1.0)),
}
DEFAULT = ["lazy:64:64:512", "lazy:256:100:512", "lazy:256:100:2048", "lazy:1024:100:512:20000",
           "meanfield:64:640:512:20000", "meanfield:256:2560:512:20000"]


def child(spec: str, rtol: float) -> dict:
    """One configuration, in this process (called by the parent through a subprocess)."""
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    parts = spec.split(":")
    name, m, t_max, history = parts[0], int(parts[1]), float(parts[2]), int(parts[3])
    max_steps = int(parts[4]) if len(parts) > 4 else 20000
    p = SETTINGS[name]
    model = dj.symmetric_dmft(p["h"], dj.target("same", p["h"]), tau=p["tau"],
                              alpha=p["alpha"], m=m, **p["scale"])
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
    return dict(spec=spec, m=m, t_max=t_max, history=history, max_steps=max_steps,
                result=next((name for name in ("successful", "diverged", "max_steps_reached",
                                               "step_too_small", "history_too_coarse",
                                               "invalid_input")
                             if bool(sol.result == getattr(dj.RESULTS, name))), "other"),
                t_reached=float(t[-1]), accepted=n, rejected=int(sol.stats["rejected"]),
                decimations=int(sol.stats["decimations"]),
                decimation_error=float(sol.stats["decimation_error"]),
                last_step=float(steps[-1]) if steps.size else float("nan"),
                e_tr=float(np.asarray(sol.e_tr)[n]), e_ts=float(np.asarray(sol.e_ts)[n]),
                run_s=run, compile_s=compile_s)


def parent(spec: str, rtol: float) -> dict:
    cmd = [sys.executable, __file__, "--child", spec, "--rtol", repr(rtol)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    lines = out.strip().splitlines()
    row = json.loads(lines[-1]) if lines and os.waitstatus_to_exitcode(status) == 0 else dict(
        spec=spec, result="crashed: " + err.strip()[-120:])
    row.update(peak_gb=usage.ru_maxrss / 1e6, process_s=time.perf_counter() - t0)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=DEFAULT)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "integrator.md"))
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.rtol)))
        return
    rows = []
    for spec in args.configs:
        r = parent(spec, args.rtol)
        rows.append(r)
        print(json.dumps(r), flush=True)
    head = ("| setting | m | t_max | history | result | t reached | accepted | rejected | last "
            "step | decimations | decimation error | e_tr | e_ts | run (s) | compile (s) | "
            "peak (GB) |")
    lines = ["## Reach of the adaptive solver (issue 9)", "",
             f"Written by `benchmarks/reach.py` on {platform.node()} ({os.cpu_count()} CPUs), "
             f"{time.strftime('%Y-%m-%d')}. `dj.Adaptive(t_max, rtol={args.rtol:g}, atol="
             f"{args.rtol * 1e-2:g}, history, max_steps, max_decimation_error=inf)` with the "
             "default stepper, symmetric DMFT; lazy = Fig. 3 (h = phihat = 0.9 q + q^2/2, "
             "tau 0.3, alpha 0.3, gamma0 = 1), meanfield = Fig. 5 (h = phihat = 0.9 q + q^3/6, "
             "tau 0.6, alpha 0.3, a(0) = 1). Each configuration is its own process; run time "
             "excludes compilation. The decimation error is the largest interpolation error "
             "of a dropped time in units of the tolerance.", "", head,
             "|" + "---|" * 16]
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
            f"{r['peak_gb']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    replace_section(args.out, "problem", "reach", text, "")


if __name__ == "__main__":
    main()
