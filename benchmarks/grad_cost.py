"""Cost of exact hyperparameter gradients relative to a plain DMFT solve (time and memory).

    python benchmarks/grad_cost.py                       # N = 512, 1024 (a few minutes on 2 CPUs)
    python benchmarks/grad_cost.py --steps 512,1024,2048,4096 --wrt a0,tau,alpha,dt

Setting: symmetric DMFT of Fig. 4 (h = phihat = 0.9q + q^3/6, tau = 0.3, alpha = 0.3, m = 16,
a0 = 1) on t in [0, 10] (dt = 10 / N); observable e_ts(t_N). Each case runs in its own
subprocess (float64):

- `solve`: the plain compiled solve (`integrate`);
- `forward`: value + gradient by forward mode (`value_and_grad(..., mode="forward")`:
  one compiled jvp pass per parameter, run one after another);
- `reverse`: value + gradient by the adjoint loop (`mode="reverse"`);
- `jax.grad`: plain reverse mode through the loop, compile only (it stores every step's
  carry: its temporaries are reported, it is not run).

Memory, two honest measures: XLA's `memory_analysis()` of the compiled program (temporaries,
arguments and outputs in bytes) and the peak resident set of the run (VmHWM of the
subprocess, reset after compilation through /proc/self/clear_refs, minus the resident set
just before the run). Times: min over `--repeat` runs after compilation; each gradient
case also times a plain solve in its own process, alternating with it, for the ratio.
Results go to benchmarks/results/grad_cost.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("solve", "forward", "reverse", "jax.grad")


def _status() -> dict:
    out = {}
    try:
        for line in open("/proc/self/status"):
            if line.startswith(("VmHWM", "VmRSS")):
                key, val = line.split(":")
                out[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(case: str, steps: int, wrt: str, repeat: int) -> dict:
    """Compile and run one case in this process; returns its measurements."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx

    from dmft_jax import _adjoint as adj
    from dmft_jax import _observables as obs
    from dmft_jax import covariance, target
    from dmft_jax import symmetric_dmft
    from dmft_jax import TimeGrid
    from dmft_jax import integrate

    c = [0.0, 0.9, 0.0, 1.0 / 6.0]
    model = symmetric_dmft(covariance(c), target("same", c), tau=0.3, alpha=0.3, m=16, a0=1.0)
    grid = TimeGrid(10.0 / steps, steps)
    names = adj.parse_wrt(wrt)
    params, static = eqx.partition((model, grid), eqx.is_array)

    def solve_fn(p):
        return obs.e_ts(integrate(*eqx.combine(p, static)))

    def jax_grad_fn(p):
        f, zeros = adj.objective(obs.e_ts, *eqx.combine(p, static), names, mode="forward")
        return jax.value_and_grad(f)(zeros)

    t0 = time.perf_counter()
    if case in ("solve", "jax.grad"):
        compiled = jax.jit(solve_fn if case == "solve" else jax_grad_fn).lower(params).compile()
        mem = compiled.memory_analysis()

        def run():
            return compiled(params)
    else:
        # The library's own program (forward: the one-tangent pass it repeats per parameter);
        # equinox caches the compilation, so the calls below reuse it.
        mem = adj.lower(obs.e_ts, model, grid, names, case).compile().compiled.memory_analysis()

        def run():
            return adj.value_and_grad(obs.e_ts, model, grid, names, mode=case)
    compile_s = time.perf_counter() - t0
    out = dict(case=case, steps=steps, wrt=list(names), compile_s=compile_s,
               temp_bytes=mem.temp_size_in_bytes, argument_bytes=mem.argument_size_in_bytes,
               output_bytes=mem.output_size_in_bytes)
    if case == "jax.grad":
        return out   # compile only: its O(N^3) tape would not fit at large N
    # Peak memory of the first run: the resident-set high-water mark is reset after
    # compilation, so it sees the run's own buffers only.
    rss0 = _status().get("VmRSS")
    reset = _reset_peak()
    jax.block_until_ready(run())
    peak = _status().get("VmHWM")
    # A plain solve timed in the same process, alternating with the case: on a shared machine
    # the ratio is then measured under the same load.
    solve = jax.jit(solve_fn).lower(params).compile()
    jax.block_until_ready(solve(params))
    times, solve_times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(solve(params))
        solve_times.append(time.perf_counter() - t0)
    out.update(run_s=min(times), solve_run_s=min(solve_times),
               peak_rss_increase_bytes=(peak - rss0) if reset and peak else None)
    return out


def _run_case(case, steps, wrt, repeat) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, "--steps", str(steps), "--wrt", wrt,
           "--repeat", str(repeat)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return dict(case=case, steps=steps, error=proc.stderr.strip().splitlines()[-1:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(x) -> str:
    return "-" if x is None else f"{x / 2**20:.1f}"


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report(rows: list[dict], wrt: str, repeat: int) -> str:
    import jax
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    lines = [
        "# Cost of exact hyperparameter gradients (benchmarks/grad_cost.py)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- machine: {_cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}; jax {jax.__version__}, float64; load average at the end "
        f"{', '.join(f'{x:.1f}' if isinstance(x, float) else x for x in load)} (shared machine)",
        "- setting: symmetric DMFT of Fig. 4 (h = phihat = 0.9q + q^3/6, tau = 0.3, alpha = 0.3, "
        "m = 16, a0 = 1), t in [0, 10], observable e_ts(t_N), default causal chunking",
        f"- gradient w.r.t. {wrt} ({len(wrt.split(','))} parameters); times: min of {repeat} "
        "run(s) after compilation (1 above N = 1024); time ratios against a plain solve timed "
        "in the same process, alternating with the case; `temp`: XLA temporaries of the "
        "compiled program (forward: the one-tangent pass, reused for each parameter); "
        "`peak RSS`: rise of the resident set during the first run after compilation",
        "",
        "| N | case | run s | x solve | temp MB | x solve | peak RSS MB | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["steps"], r["case"]): r for r in rows}
    for steps in sorted({r["steps"] for r in rows}):
        base = by.get((steps, "solve"), {})
        for case in CASES:
            r = by.get((steps, case))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {steps} | {case} | failed: {' '.join(r['error'])} | | | | | |")
                continue
            run = r.get("run_s")
            t_ratio = (f"{run / r['solve_run_s']:.2f}" if run and r.get("solve_run_s") else "-")
            m_ratio = (f"{r['temp_bytes'] / base['temp_bytes']:.2f}"
                       if base.get("temp_bytes") else "-")
            lines.append(
                f"| {steps} | {case} | {'-' if run is None else f'{run:.3f}'} | {t_ratio} | "
                f"{_mb(r['temp_bytes'])} | {m_ratio} | {_mb(r.get('peak_rss_increase_bytes'))} "
                f"| {r['compile_s']:.1f} |")
    lines += ["", "`jax.grad` is compiled, not run (its tape is O(N^3)).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="512,1024", help="comma-separated N (default 512,1024)")
    p.add_argument("--wrt", default="a0,tau,alpha,dt", help="parameters (default a0,tau,alpha,dt)")
    p.add_argument("--repeat", type=int, default=2, help="timed runs per case (default 2)")
    p.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    p.add_argument("--no-jax-grad-above", type=int, default=512,
                   help="skip compiling plain jax.grad above this N (default 512: its "
                        "compilation alone takes minutes)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grad_cost.md"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, int(args.steps), args.wrt, args.repeat)))
        return 0
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        for case in args.cases.split(","):
            if case == "jax.grad" and steps > args.no_jax_grad_above:
                continue
            repeat = args.repeat if steps <= 1024 else 1
            row = _run_case(case, steps, args.wrt, repeat)
            print(json.dumps(row), flush=True)
            rows.append(row)
    text = report(rows, args.wrt, args.repeat)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
