"""`dmft-jax experiment`, `dmft-jax sweep`, `dmft-jax compare`: real networks next to the DMFT.

    dmft-jax experiment --h cubic --tau 0.3 --alpha 0.3 --m 16 --a0 1 --d 200 --seeds 10 \\
        --lr 0.1 --batch 100 --t-max 2 --record-every 0.1 --projection ball --dmft --out e.npz

trains `--seeds` networks (spec section 1; defaults: the paper's SGD protocol of spec section 9,
d = 200, lr 0.1, batch 100, unit-ball projection, W(0) entries N(0, 1/d) then projected,
a_i(0) = a0) and writes an `.npz` with

    t (T,)                      gradient-flow times t = steps * lr * d / n
    a, gamma, a_l1, v, C_d0, C_o, e_tr, e_ts   (seeds, T)   (see dmft_jax._train)
    diverged, divergence_time   (seeds,)
    dmft_<observable> (T,), dmft_diverged      with --dmft: the symmetric DMFT at the same times
    params                      JSON of the flags

`sweep` runs a grid (a0 x lr x tau x alpha, from --grid-* flags or a JSON/TOML file) with its
DMFTs in one compiled graph and writes a `SweepResult` file; `compare` plots DMFT lines over
experiment symbols (mean +- standard error) from saved files.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from ._cli import (
    COMMANDS,
    UsageError,
    _check_common,
    _covariance_from,
    _floats,
    _target_from,
    add_physics_arguments,
)

_SUMMARY = ("a", "v", "e_tr", "e_ts")


# ------------------------------------------------------------------------------ shared flags
def _add_training_arguments(p, *, sweep: bool = False) -> None:
    g = p.add_argument_group("network training (spec sections 1 and 9)")
    g.add_argument("--d", type=int, default=200, help="input dimension (default 200)")
    g.add_argument("--seeds", type=int, default=10, help="independent runs (default 10)")
    g.add_argument("--lr", type=float, default=0.1, help="step size (default 0.1)")
    g.add_argument("--batch", type=int, default=100,
                   help="SGD batch size; 0 = full-batch GD (default 100)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="number of steps")
    length.add_argument("--t-max", type=float, default=None, metavar="T",
                        help="final gradient-flow time (default 2; t = steps * lr * d / n)"
                             + ("; a sweep runs the steps its smallest lr needs" if sweep else ""))
    g.add_argument("--record-every", type=float, default=None, metavar="DT",
                   help="gradient-flow time between records (default: 20 records)")
    g.add_argument("--projection", choices=("sphere", "ball"), default="ball",
                   help="rows onto the unit sphere or ball after each step (default ball, "
                        "the paper's protocol)")
    g.add_argument("--seed", type=int, default=0, help="base PRNG seed (default 0)")
    g.add_argument("--float32", action="store_true", help="train in float32 (DMFT stays float64)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE.npz", help="write the arrays")
    o.add_argument("--json", action="store_true", help="print a one-line JSON summary")


def _positive(flag: str, value, integer: bool = False, allow_zero: bool = False):
    ok = value is not None and np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise UsageError(f"{flag} must be {kind} {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def _a0(args) -> float:
    """a_i(0) from --a0 (default 1) or --gamma0 (a0 = gamma0 sqrt(m))."""
    if args.gamma0 is not None:
        return args.gamma0 * math.sqrt(args.m)
    return 1.0 if args.a0 is None else args.a0


def _physics(args):
    """(problem, DMFT covariance, DMFT target) from the physics flags."""
    from ._network import problem
    _check_common(args)
    h, h_spec = _covariance_from(args)
    tgt = _target_from(args, h_spec)
    if args.phi_norm2 is not None:
        raise UsageError("--phi-norm2: experiments need the target function itself; give it by "
                         "--target or --phihat (||phi||^2 then follows)")
    if args.phihat is not None:
        rows = [_floats("--phihat", r) for r in args.phihat.split(";")]
        spec = rows if len(rows) > 1 else rows[0]
    else:
        spec = args.target or "same"
    if h_spec == "relu" and isinstance(spec, str) and spec.lower() == "relu":
        spec = "same"
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
        steps = int(_positive("--steps", args.steps, integer=True))
    else:
        t_max = _positive("--t-max", 2.0 if args.t_max is None else args.t_max)
        steps = max(1, int(round(t_max / dt)))
    if args.record_every is None:
        every = max(1, steps // 20)
    else:
        every = max(1, int(round(_positive("--record-every", args.record_every) / dt)))
    every = min(every, steps)
    return -(-steps // every) * every, every


def _check_training(args, alphas) -> None:
    from ._train import n_samples
    _positive("--d", args.d, integer=True)
    _positive("--seeds", args.seeds, integer=True)
    _positive("--batch", args.batch, integer=True, allow_zero=True)
    n = min(n_samples(al, args.m, args.d) for al in alphas)
    if args.batch > n:
        raise UsageError(f"--batch {args.batch} exceeds the training set n = alpha m d = {n} "
                         "(use --batch 0 for full-batch GD)")


def _run_sweep_core(args, *, grid: dict, dmft: bool):
    """Run `sweep` for the flags and a grid {a0, lr, tau, alpha: lists}; returns (result, s)."""
    from ._sweep import sweep
    from ._train import gradient_flow_step
    prob, h, tgt = _physics(args)
    # The DMFT uses the network's own h and target, except for ReLU, whose h''(1) is infinite:
    # there the solve's degree-K Hermite truncation (--hermite-degree).
    dmft_h = h if args.activation is not None and args.activation.lower() == "relu" else None
    _check_training(args, grid["alpha"])
    dts = [float(gradient_flow_step(lr, al, args.m, args.d))
           for lr in grid["lr"] for al in grid["alpha"]]
    steps, every = _schedule(args, dts)
    t0 = time.perf_counter()
    try:
        res = sweep(prob, m=args.m, d=args.d, steps=steps, record_every=every,
                    seeds=args.seeds, seed=args.seed, batch=args.batch,
                    projection=args.projection, freeze_a=args.freeze_a, dmft=dmft, dmft_h=dmft_h,
                    dtype="float32" if args.float32 else None, **grid)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return res, time.perf_counter() - t0


def _params_of(args, **extra) -> str:
    skip = {"func", "command", "out", "json"}
    params = {k: v for k, v in vars(args).items() if k not in skip}
    params.update(extra)
    return json.dumps(params, default=str)


# ------------------------------------------------------------------------------- experiment
def _add_experiment(p):
    add_physics_arguments(p, init=False)
    _add_training_arguments(p)
    p.add_argument("--dmft", action="store_true",
                   help="also solve the matching symmetric DMFT (dt = lr d / n, same times)")


def experiment_arrays(res) -> dict[str, np.ndarray]:
    """The documented arrays of `experiment --out` from a one-point sweep."""
    return {k: np.asarray(v) for k, v in res.point().items()}


def _summary(arrays, seconds, args) -> dict:
    ok = ~arrays["diverged"]
    out = dict(t=float(arrays["t"][-1]), seeds=int(arrays["diverged"].size),
               diverged=int((~ok).sum()), seconds=round(seconds, 3))
    for name in _SUMMARY:
        x = arrays[name][ok, -1]
        out[name] = float(np.mean(x)) if x.size else float("nan")
        out[f"{name}_se"] = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
        if f"dmft_{name}" in arrays:
            out[f"dmft_{name}"] = float(arrays[f"dmft_{name}"][-1])
    return out


def _run_experiment(args) -> int:
    _check_common(args)
    grid = dict(a0=[_a0(args)], lr=[_positive("--lr", args.lr)], tau=[args.tau],
                alpha=[args.alpha])
    res, seconds = _run_sweep_core(args, grid=grid, dmft=args.dmft)
    arrays = experiment_arrays(res)
    if args.out:
        np.savez(args.out, kind=np.asarray("experiment"),
                 params=np.asarray(_params_of(args, **res.params)), **arrays)
    summary = _summary(arrays, seconds, args)
    if args.json:  # strict JSON: NaN (every run diverged) becomes null
        print(json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                          for k, v in summary.items()}))
    else:
        parts = []
        for name in _SUMMARY:
            text = f"{name} = {summary[name]:.4g} +- {summary[name + '_se']:.2g}"
            if f"dmft_{name}" in summary:
                text += f" (DMFT {summary['dmft_' + name]:.4g})"
            parts.append(text)
        print(f"t = {summary['t']:.4g}, {summary['seeds']} runs "
              f"({summary['diverged']} diverged): " + ", ".join(parts)
              + f" [{seconds:.1f} s]" + (f"; wrote {args.out}" if args.out else ""))
    return 0


# ------------------------------------------------------------------------------------ sweep
_GRID_KEYS = ("a0", "lr", "tau", "alpha")


def _add_sweep(p):
    add_physics_arguments(p, init=False)
    _add_training_arguments(p, sweep=True)
    g = p.add_argument_group("grid (values override the single-valued flags)")
    for key in _GRID_KEYS:
        g.add_argument(f"--grid-{key}", metavar="X,Y,...", help=f"values of {key}")
    g.add_argument("--grid", metavar="FILE.json|FILE.toml",
                   help="axis values {a0: [...], lr: [...], tau: [...], alpha: [...]} in a file")
    g.add_argument("--no-dmft", action="store_true", help="skip the DMFT solves")


def _grid_file(path: str) -> dict:
    try:
        if path.endswith(".toml"):
            import tomllib
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        else:
            with open(path) as fh:
                data = json.load(fh)
    except (OSError, ValueError) as err:
        raise UsageError(f"--grid: cannot read {path!r}: {err}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--grid: {path!r} must hold a table of axes {list(_GRID_KEYS)}")
    unknown = sorted(set(data) - set(_GRID_KEYS))
    if unknown:
        raise UsageError(f"--grid: unknown key(s) {unknown} in {path!r} (axes: {list(_GRID_KEYS)})")
    out = {}
    for key, val in data.items():
        vals = val if isinstance(val, list) else [val]
        if not vals or not all(isinstance(x, (int, float)) for x in vals):
            raise UsageError(f"--grid: {key} in {path!r} must be a number or a list of numbers")
        out[key] = [float(x) for x in vals]
    return out


def _sweep_grid(args) -> dict:
    grid = _grid_file(args.grid) if args.grid else {}
    for key in _GRID_KEYS:
        text = getattr(args, f"grid_{key}")
        if text is not None:
            if key in grid:
                raise UsageError(f"--grid-{key}: {key} is also given in --grid {args.grid!r}")
            vals = _floats(f"--grid-{key}", text)
            if not vals:
                raise UsageError(f"--grid-{key}: no values in {text!r}")
            grid[key] = vals
    grid.setdefault("a0", [_a0(args)])
    grid.setdefault("lr", [args.lr])
    grid.setdefault("tau", [args.tau])
    grid.setdefault("alpha", [args.alpha])
    checks = dict(a0=(None, "finite"), lr=(0, "> 0"), tau=(0, ">= 0"), alpha=(0, "> 0"))
    for key, (bound, text) in checks.items():
        flag = f"--grid-{key}" if getattr(args, f"grid_{key}") else ("--grid" if args.grid
                                                                      else f"--{key}")
        for x in grid[key]:
            bad = not np.isfinite(x) or (bound is not None and (x < bound if key == "tau"
                                                                  else x <= bound))
            if bad:
                raise UsageError(f"{flag}: {key} must be {text}, got {x}")
    return grid


def _run_sweep(args) -> int:
    _check_common(args)
    grid = _sweep_grid(args)
    res, seconds = _run_sweep_core(args, grid=grid, dmft=not args.no_dmft)
    res.params["flags"] = _params_of(args)
    if args.out:
        res.save(args.out)
    div = int(np.sum(res.experiment["diverged"]))
    total = int(np.size(res.experiment["diverged"]))
    summary = dict(points=int(np.prod(res.grid_shape)), runs=total, diverged=div,
                   steps=res.params["steps"], seconds=round(seconds, 3))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['points']} grid points x {args.seeds} seeds, {res.params['steps']} "
              f"steps: {div}/{total} runs diverged [{seconds:.1f} s]"
              + (f"; wrote {args.out}" if args.out else ""))
    return 0


# ---------------------------------------------------------------------------------- compare
def _add_compare(p):
    p.add_argument("files", nargs="+", metavar="FILE.npz",
                   help="experiment or sweep files (symbols, with their DMFT lines), or "
                        "`dmft-jax solve --out` files (lines)")
    p.add_argument("--observables", default="a,v,e_tr,e_ts", metavar="NAMES",
                   help="comma-separated (a, gamma, a_l1, v, C_d0, C_o, e_tr, e_ts)")
    p.add_argument("--out", default="compare.png", metavar="FILE.png",
                   help="figure to write (default compare.png)")


def _solve_lines(data) -> dict:
    """Observables of a `dmft-jax solve --out` file, in the experiment's names."""
    idx = np.arange(len(data["t"]))
    a = np.asarray(data["a"])
    out = dict(t=data["t"], e_tr=data["e_tr"], e_ts=data["e_ts"])
    if a.ndim == 1:
        out.update(a=a, gamma=data["gamma"], a_l1=np.abs(a), v=np.asarray(data["v"])[:, 0])
        if "C_d" in data.files:
            out.update(C_d0=data["C_d"][:, 0], C_o=data["C_o"][idx, idx])
    return out


def _series(path: str) -> list[dict]:
    """[{label, t, exp: {name: (seed, T)} | None, dmft: {name: (T,)} | None}] for one file."""
    from ._sweep import GRID_AXES, SweepResult
    try:
        data = np.load(path)
    except (OSError, ValueError) as err:
        raise UsageError(f"compare: cannot read {path!r}: {err}") from None
    name = os.path.basename(path)
    kind = str(data["kind"]) if "kind" in data.files else "solve"
    if kind == "experiment":
        exp = {k: data[k] for k in data.files if k in _all_observables()}
        dmft = {k[5:]: data[k] for k in data.files if k.startswith("dmft_")} or None
        return [dict(label=name, t=data["t"], exp=exp, diverged=data["diverged"], dmft=dmft)]
    if kind == "sweep":
        res = SweepResult.load(path)
        out = []
        for idx in np.ndindex(*res.grid_shape):
            coords = {k: float(res.axes[k][i]) for k, i in zip(GRID_AXES, idx)}
            point = res.point(**coords)
            varying = [f"{k}={coords[k]:g}" for k in GRID_AXES if len(res.axes[k]) > 1]
            out.append(dict(label=f"{name} " + ", ".join(varying), t=point["t"],
                            exp={k: point[k] for k in _all_observables()},
                            diverged=point["diverged"],
                            dmft={k: point[f"dmft_{k}"] for k in _all_observables()
                                  if f"dmft_{k}" in point} or None))
        return out
    if "t" not in data.files or "e_tr" not in data.files:
        raise UsageError(f"compare: {path!r} is neither an experiment, a sweep nor a solve file")
    lines = _solve_lines(data)
    return [dict(label=name, t=lines.pop("t"), exp=None, diverged=None, dmft=lines)]


def _all_observables():
    from ._train import OBSERVABLES
    return OBSERVABLES


def _run_compare(args) -> int:
    from ._plot import _pyplot
    names = [x.strip() for x in args.observables.split(",") if x.strip()]
    unknown = [x for x in names if x not in _all_observables()]
    if not names or unknown:
        raise UsageError(f"--observables: unknown {unknown or names} "
                         f"(known: {', '.join(_all_observables())})")
    series = [s for path in args.files for s in _series(path)]
    plt = _pyplot()
    cols = min(len(names), 2)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False,
                             constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, s in enumerate(series):
        color = colors[j % len(colors)]
        for ax, name in zip(axes.flat, names):
            _draw(ax, s, name, color)
    for ax, name in zip(axes.flat, names):
        ax.set(xlabel="t (gradient flow)", ylabel=name)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    print(f"wrote {args.out} ({len(series)} series)")
    return 0


def _draw(ax, s, name, color) -> None:
    if s["dmft"] is not None and name in s["dmft"]:
        ax.plot(s["t"], s["dmft"][name], "-", color=color, lw=1.5,
                label=f"{s['label']} DMFT" if s["exp"] is not None else s["label"])
    if s["exp"] is not None and name in s["exp"]:
        x = np.asarray(s["exp"][name], dtype=float)[~np.asarray(s["diverged"])]
        if x.shape[0]:
            se = x.std(axis=0, ddof=1) / np.sqrt(x.shape[0]) if x.shape[0] > 1 else 0 * x[0]
            ax.errorbar(s["t"], x.mean(axis=0), yerr=se, fmt="o", ms=3.5, color=color,
                        capsize=2, label=f"{s['label']} ({x.shape[0]} runs)")


COMMANDS["experiment"] = ("train networks (the paper's SGD protocol by default) and record "
                          "the DMFT observables", _add_experiment, _run_experiment)
COMMANDS["sweep"] = ("networks and their DMFT over a grid of a0 x lr x tau x alpha, one "
                     "compiled graph", _add_sweep, _run_sweep)
COMMANDS["compare"] = ("plot DMFT lines over experiment symbols from saved files",
                       _add_compare, _run_compare)
