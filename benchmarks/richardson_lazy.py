"""Adaptive solve against a Richardson-extrapolated dense Euler solve (issue 9: "Where a dense
fixed-grid Euler solve is affordable, the adaptive solve agrees with its Richardson
extrapolation to within the requested tolerance. Check m = 64 up to t = 64, lazy.").

Setting: the lazy Fig. 3 problem (h = phihat = 0.9 q + q^2/2, tau = 0.3, alpha = 0.3,
gamma0 = 1), symmetric DMFT, m = 64, t in [0, 64].

Reference: forward Euler (spec section 6) on uniform grids with N = 3200, 4800, 6400 steps
(dt = 0.02, 0.0133, 0.01; explicit Euler needs dt < ~1.6/m = 0.025 here). Euler's error is
c1 dt + c2 dt^2 + ..., so y_R = 2 y(0.01) - y(0.02) is second-order accurate; the three grids
together give the next extrapolation, and its difference from y_R (on the times the three grids
share, multiples of 0.04) is reported as the reference's own uncertainty.

Adaptive solves: `dj.Adaptive(64, rtol, atol = rtol / 100, history)` with the default
(trapezoid/ETD2) stepper, history large enough that nothing is decimated. One-time observables
(e_ts, a, e_tr) are compared at every accepted step, the reference read there by cubic
interpolation on its dt = 0.02 grid, over the windows [c/2, c] for c = 0.5, 1, ..., 64 (the
t ~ 1/m transient before t = 0.25 is left out: the reference grid does not resolve it well
enough to interpolate). The error is reported in units of the tolerance,
|y - y_R| / (atol + rtol |y_R|): <= 1 is "within the requested tolerance".

Each solve runs in its own process (peak memory from the operating system); the one-time
series are cached as .npz in --cache (default: a folder under the system's temp dir), so that a
rerun only solves what is missing.

Usage: python benchmarks/richardson_lazy.py [--adaptive 1e-3:2048 1e-3:512:fit ...] [--cache DIR]
Writes the section `richardson` of benchmarks/results/integrator.md.
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
from _report import replace_section  # noqa: E402

H = [0.0, 0.9, 0.5]
M, T_MAX = 64, 64.0
EULER = (3200, 4800, 6400)
NAMES = ("e_ts", "a", "e_tr")
WINDOWS = (0.5, 1, 2, 4, 8, 16, 32, 64)


def _model(fit_ends: bool = False):
    import dmft_jax as dj
    return dj.symmetric_dmft(H, dj.target("same", H), tau=0.3, alpha=0.3, m=M, gamma0=1.0,
                             fit_ends=fit_ends)


def child(spec: str, path: str) -> dict:
    """Solve one configuration in this process and save its one-time series to `path`:
    `euler:N` or `adaptive:rtol:history[:fit]` (`fit`: `fit_ends=True`)."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import dmft_jax as dj
    parts = spec.split(":")
    model = _model(fit_ends=parts[-1] == "fit")
    t0 = time.perf_counter()
    if parts[0] == "euler":
        n = int(parts[1])
        sol = dj.solve(model, dj.TimeGrid(T_MAX / n, n))
        stats = dict(steps=n)
    else:
        rtol, history = float(parts[1]), int(parts[2])            # parts[3]: "fit"
        ctrl = dj.Adaptive(T_MAX, rtol=rtol, atol=rtol * 1e-2, history=history,
                           max_steps=8 * history, max_decimation_error=np.inf)
        sol = dj.solve(model, ctrl, progress=True)
        stats = {k: int(v) for k, v in sol.stats.items() if k != "decimation_error"}
        stats["decimation_error"] = float(sol.stats["decimation_error"])
    t = np.asarray(sol.t)
    keep = np.isfinite(t)
    a = np.asarray(sol.a)
    series = dict(t=t[keep], e_ts=np.asarray(sol.e_ts)[keep], e_tr=np.asarray(sol.e_tr)[keep],
                  a=a.reshape(a.shape[0], -1)[keep, 0])
    np.savez(path, **series)
    return dict(spec=spec, seconds=time.perf_counter() - t0, **stats)


def run(spec: str, cache: str) -> dict:
    """The cached series of `spec`, solving it in a child process when missing."""
    path = os.path.join(cache, spec.replace(":", "_") + ".npz")
    meta = path + ".json"
    if not (os.path.exists(path) and os.path.exists(meta)):
        cmd = [sys.executable, __file__, "--child", spec, "--child-out", path]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        out = proc.stdout.read().strip().splitlines()
        if os.waitstatus_to_exitcode(status) != 0 or not out:
            raise RuntimeError(f"{spec}: the solve failed (exit {status})")
        info = json.loads(out[-1])
        info["peak_gb"] = usage.ru_maxrss / 1e6
        with open(meta, "w") as fh:
            json.dump(info, fh)
    with open(meta) as fh:
        info = json.load(fh)
    info["series"] = dict(np.load(path))
    return info


def cubic(tq: np.ndarray, t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y read at tq by cubic Lagrange interpolation on the uniform grid t."""
    dt = t[1] - t[0]
    i = np.clip(np.floor(tq / dt).astype(int) - 1, 0, t.size - 4)
    out = np.zeros_like(tq)
    for j in range(4):
        basis = np.ones_like(tq)
        for k in range(4):
            if k != j:
                basis *= (tq - t[i + k]) / (t[i + j] - t[i + k])
        out += basis * y[i + j]
    return out


def reference(euler: list[dict]) -> tuple[np.ndarray, dict, dict]:
    """(t, y_R, uncertainty): the two-level Richardson values on the dt = 0.02 grid and, per
    window, the largest |y_R - y_3| (y_3 the three-level extrapolation) relative to |y_R|."""
    s1, s15, s2 = (e["series"] for e in euler)            # dt = 0.02, 0.01333, 0.01
    t = s1["t"]
    ref = {k: 2 * s2[k][::2] - s1[k] for k in NAMES}
    # y(dt) = y0 + c1 dt + c2 dt^2 on dt = 0.04 k: grids at strides 2, 3, 4
    d = np.array([0.02, T_MAX / EULER[1], 0.01])
    vand = np.stack([np.ones(3), d, d**2], axis=1)
    coarse = s1["t"][::2]
    unc = {}
    for k in NAMES:
        ys = np.stack([s1[k][::2], s15[k][::3], s2[k][::4]])
        y3 = np.linalg.solve(vand, ys)[0]
        rel = np.abs(ref[k][::2] - y3) / np.maximum(np.abs(y3), 1e-300)
        unc[k] = [float(np.max(rel[(coarse >= c / 2) & (coarse <= c)])) for c in WINDOWS]
    return t, ref, unc


def compare(series: dict, t_ref: np.ndarray, ref: dict, rtol: float) -> dict:
    """Per observable and window: the largest |y - y_R| / (atol + rtol |y_R|) and the largest
    relative error |y - y_R| / |y_R|."""
    atol = rtol * 1e-2
    t = series["t"]
    inside = (t >= 0.25) & (t <= t_ref[-1])
    out = {}
    for k in NAMES:
        y, r = series[k][inside], cubic(t[inside], t_ref, ref[k])
        units = np.abs(y - r) / (atol + rtol * np.abs(r))
        rel = np.abs(y - r) / np.maximum(np.abs(r), 1e-300)
        rows = []
        for c in WINDOWS:
            w = (t[inside] >= c / 2) & (t[inside] <= c)
            rows.append((float(np.max(units[w])), float(np.max(rel[w]))))
        out[k] = rows
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adaptive", nargs="+", default=["1e-3:512", "1e-3:512:fit", "1e-4:1024:fit"],
                   help="rtol:history[:fit] of each adaptive solve (fit: fitted diagonal "
                        "ends, `fit_ends=True`)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(),
                                                   "dmft_jax_richardson_lazy"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "integrator.md"))
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.child_out)))
        return
    os.makedirs(args.cache, exist_ok=True)
    euler = [run(f"euler:{n}", args.cache) for n in EULER]
    t_ref, ref, unc = reference(euler)
    lines = ["## Adaptive solve against a Richardson-extrapolated Euler solve (issue 9)", "",
             f"Written by `benchmarks/richardson_lazy.py` on {platform.node()} "
             f"({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}. Lazy Fig. 3 setting, "
             f"m = {M}, t <= {T_MAX:g}. Reference: 2 y(dt = 0.01) - y(dt = 0.02) from forward "
             "Euler (wall times include compilation; " + ", ".join(f"N = {e['spec'].split(':')[1]}: {e['seconds']:.0f} s, "
                                  f"{e['peak_gb']:.1f} GB" for e in euler) + "). Entries: the "
             "largest |y - y_R| / (atol + rtol |y_R|) over the accepted steps in the window "
             "t in [c/2, c] (<= 1: within the requested tolerance), with the largest relative "
             "error in parentheses; `ref` rows: the reference's own uncertainty, the largest "
             "relative |y_R - y_3| (y_3 the three-grid extrapolation).", "",
             "| solve | observable | " + " | ".join(f"t <= {c:g}" for c in WINDOWS) + " |",
             "|" + "---|" * (2 + len(WINDOWS))]
    for k in NAMES:
        lines.append(f"| ref | {k} | " + " | ".join(f"{u:.1e}" for u in unc[k]) + " |")
    for spec in args.adaptive:
        rtol, history, *fit = spec.split(":")
        info = run(f"adaptive:{spec}", args.cache)
        err = compare(info["series"], t_ref, ref, float(rtol))
        label = (f"rtol {float(rtol):g}, history {history}{', fitted ends' if fit else ''}: "
                 f"{info['accepted']} steps, "
                 f"{info['rejected']} rejected, {info['decimations']} decimations "
                 f"(error {info.get('decimation_error', 0.0):.2g}), "
                 f"{info['seconds']:.0f} s, {info['peak_gb']:.1f} GB")
        for k in NAMES:
            lines.append(f"| {label} | {k} | "
                         + " | ".join(f"{u:.2g} ({r:.1e})" for u, r in err[k]) + " |")
            label = ""
    text = "\n".join(lines) + "\n"
    print(text)
    replace_section(args.out, "problem", "richardson", text, "")


if __name__ == "__main__":
    main()
