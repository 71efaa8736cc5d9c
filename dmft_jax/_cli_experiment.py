"""`dmft-jax experiment`, `dmft-jax sweep`, `dmft-jax compare`: real networks next to the DMFT.

    dmft-jax experiment --h cubic --tau 0.3 --alpha 0.3 --m 16 --a0 1 --d 200 --seeds 10 \\
        --lr 0.1 --batch 100 --t-max 2 --record-every 0.1 --projection ball --dmft --out e.npz

trains `--seeds` networks (docs/equations.md section 1; defaults: the paper's SGD protocol of
section 9, d = 200, lr 0.1, batch 100, unit-ball projection, W(0) entries N(0, 1/d) then
projected, a_i(0) = a0) and writes an `.npz` with

    t (T,)                      gradient-flow times t = steps * lr * d / n
    a, gamma, a_l1, v, C_d0, C_o, e_tr, e_ts   (seeds, T)   (see dmft_jax._train)
    diverged, divergence_time, divergence_step, rise_step   (seeds,)
    dmft_<observable> (T,), dmft_diverged, dmft_divergence_step, dmft_rise_step, dmft_dynamics
                                with --dmft: the symmetric DMFT at the same times, of GD
                                ("gd", docs/discrete_gd.md) for --batch 0, else of the flow
    params                      JSON of the flags

`sweep` runs a grid (a0 x lr x tau x alpha, from --grid-* flags or a JSON/TOML file) with its
DMFTs in one compiled graph and writes a `SweepResult` file; `compare` plots DMFT lines over
experiment symbols (mean +- standard error) from saved files.

Diverged networks and DMFT solves are never reported as results: the summary line says how many
diverged (a warning on stderr too), the JSON carries the counts, the files mark them
(`diverged`, `dmft_diverged`, with the step at which each diverged), and a run in which every
network diverged exits 1 (its file, flagged, is still written). For full-batch GD the DMFT is
the exact discrete-time theory: its divergence is a prediction about GD at that step size, and
is worded so.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from ._cli_args import (
    COUNT,
    Choice,
    NON_NEGATIVE,
    POSITIVE,
    ArraySpec,
    Command,
    Count,
    Real,
    RealList,
    SolveError,
    UsageError,
    check_memory,
    non_empty_path,
    read_npz,
    solve_bytes,
)
from ._cli_io import FIGURE, add_output_arguments, diverged, divergence_line
from ._cli_physics import (
    add_physics_arguments,
    check_common,
    check_one_step,
    covariance_from,
    initial_a0,
    steps_of,
    target_from,
    target_spec,
)

_SUMMARY = ("a", "v", "e_tr", "e_ts")


# ------------------------------------------------------------------------------ shared flags
def _add_training_arguments(p, *, sweep: bool = False) -> None:
    g = p.add_argument_group("network training (docs/equations.md sections 1 and 9)")
    g.add_argument("--d", type=COUNT, default=200, help="input dimension (default 200)")
    g.add_argument("--seeds", type=COUNT, default=10, help="independent runs (default 10)")
    g.add_argument("--lr", type=POSITIVE, default=0.1, help="step size (default 0.1)")
    g.add_argument("--batch", type=Count(0), default=100,
                   help="SGD batch size; 0 = full-batch GD (default 100)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=COUNT, default=None, help="number of steps")
    length.add_argument("--t-max", type=POSITIVE, default=None, metavar="T",
                        help="final gradient-flow time (default 2; t = steps * lr * d / n; one "
                             "step must not pass it)"
                             + ("; a sweep runs the steps its smallest lr needs" if sweep else ""))
    g.add_argument("--record-every", type=POSITIVE, default=None, metavar="DT",
                   help="gradient-flow time between records (default: 20 records)")
    g.add_argument("--projection", choices=("sphere", "ball"), default="ball",
                   help="rows onto the unit sphere or ball after each step (default ball, "
                        "the paper's protocol)")
    g.add_argument("--seed", type=Count(0), default=0, help="base PRNG seed (default 0)")
    g.add_argument("--float32", action="store_true", help="train in float32 (DMFT stays float64)")
    g.add_argument("--dmft-dynamics", type=Choice(("auto", "gd", "flow")), default="auto",
                   metavar="auto|gd|flow",
                   help="the DMFT next to the networks: auto (default) = the exact discrete-time "
                        "DMFT of GD (docs/discrete_gd.md) for --batch 0, the gradient flow for "
                        "SGD; gd needs --batch 0")
    add_output_arguments(p)


def _physics(args):
    """(problem, DMFT covariance, DMFT target) from the physics flags."""
    from ._network import problem
    check_common(args)
    if args.phi_norm2 is not None:
        raise UsageError("--phi-norm2: experiments need the target function itself; give it by "
                         "--target or --phihat (||phi||^2 then follows)")
    h, h_spec = covariance_from(args)
    tgt = target_from(args, h_spec)
    spec, _ = target_spec(args, h_spec)
    try:
        prob = problem(h_spec, spec, k=tgt.k)
    except ValueError as err:
        raise UsageError(f"--{'phihat' if args.phihat else 'target'}: {err}") from None
    return prob, h, tgt


def _schedule(args, dts) -> tuple[int, int]:
    """(steps, record_every in steps) from --steps/--t-max/--record-every; dts: the grid's
    gradient-flow steps (the smallest one sets the schedule)."""
    dt = min(dts)
    if args.steps is not None:
        steps = args.steps
    else:
        t_max = 2.0 if args.t_max is None else args.t_max
        check_one_step("--lr", dt, "--t-max", t_max)
        steps = steps_of("--t-max", t_max, dt)
    if args.record_every is None:
        every = max(1, steps // 20)
    else:
        every = max(1, steps_of("--record-every", min(args.record_every, steps * dt), dt))
    every = min(every, steps)
    return -(-steps // every) * every, every


def _check_training(args, alphas) -> None:
    from ._train import n_samples
    n = min(n_samples(al, args.m, args.d) for al in alphas)
    if args.batch > n:
        raise UsageError(f"--batch {args.batch} exceeds the training set n = alpha m d = {n} "
                         "(use --batch 0 for full-batch GD)")


def _check_sweep_memory(args, grid: dict, steps: int, every: int, dmft: bool, k: int) -> None:
    """Refuse a sweep whose networks (all vmapped at once) and DMFTs exceed the memory."""
    from ._train import n_samples
    runs = args.seeds * int(np.prod([len(v) for v in grid.values()]))
    points = runs // args.seeds
    n = max(n_samples(al, args.m, args.d) for al in grid["alpha"])
    m, d, rows = args.m, args.d, args.batch or n
    item = 4 if args.float32 else 8
    records = steps // every + 1
    per_run = item * (2.0 * (n * d + n + d * k + m * d) + 6.0 * m * d + 4.0 * rows * m
                      + 12.0 * records)
    need = runs * per_run + (points * solve_bytes(steps) if dmft else 0.0)
    flags = [f"--grid {args.grid}"] if getattr(args, "grid", None) else []
    flags += [f"--grid-{k}" for k in grid if getattr(args, f"grid_{k}", None)]
    where = f" ({', '.join(flags)})" if flags else ""
    check_memory(need, f"--seeds {args.seeds} x {points} grid point(s){where}, --d {d}, "
                       f"--m {m}, {steps} steps")


def theory_dynamics(args, dmft: bool = True) -> str:
    """The DMFT of the networks' training (--dmft-dynamics; auto: gd for --batch 0, else flow)."""
    from ._sweep import theory_for
    if not dmft and args.dmft_dynamics != "auto":
        raise UsageError(f"--dmft-dynamics {args.dmft_dynamics}: no DMFT is solved (add --dmft "
                         "to experiment, drop --no-dmft from sweep)")
    try:
        return theory_for(args.batch, None if args.dmft_dynamics == "auto"
                             else args.dmft_dynamics)
    except ValueError as err:
        raise UsageError(f"--dmft-dynamics {args.dmft_dynamics}: {err}") from None


def _run_sweep_core(args, *, grid: dict, dmft: bool):
    """Run `sweep` for the flags and a grid {a0, lr, tau, alpha: lists}; returns (result, s)."""
    from ._sweep import sweep
    from ._train import gradient_flow_step
    dynamics = theory_dynamics(args, dmft)
    prob, h, tgt = _physics(args)
    # The DMFT uses the network's own h and target, except for ReLU, whose h''(1) is infinite:
    # there the solve's degree-K Hermite truncation (--hermite-degree).
    dmft_h = h if args.activation == "relu" else None
    _check_training(args, grid["alpha"])
    dts = [float(gradient_flow_step(lr, al, args.m, args.d))
           for lr in grid["lr"] for al in grid["alpha"]]
    steps, every = _schedule(args, dts)
    _check_sweep_memory(args, grid, steps, every, dmft, tgt.k)
    t0 = time.perf_counter()
    try:
        res = sweep(prob, m=args.m, d=args.d, steps=steps, record_every=every,
                    seeds=args.seeds, seed=args.seed, batch=args.batch,
                    projection=args.projection, freeze_a=args.freeze_a, dmft=dmft, dmft_h=dmft_h,
                    dmft_dynamics=dynamics, dtype="float32" if args.float32 else None, **grid)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return res, time.perf_counter() - t0


def _network_divergence(command: str, out, summary: dict, bad: int, total: int,
                        lr: str) -> None:
    """Say that networks diverged (a warning), or fail when every run did (exit 1; the file,
    written before, flags them all)."""
    if not bad:
        return
    line = divergence_line("networks", bad, total, f"(marked in 'diverged'); try a smaller {lr}")
    if bad == total:
        out.error_json(summary)
        raise SolveError(line + out.written())
    print(f"dmft-jax {command}: warning: {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- experiment
def _add_experiment(p):
    add_physics_arguments(p, init=False)
    _add_training_arguments(p)
    p.add_argument("--dmft", action="store_true",
                   help="also solve the matching symmetric DMFT (dt = lr d / n, same times): "
                        "for --batch 0 the exact DMFT of GD, else the gradient flow "
                        "(--dmft-dynamics)")


def experiment_arrays(res) -> dict[str, np.ndarray]:
    """The documented arrays of `experiment --out` from a one-point sweep."""
    arrays = {k: np.asarray(v) for k, v in res.point().items()}
    if res.dmft is not None:
        arrays["dmft_dynamics"] = np.asarray(res.params["dmft_dynamics"])
    return arrays


def _steps(x) -> list:
    """Per-run steps as JSON (None where nothing happened, i.e. -1)."""
    return [int(k) if k >= 0 else None for k in np.ravel(np.asarray(x))]


def _summary(arrays, seconds) -> dict:
    ok = ~diverged(arrays)
    dmft_bad = "dmft_diverged" in arrays and bool(diverged({"diverged": arrays["dmft_diverged"]}))
    out = dict(t=float(arrays["t"][-1]), seeds=int(ok.size), diverged=int((~ok).sum()),
               divergence_step=_steps(arrays["divergence_step"]),
               rise_step=_steps(arrays["rise_step"]), seconds=round(seconds, 3))
    if "dmft_diverged" in arrays:
        out["dmft_dynamics"] = str(arrays["dmft_dynamics"])
        out["dmft_diverged"] = dmft_bad
        out["dmft_divergence_step"] = _steps(arrays["dmft_divergence_step"])[0]
        out["dmft_rise_step"] = _steps(arrays["dmft_rise_step"])[0]
    for name in _SUMMARY:
        x = arrays[name][ok, -1]
        out[name] = float(np.mean(x)) if x.size else None
        out[f"{name}_se"] = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
        if f"dmft_{name}" in arrays:
            out[f"dmft_{name}"] = None if dmft_bad else float(arrays[f"dmft_{name}"][-1])
    return out


def _experiment_line(summary, seconds) -> str:
    parts = []
    for name in _SUMMARY:
        text = f"{name} = {summary[name]:.4g} +- {summary[name + '_se']:.2g}"
        if f"dmft_{name}" in summary:
            value = summary[f"dmft_{name}"]
            step = summary.get("dmft_divergence_step")
            gd = summary.get("dmft_dynamics") == "gd"
            where = f" at step {step}" if gd and step is not None else ""
            text += f" (DMFT diverged{where})" if value is None else f" (DMFT {value:.4g})"
        parts.append(text)
    return (f"t = {summary['t']:.4g}, {summary['seeds']} runs ({summary['diverged']} diverged): "
            + ", ".join(parts) + f" [{seconds:.1f} s]")


def _run_experiment(args, out) -> int:
    from ._train import gradient_flow_step
    check_common(args)
    grid = dict(a0=[initial_a0(args)], lr=[args.lr], tau=[args.tau], alpha=[args.alpha])
    res, seconds = _run_sweep_core(args, grid=grid, dmft=args.dmft)
    arrays = experiment_arrays(res)
    summary = _summary(arrays, seconds)
    out.write_npz(dict(arrays, kind=np.asarray("experiment"),
                       params=np.asarray(out.params(**res.params))))
    if summary.get("dmft_diverged"):
        step_dt = float(gradient_flow_step(args.lr, args.alpha, args.m, args.d))
        print("dmft-jax experiment: warning: " + _dmft_warning(summary, args.lr, step_dt),
              file=sys.stderr, flush=True)
    _network_divergence("experiment", out, summary, summary["diverged"], summary["seeds"], "--lr")
    out.report(summary, _experiment_line(summary, seconds))
    return 0


def _dmft_warning(summary, lr: float, step_dt: float) -> str:
    """The one line about a diverged DMFT of `experiment`: for GD a prediction (the step at
    which GD diverges in theory), for the flow a too large Euler step."""
    if summary["dmft_dynamics"] == "gd":
        step, rise = summary["dmft_divergence_step"], summary["dmft_rise_step"]
        return divergence_line(
            "the DMFT of GD", 1, 1, f"at step {step} (t = {step * step_dt:.4g}; dmft_diverged "
            f"and dmft_divergence_step in the file): in theory (d = infinity) GD with --lr "
            f"{lr:g} diverges" + ("" if rise is None else f", beyond its edge of stability at "
                                  f"step {rise}") + "; its lines are not a result")
    return divergence_line("the DMFT solve", 1, 1, "(dmft_diverged in the file; its lines "
                           "are not a result: the step dt = lr d / n is too large for "
                           "explicit Euler, try a smaller --lr)")


# ------------------------------------------------------------------------------------ sweep
_GRID_KEYS = ("a0", "lr", "tau", "alpha")
#: The range of each axis of a sweep grid (the single-valued flags have the same ranges).
_GRID_RANGES = dict(a0=Real(), lr=POSITIVE, tau=NON_NEGATIVE, alpha=POSITIVE)
#: Most grid points of one sweep (they are all compiled into one program).
MAX_GRID_POINTS = 100_000


def _add_sweep(p):
    add_physics_arguments(p, init=False)
    _add_training_arguments(p, sweep=True)
    g = p.add_argument_group("grid (values override the single-valued flags)")
    for key in _GRID_KEYS:
        g.add_argument(f"--grid-{key}", type=RealList(_GRID_RANGES[key]), metavar="X,Y,...",
                       help=f"values of {key}")
    g.add_argument("--grid", type=non_empty_path, metavar="FILE.json|FILE.toml",
                   help="axis values {a0: [...], lr: [...], tau: [...], alpha: [...]} in a file")
    g.add_argument("--no-dmft", action="store_true", help="skip the DMFT solves")


def _grid_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise UsageError(f"--grid: {path!r} is not a file")
    if os.path.getsize(path) > 10_000_000:
        raise UsageError(f"--grid: {path!r} is larger than 10 MB; a grid file lists axis values")
    try:
        if path.endswith(".toml"):
            import tomllib
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        else:
            with open(path) as fh:
                data = json.load(fh)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as err:
        raise UsageError(f"--grid: cannot read {path!r}: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--grid: {path!r} must hold a table of axes {list(_GRID_KEYS)}")
    unknown = sorted(set(data) - set(_GRID_KEYS))
    if unknown:
        raise UsageError(f"--grid: unknown key(s) {unknown} in {path!r} (axes: {list(_GRID_KEYS)})")
    out = {}
    for key, val in data.items():
        vals = val if isinstance(val, list) else [val]
        if not vals or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                               for x in vals):
            raise UsageError(f"--grid: {key} in {path!r} must be a number or a list of numbers")
        out[key] = [_GRID_RANGES[key].check(f"--grid: {key} in {path!r}", x) for x in vals]
    return out


def _sweep_grid(args) -> dict:
    grid = _grid_file(args.grid) if args.grid else {}
    for key in _GRID_KEYS:
        text = getattr(args, f"grid_{key}")
        if text is not None:
            if key in grid:
                raise UsageError(f"--grid-{key}: {key} is also given in --grid {args.grid!r}")
            grid[key] = RealList().values(text)
    grid.setdefault("a0", [initial_a0(args)])
    grid.setdefault("lr", [args.lr])
    grid.setdefault("tau", [args.tau])
    grid.setdefault("alpha", [args.alpha])
    points = int(np.prod([len(v) for v in grid.values()]))
    if points > MAX_GRID_POINTS:
        raise UsageError(f"--grid: {points} grid points exceed {MAX_GRID_POINTS} (one compiled "
                         "program); split the sweep")
    return grid


def _run_sweep(args, out) -> int:
    check_common(args)
    grid = _sweep_grid(args)
    res, seconds = _run_sweep_core(args, grid=grid, dmft=not args.no_dmft)
    res.params["flags"] = out.params()
    bad = diverged(res.experiment)
    div, total = int(bad.sum()), int(bad.size)
    dmft_bad = (int(diverged(res.dmft).sum()) if res.dmft is not None else 0)
    dynamics = res.params.get("dmft_dynamics")
    summary = dict(points=int(np.prod(res.grid_shape)), runs=total, diverged=div,
                   dmft_diverged=dmft_bad, steps=res.params["steps"], dmft_dynamics=dynamics,
                   seconds=round(seconds, 3))
    if args.batch == 0:  # the edge of stability (first rise of the full-batch train loss)
        summary["unstable"] = int(np.sum(np.asarray(res.experiment["rise_step"]) >= 0))
        if res.dmft is not None:
            summary["dmft_unstable"] = int(np.sum(np.asarray(res.dmft["rise_step"]) >= 0))
    out.write("out", res.save)
    if dmft_bad:
        detail = ("(dmft_diverged and dmft_divergence_step in the file: in theory GD diverges "
                  "at those grid points, a prediction at that lr, not a solver failure)"
                  if dynamics == "gd" else
                  "(dmft_diverged in the file: those grid points have no theory line; a smaller "
                  "lr shortens the DMFT step dt = lr d / n)")
        what = "GD DMFTs" if dynamics == "gd" else "DMFT solves"
        print("dmft-jax sweep: warning: " + divergence_line(what, dmft_bad, summary["points"],
                                                             detail), file=sys.stderr, flush=True)
    _network_divergence("sweep", out, summary, div, total, "--lr / --grid-lr")
    out.report(summary, f"{summary['points']} grid points x {args.seeds} seeds, "
                        f"{res.params['steps']} steps: {div}/{total} runs diverged"
                        + (f", {dmft_bad}/{summary['points']} DMFT solves diverged"
                           if res.dmft is not None else "") + f" [{seconds:.1f} s]")
    return 0


# ---------------------------------------------------------------------------------- compare
def _add_compare(p):
    p.add_argument("files", nargs="+", type=non_empty_path, metavar="FILE.npz",
                   help="experiment or sweep files (symbols, with their DMFT lines), or "
                        "`dmft-jax solve --out` files (lines; non-Gaussian ones with a +-1 "
                        "standard-error band)")
    p.add_argument("--observables", default="a,v,e_tr,e_ts", metavar="NAMES",
                   help="comma-separated (a, gamma, a_l1, v, C_d0, C_o, e_tr, e_ts)")
    add_output_arguments(p, out=FIGURE, out_default="compare.png", json_summary=False,
                         out_help="figure to write (default compare.png; png, pdf, svg, ...)")


def _all_observables():
    from ._train import OBSERVABLES
    return OBSERVABLES


def _kind(path: str) -> str:
    """The `kind` entry of a saved file ("experiment", "sweep"), "solve" when absent."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            has_kind = "kind.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        has_kind = False  # read_npz below reports the file properly
    if not has_kind:
        return "solve"
    kind = str(read_npz("", path, {"kind": ArraySpec("text", 0)})["kind"])
    if kind not in ("experiment", "sweep"):
        raise UsageError(f"{path!r}: unknown kind {kind!r} (experiment, sweep or a solve file)")
    return kind


def _check_runs(path: str, name: str, x: np.ndarray, bad: np.ndarray) -> None:
    """An observable's runs that are not marked diverged must be finite."""
    ok = ~bad.reshape(bad.shape + (1,) * (x.ndim - bad.ndim))
    if not np.all(np.isfinite(x) | ~ok):
        raise UsageError(f"{path!r}: array {name!r} has non-finite values in runs not marked "
                         "diverged")


def _experiment_series(path: str, names) -> list[dict]:
    obs = _all_observables()
    spec = {"t": ArraySpec("real", 1), "diverged": ArraySpec("bool", 1),
            **{n: ArraySpec("real", 2, finite=False) for n in names}}
    optional = {f"dmft_{n}": ArraySpec("real", 1, finite=False) for n in obs}
    optional["dmft_diverged"] = ArraySpec("bool", 0)
    optional["dmft_divergence_step"] = ArraySpec("real", 0)
    optional["dmft_dynamics"] = ArraySpec("text", 0)
    data = read_npz("", path, spec, optional)
    T, S = data["t"].shape[0], data["diverged"].shape[0]
    bad = data["diverged"].astype(bool)
    for n in names:
        if data[n].shape != (S, T):
            raise UsageError(f"{path!r}: array {n!r} has shape {data[n].shape}, expected "
                             f"(seeds, T) = ({S}, {T}) from 'diverged' and 't'")
        _check_runs(path, n, data[n], bad)
    dmft = {n: data[f"dmft_{n}"] for n in names if f"dmft_{n}" in data}
    for n, line in dmft.items():
        if line.shape != (T,):
            raise UsageError(f"{path!r}: array 'dmft_{n}' has shape {line.shape}, expected ({T},)")
    dmft_bad = bool(data.get("dmft_diverged", False))
    return [dict(label=os.path.basename(path), t=data["t"], exp={n: data[n] for n in names},
                 diverged=bad, dmft=dmft or None, dmft_diverged=dmft_bad,
                 dynamics=_dynamics_name(data.get("dmft_dynamics"), path),
                 dmft_step=_step_or_none(data.get("dmft_divergence_step")))]


def _dynamics_name(value, path: str) -> str:
    """The recorded DMFT dynamics ("gd" or "flow"; files written before it was recorded used
    the flow)."""
    if value is None:
        return "flow"
    name = str(value)
    if name not in ("gd", "flow"):
        raise UsageError(f"{path!r}: unknown DMFT dynamics {name!r} (gd or flow)")
    return name


def _step_or_none(value):
    return None if value is None or not np.isfinite(value) or value < 0 else int(value)


def _sweep_series(path: str, names) -> list[dict]:
    from ._sweep import AXES, GRID_AXES, SweepResult
    spec = {"t": ArraySpec("real", 5), "axes": ArraySpec("text", 0),
            "params": ArraySpec("text", 0), "exp_diverged": ArraySpec("bool", 5),
            **{f"axis_{a}": ArraySpec("real", 1) for a in AXES},
            **{f"exp_{n}": ArraySpec("real", 6, finite=False) for n in names}}
    data = read_npz("", path, spec)
    try:
        if json.loads(str(data["axes"])) != list(AXES):
            raise ValueError("unexpected axes")
        json.loads(str(data["params"]))
    except ValueError:
        raise UsageError(f"{path!r}: 'axes' or 'params' is not the JSON a sweep writes") from None
    grid = tuple(data[f"axis_{a}"].shape[0] for a in GRID_AXES)
    S = data["axis_seed"].shape[0]
    if data["t"].shape[:4] != grid or data["exp_diverged"].shape != (S, *grid):
        raise UsageError(f"{path!r}: 't' or 'exp_diverged' does not match the axes {grid}")
    T = data["t"].shape[4]
    for n in names:
        if data[f"exp_{n}"].shape != (S, *grid, T):
            raise UsageError(f"{path!r}: array 'exp_{n}' has shape {data[f'exp_{n}'].shape}, "
                             f"expected {(S, *grid, T)}")
        _check_runs(path, f"exp_{n}", data[f"exp_{n}"], data["exp_diverged"].astype(bool))
    try:
        res = SweepResult.load(path)
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"{path!r}: cannot read the sweep: {err}") from None
    out = []
    for idx in np.ndindex(*res.grid_shape):
        coords = {k: float(res.axes[k][i]) for k, i in zip(GRID_AXES, idx)}
        point = res.point(**coords)
        varying = [f"{k}={coords[k]:g}" for k in GRID_AXES if len(res.axes[k]) > 1]
        dmft = {k: point[f"dmft_{k}"] for k in names if f"dmft_{k}" in point}
        out.append(dict(label=f"{os.path.basename(path)} " + ", ".join(varying), t=point["t"],
                        exp={k: point[k] for k in names}, diverged=point["diverged"],
                        dmft=dmft or None,
                        dmft_diverged=bool(point.get("dmft_diverged", False)),
                        dynamics=_dynamics_name(res.params.get("dmft_dynamics"), path),
                        dmft_step=_step_or_none(point.get("dmft_divergence_step"))))
    return out


def _solve_series(path: str, names) -> list[dict]:
    """Lines of a `dmft-jax solve --out` file, in the experiment's names."""
    spec = {"t": ArraySpec("real", 1), "e_tr": ArraySpec("real", 1),
            "e_ts": ArraySpec("real", 1), "a": ArraySpec("real"), "v": ArraySpec("real"),
            "gamma": ArraySpec("real", 1)}
    optional = {"C_d": ArraySpec("real", 2), "C_o": ArraySpec("real", 2),
                "dynamics": ArraySpec("text", 0)}
    data = read_npz("", path, spec, optional)
    dynamics = _dynamics_name(data.pop("dynamics", None), path)
    T = data["t"].shape[0]
    for key, arr in data.items():
        if arr.shape[0] != T or (key in optional and arr.shape != (T, T)):
            raise UsageError(f"{path!r}: array {key!r} has shape {arr.shape}, which does not "
                             f"match t ({T} times)")
    a = data["a"]
    lines = dict(e_tr=data["e_tr"], e_ts=data["e_ts"])
    if a.ndim == 1 and data["v"].ndim == 2:
        lines.update(a=a, gamma=data["gamma"], a_l1=np.abs(a), v=data["v"][:, 0])
        if "C_d" in data and "C_o" in data:
            idx = np.arange(T)
            lines.update(C_d0=data["C_d"][:, 0], C_o=data["C_o"][idx, idx])
    return [dict(label=os.path.basename(path), t=data["t"], exp=None, diverged=None,
                 dmft={k: v for k, v in lines.items() if k in names}, dmft_diverged=False,
                 dynamics=dynamics, dmft_step=None)]


def _series(path: str, names) -> list[dict]:
    """[{label, t, exp: {name: (seed, T)} | None, diverged, dmft: {name: (T,)} | None,
    dmft_diverged}] for one file, validated."""
    if not os.path.exists(path):
        raise UsageError(f"{path!r}: no such file")
    kind = _kind(path)
    if kind == "experiment":
        return _experiment_series(path, names)
    if kind == "sweep":
        return _sweep_series(path, names)
    from ._cli_nongaussian import compare_series, is_nongaussian
    if is_nongaussian(path):
        return compare_series(path, names)
    return _solve_series(path, names)


def _observable_names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in _all_observables()]
    if not names or unknown:
        raise UsageError(f"--observables: unknown {unknown or names} "
                         f"(known: {', '.join(_all_observables())})")
    return names


def _run_compare(args, out) -> int:
    import matplotlib

    from ._plot import new_figure
    names = _observable_names(args.observables)
    series = [s for path in args.files for s in _series(path, names)]
    cols = min(len(names), 2)
    rows = -(-len(names) // cols)
    fig, axes = new_figure(rows, cols, (5.5 * cols, 3.8 * rows))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, s in enumerate(series):
        for ax, name in zip(axes.flat, names):
            _draw(ax, s, name, colors[j % len(colors)])
    for ax, name in zip(axes.flat, names):
        ax.set(xlabel="t = steps lr d / n", ylabel=name)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    out.write_figure(fig, "out")
    skipped = sum(s["dmft_diverged"] for s in series)
    print(f"wrote {args.out} ({len(series)} series"
          + (f"; {skipped} diverged DMFT line(s) left out" if skipped else "") + ")")
    return 0


def _draw(ax, s, name, color) -> None:
    """One series: the DMFT line (labelled by its dynamics: the GD DMFT or the flow) and the
    experiment symbols; a diverged DMFT has no line, its legend entry names the step."""
    theory = "DMFT (GD)" if s["dynamics"] == "gd" else "DMFT"
    if s["dmft"] is not None and name in s["dmft"] and not s["dmft_diverged"]:
        ax.plot(s["t"], s["dmft"][name], "-", color=color, lw=1.5,
                label=f"{s['label']} {theory}" if s["exp"] is not None
                else s["label"] + (" (GD)" if s["dynamics"] == "gd" else ""))
        if name in s.get("se", {}):                  # non-Gaussian DMFT: +-1 standard error
            y, se = s["dmft"][name], s["se"][name]
            ax.fill_between(s["t"], y - se, y + se, color=color, alpha=0.25, lw=0)
    if s["exp"] is not None and name in s["exp"]:
        x = np.asarray(s["exp"][name], dtype=float)[~np.asarray(s["diverged"], dtype=bool)]
        if x.shape[0]:
            se = x.std(axis=0, ddof=1) / np.sqrt(x.shape[0]) if x.shape[0] > 1 else 0 * x[0]
            where = "" if s["dmft_step"] is None else f" at step {s['dmft_step']}"
            ax.errorbar(s["t"], x.mean(axis=0), yerr=se, fmt="o", ms=3.5, color=color,
                        capsize=2, label=f"{s['label']} ({x.shape[0]} runs)"
                        + (f", {theory} diverged{where}" if s["dmft_diverged"] else ""))


EXPERIMENT = Command("experiment", "train networks (the paper's SGD protocol by default) and "
                     "record the DMFT observables", _add_experiment, _run_experiment)
SWEEP = Command("sweep", "networks and their DMFT over a grid of a0 x lr x tau x alpha, one "
                "compiled graph", _add_sweep, _run_sweep)
COMPARE = Command("compare", "plot DMFT lines over experiment symbols from saved files",
                  _add_compare, _run_compare)
