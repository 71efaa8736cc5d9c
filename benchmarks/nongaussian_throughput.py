"""Throughput and memory of the non-Gaussian DMFT (issue 10: "m = 8, 100 time steps, 10^4 draws
in <= 5 minutes on the 2-core CPU; report the memory"; "10^4 draws at m = 16 and 100 time steps
fit in a few GB").

Fig. 4 setting (h = phihat = 0.9 q + q^3/6, tau = 0.3, alpha = 0.3, a_i(0) = 1), dt = 0.02,
100 steps (t = 2), 8 replicas. Every configuration runs `dmft-jax solve --theory nongaussian`
in its own process: run time and compile time from its JSON summary, peak resident memory
from the operating system (`os.wait4`), the process's wall time (import, compilation, run,
output); the command line solves as many replicas at a time as fit in memory
(`replica_batch`). Configurations (`--configs`, each `method:m:draws[:batch[:max_iter]]`, method
`pass`, `paths` (the pass with `--sampling paths`) or `fixed-point`): by default the causal pass
at m = 8 with 800 and 10^4 draws (the judged configuration), with the factor construction and
with path-wise sampling, and one iteration of the fixed point with 800 draws. `--memory`: the
peak memory of the fixed-point iteration from XLA's buffer assignment of the compiled solve
(not run), at m = 16 and m = 8 with 10^4 draws.

Usage: python benchmarks/nongaussian_throughput.py [--configs pass:8:1000 fixed-point:8:1000:250]
Writes the section `throughput` of benchmarks/results/nongaussian.md.
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

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section  # noqa: E402

DEFAULT = ["pass:8:800", "pass:8:10000", "paths:8:800", "paths:8:10000",
           "fixed-point:8:800:100:1"]
#: Compile-only memory analyses (XLA's buffer assignment; `m:steps:draws:batch`): the
#: fixed-point iteration at m = 16, 100 steps, 10^4 draws, whose path factor alone (a
#: least-squares solve of size (N m)^2 = 1616^2 per row and replica) would take hours to run.
MEMORY = ["16:100:10000:50", "8:100:10000:50"]


def run(method, m, draws, batch, max_iter, steps, dt, tmp):
    init = os.path.join(tmp, f"init{m}.npz")
    import numpy as np
    np.savez(init, a=np.ones(m), C=np.eye(m))
    cmd = [sys.executable, "-m", "dmft_jax", "solve", "--theory", "nongaussian",
           "--h", "0,0.9,0,0.16666666666666666", "--target", "same", "--tau", "0.3",
           "--alpha", "0.3", "--init", init, "--dt", str(dt), "--steps", str(steps),
           "--draws", str(draws), "--groups", "8", "--json"]
    cmd += ["--method", "pass", "--sampling", "paths"] if method == "paths" else ["--method",
                                                                                 method]
    if method == "fixed-point":
        cmd += ["--batch", str(batch), "--max-iter", str(max_iter)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    lines = out.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    return dict(method=method, m=m, draws=draws, batch=batch, max_iter=max_iter,
                code=os.waitstatus_to_exitcode(status), wall=wall,
                peak_gb=usage.ru_maxrss / 1e6, summary=summary, err=err.strip()[-300:])


def memory(spec):
    """XLA's buffer assignment of the compiled fixed-point solve (temporaries + arguments +
    outputs, GB), and the compile time."""
    import equinox as eqx
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    m, steps, draws, batch = (int(x) for x in spec.split(":"))
    model = dj.nongaussian_dmft([0.0, 0.9, 0.0, 1.0 / 6.0], "same", tau=0.3, a=np.ones(m),
                                alpha=0.3, draws=draws, key=0, groups=8)
    grid = dj.TimeGrid(2.0 / steps, steps)
    params, static = eqx.partition(model, eqx.is_array)

    def solve(p):                      # the public solve, as the command line runs it
        return dj.nongaussian_fixed_point(eqx.combine(p, static), grid, tol=1e-4,
                                          max_iter=50, batch=batch, throw=False)

    t0 = time.perf_counter()
    compiled = jax.jit(solve).lower(params).compile()
    info = compiled.memory_analysis()
    total = (info.temp_size_in_bytes + info.argument_size_in_bytes
             + info.output_size_in_bytes) / 1e9
    return dict(m=m, steps=steps, draws=draws, batch=batch, gb=total,
                compile=time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=DEFAULT)
    p.add_argument("--memory", nargs="*", default=MEMORY)
    p.add_argument("--cache", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "nongaussian_throughput.json"),
                   help="measured rows, reused by later runs (delete it to measure afresh)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--dt", type=float, default=0.02)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "nongaussian.md"))
    args = p.parse_args(argv)
    rows = []
    cache = {}
    if os.path.exists(args.cache):
        with open(args.cache) as f:
            cache = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in args.configs:
            key = f"{cfg}:{args.steps}:{args.dt}"
            if key in cache:
                rows.append(cache[key])
                continue
            parts = cfg.split(":")
            method, m, draws = parts[0], int(parts[1]), int(parts[2])
            batch = int(parts[3]) if len(parts) > 3 else 0
            max_iter = int(parts[4]) if len(parts) > 4 else 50
            r = run(method, m, draws, batch, max_iter, args.steps, args.dt, tmp)
            rows.append(r)
            cache[key] = r
            with open(args.cache, "w") as f:
                json.dump(cache, f)
            s = r["summary"]
            print(f"{cfg}: exit {r['code']}, run {s.get('wall_time_s')} s, compile "
                  f"{s.get('compile_time_s')} s, iterations {s.get('iterations')}, peak "
                  f"{r['peak_gb']:.2f} GB {r['err'][-200:] if r['code'] else ''}", flush=True)
    lines = ["## Throughput and memory", "",
             f"Written by `benchmarks/nongaussian_throughput.py` on {platform.node()} "
             f"({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}. Fig. 4 setting, "
             f"{args.steps} steps of dt = {args.dt:g}, 8 replicas; each run is its own "
             "`dmft-jax solve --theory nongaussian` process (run time excludes compilation; "
             "peak = the process's maximum resident memory). A fixed-point row with a "
             "`max_iter` (5th field of its configuration) stops there on purpose (exit 1, not "
             "converged) to time its iterations.", "",
             "| method | m | draws | batch | replicas at once | iterations | exit | run (s) | "
             "compile (s) | process (s) | run per 1000 draws and iteration (s) | "
             "peak memory (GB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["summary"]
        its = s.get("iterations") or (1 if r["method"] in ("pass", "paths") else None)
        run_s = s.get("wall_time_s")
        per = (run_s / its / (r["draws"] / 1000)) if (run_s and its) else None
        name = "pass, --sampling paths" if r["method"] == "paths" else r["method"]
        lines.append(f"| {name} | {r['m']} | {r['draws']} | {r['batch'] or '-'} | "
                     f"{s.get('replica_batch', '-')} | {its} | {r['code']} | {run_s} | "
                     f"{s.get('compile_time_s')} | {r['wall']:.1f} | "
                     f"{'' if per is None else f'{per:.1f}'} | {r['peak_gb']:.2f} |")
    mems = []
    for spec in args.memory:
        if f"memory:{spec}" not in cache:
            cache[f"memory:{spec}"] = memory(spec)
            with open(args.cache, "w") as f:
                json.dump(cache, f)
        mems.append(cache[f"memory:{spec}"])
    if mems:
        lines += ["", "Fixed-point iteration, compiled but not run (XLA's buffer assignment: "
                  "temporaries + arguments + outputs):", "",
                  "| m | steps | draws | batch | memory (GB) | compile (s) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['m']} | {r['steps']} | {r['draws']} | {r['batch']} | {r['gb']:.2f} | "
                  f"{r['compile']:.0f} |" for r in mems]
    text = "\n".join(lines) + "\n"
    print(text)
    replace_section(args.out, "nongaussian", "throughput", text, "")


if __name__ == "__main__":
    main()
