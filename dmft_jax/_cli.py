"""The `dmft-jax` command line (also `python -m dmft_jax`).

This module holds the parser, the shared physics flags and the `solve` and `demo` commands.
Other commands register themselves through `COMMANDS` (name -> (add_arguments, run)).
Every error a user can cause ends in one line `dmft-jax <command>: error: ...` on stderr and
exit code 2 (bad input) or 1 (a solve that diverged); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np


class UsageError(Exception):
    """Bad input: reported as one line naming the flag, exit code 2."""


class SolveError(Exception):
    """A computation that failed (e.g. diverged): one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump)."""

    def error(self, message):
        raise UsageError(message)


def _enable_x64():
    # float64 is the default for theory; the CLI (not the library) turns it on.
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    import jax
    jax.config.update("jax_enable_x64", True)


# ------------------------------------------------------------------------------ parsing helpers
def _floats(flag: str, text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise UsageError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def add_covariance_arguments(p: argparse.ArgumentParser, default_target: str = "same") -> None:
    """The covariance and target flags (spec section 2), shared by every command."""
    g = p.add_argument_group("covariance and target (spec section 2)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--h", metavar="C0,C1,...|PRESET",
                     help="Taylor coefficients of h(q), constant term first (>= 0, h(1) > 0), "
                          "or a preset: cubic (0.9q + q^3/6, default), quadratic (0.9q + q^2/2), "
                          "fig8 (0.3q + q^2/2), validation (q/10 + q^2/2)")
    src.add_argument("--activation", metavar="NAME",
                     help="relu, erf, tanh or identity (centered, E sigma(G) = 0)")
    g.add_argument("--hermite-degree", type=int, default=40, metavar="K",
                   help="relu only: solve with its degree-K Hermite truncation (ReLU's h''(1) is "
                        "infinite, which makes the DMFT memory term diverge); default 40")
    tg = g.add_mutually_exclusive_group()
    tg.add_argument("--phihat", metavar="C0,C1,...[;...]",
                    help="Taylor coefficients of phihat per index direction (rows separated by ';')")
    tg.add_argument("--target", default=None, metavar="same|none|NAME",
                    help=f"phi = sigma (same), pure noise (none), or a named function "
                         f"(default {default_target})")
    p.set_defaults(default_target=default_target)
    g.add_argument("--k", type=int, default=None, help="number of index directions (default 1)")
    g.add_argument("--phi-norm2", type=float, default=None, metavar="X",
                   help="||phi||^2 (default: derived from the target)")


def add_physics_arguments(p: argparse.ArgumentParser, *, init: bool = True) -> None:
    """The physics flags shared by `solve`, `experiment`, `simulate`, `grad`."""
    add_covariance_arguments(p)
    ph = p.add_argument_group("model (spec section 1)")
    ph.add_argument("--tau", type=float, default=0.3, help="label noise (default 0.3)")
    ph.add_argument("--alpha", type=float, default=0.3, help="alpha = n/(m d) (default 0.3)")
    ph.add_argument("--m", type=int, default=None, help="width (default 16)")
    sc = ph.add_mutually_exclusive_group()
    sc.add_argument("--a0", type=float, default=None, help="mean-field init a_i(0) (default 1)")
    sc.add_argument("--gamma0", type=float, default=None, help="lazy init, a_i(0) = gamma0 sqrt(m)")
    ph.add_argument("--freeze-a", action="store_true", help="keep the second layer at a(0)")
    if init:
        ph.add_argument("--init", metavar="FILE.npz",
                        help="general DMFT from arrays a (m,), C (m, m), optional v (m, k)")


def _covariance_from(args):
    from ._covariance import PRESETS, covariance, relu_hermite_coefficients
    if args.activation is not None:
        name = args.activation.lower()
        if name == "relu":
            if args.hermite_degree < 1:
                raise UsageError(f"--hermite-degree must be >= 1, got {args.hermite_degree}")
            c = np.asarray(relu_hermite_coefficients(args.hermite_degree)) ** 2
            return covariance(c), "relu"
        if name not in ("erf", "tanh", "identity"):
            raise UsageError(f"--activation: unknown name {args.activation!r} "
                             "(relu, erf, tanh, identity)")
        return covariance(name), name
    spec = args.h or "cubic"
    if spec in PRESETS:
        return covariance(spec), spec
    try:
        return covariance(_floats("--h", spec)), _floats("--h", spec)
    except ValueError as err:
        raise UsageError(f"--h: {err}") from None


def _target_from(args, h_spec):
    from ._covariance import target
    k = args.k
    if k is not None and k < 1:
        raise UsageError(f"--k must be >= 1, got {k}")
    if args.phi_norm2 is not None and not args.phi_norm2 >= 0:
        raise UsageError(f"--phi-norm2 must be >= 0, got {args.phi_norm2}")
    if args.phihat is not None:
        rows = [_floats("--phihat", r) for r in args.phihat.split(";")]
        if any(len(r) == 0 for r in rows):
            raise UsageError(f"--phihat: empty coefficient row in {args.phihat!r}")
        if k is not None and len(rows) not in (1, k):
            raise UsageError(f"--phihat gives {len(rows)} index directions but --k is {k} "
                             "(mismatched k)")
        k = k or len(rows)
        spec = rows if len(rows) > 1 else rows[0]
    else:
        spec = args.target or getattr(args, "default_target", "same")
        k = k or 1
    if h_spec == "relu" and isinstance(spec, str) and spec.lower() == "relu":
        spec = "same"  # phi = the (truncated) relu the solve uses
    try:
        return target(spec, h_spec, k=k, norm2=args.phi_norm2)
    except ValueError as err:
        raise UsageError(f"--{'phihat' if args.phihat else 'target'}: {err}") from None


def _check_common(args):
    if args.m is None and not getattr(args, "init", None):
        args.m = 16
    if args.m is not None and args.m < 1:
        raise UsageError(f"--m must be >= 1, got {args.m}")
    if not args.alpha > 0:
        raise UsageError(f"--alpha must be > 0, got {args.alpha}")
    if not args.tau >= 0:
        raise UsageError(f"--tau must be >= 0, got {args.tau}")
    for flag in ("a0", "gamma0"):
        val = getattr(args, flag)
        if val is not None and not np.isfinite(val):
            raise UsageError(f"--{flag.replace('_', '-')} must be finite, got {val}")


def covariance_and_target(args):
    """(h, target) from the covariance and target flags (UsageError on bad input)."""
    h, h_spec = _covariance_from(args)
    return h, _target_from(args, h_spec)


def model_from_args(args):
    """The DMFT model described by the physics flags (symmetric, or general with --init)."""
    from ._dmft import symmetric_dmft
    _check_common(args)
    h, h_spec = _covariance_from(args)
    tgt = _target_from(args, h_spec)
    if getattr(args, "init", None):
        return _general_from_file(args, h, tgt)
    scale = {"gamma0": args.gamma0} if args.gamma0 is not None else {"a0": 1.0 if args.a0 is None
                                                                       else args.a0}
    try:
        return symmetric_dmft(h, tgt, tau=args.tau, alpha=args.alpha, m=args.m,
                              freeze_a=args.freeze_a, **scale)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _general_from_file(args, h, tgt):
    from ._dmft import general_dmft
    try:
        data = np.load(args.init)
    except (OSError, ValueError) as err:
        raise UsageError(f"--init: cannot read {args.init!r}: {err}") from None
    missing = [key for key in ("a", "C") if key not in data]
    if missing:
        raise UsageError(f"--init: {args.init!r} lacks array(s) {missing} (needs a (m,), C (m, m))")
    v = data["v"] if "v" in data else None
    if v is not None and v.ndim == 2 and v.shape[1] != tgt.k:
        raise UsageError(f"--init: v has k = {v.shape[1]} columns but the target has k = {tgt.k} "
                         "(mismatched k; set --k or --phihat rows)")
    if args.gamma0 is not None or args.a0 is not None:
        raise UsageError("--init sets a(0) from the file: do not combine it with --a0/--gamma0")
    if args.m is not None and args.m != np.shape(data["a"])[0]:
        raise UsageError(f"--m {args.m} does not match the {np.shape(data['a'])[0]} neurons of --init")
    try:
        return general_dmft(h, tgt, tau=args.tau, alpha=args.alpha, a=data["a"], C=data["C"],
                            v=v, freeze_a=args.freeze_a)
    except ValueError as err:
        raise UsageError(f"--init: {err}") from None


def add_grid_arguments(p: argparse.ArgumentParser, dt: float = 0.05, steps: int = 200) -> None:
    g = p.add_argument_group("time grid (spec section 6)")
    g.add_argument("--dt", type=float, default=dt, help=f"time step (default {dt})")
    g.add_argument("--steps", type=int, default=steps, help=f"number of steps N (default {steps})")


def grid_from_args(args):
    from ._grid import TimeGrid
    if not args.dt > 0 or not np.isfinite(args.dt):
        raise UsageError(f"--dt must be > 0, got {args.dt}")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    return TimeGrid(args.dt, args.steps)


# ---------------------------------------------------------------------------------- solving
def stability_dt(model, a_max: float) -> float:
    """A step size inside the explicit-Euler stability bound of spec section 6.

    The delta part of M^R decays at rate ~ alpha a^2 h'(1) (alpha_bar a^2 h'(1) / m), so
    explicit Euler needs dt below ~ 1 / (alpha a^2 h'(1)); we suggest half of that.
    """
    rate = float(model.alpha) * max(a_max, 1e-12) ** 2 * float(model.h.d1(1.0))
    return 0.5 / max(rate, 1e-12)


def timed_solve(model, grid, progress: bool):
    """Compile, then run, the solve; returns (solution, compile seconds, run seconds)."""
    import equinox as eqx
    import jax
    from ._integrate import integrate
    params, static = eqx.partition((model, grid), eqx.is_array)

    def run(p):
        mod, grd = eqx.combine(p, static)
        return integrate(mod, grd, progress=progress, throw=False)

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(params).compile()
    t1 = time.perf_counter()
    sol = jax.block_until_ready(compiled(params))
    return sol, t1 - t0, time.perf_counter() - t1


def check_diverged(sol, model, grid) -> None:
    """Raise SolveError naming the time and a smaller step if the solve diverged."""
    if not bool(sol.diverged):
        return
    t_bad = float(sol.divergence_time)
    a0 = float(np.max(np.abs(np.asarray(model.a0))))
    suggest = min(stability_dt(model, a0), 0.5 * float(grid.dt))
    raise SolveError(f"the solve diverged at t = {t_bad:.4g} (non-finite values or |C| > 1): "
                     f"the step --dt {float(grid.dt):g} is too large for explicit Euler "
                     f"(stability needs dt < ~1/(alpha a^2 h'(1)), spec section 6); "
                     f"try --dt {suggest:.3g}")


def solution_arrays(sol, model) -> dict[str, np.ndarray]:
    """The arrays written by `solve --out` (documented in the README)."""
    from ._algebra import Symmetric
    # Euler's R_A carries the delta as 1/dt on its diagonal (the matrix form [D.5]).
    size = np.shape(sol.t)[0]
    r_a = np.asarray(sol.R_A) + np.eye(size) / float(sol.t[1] - sol.t[0])
    out = dict(t=sol.t, a=sol.a, v=sol.v, nu=sol.nu, rho=sol.rho, e_tr=sol.e_tr, e_ts=sol.e_ts,
               gamma=sol.gamma, C_A=sol.C_A, R_A=r_a)
    if isinstance(model.algebra, Symmetric):
        out.update(C_d=sol.C_d, C_o=sol.C_o, R_d=sol.R_d, R_o=sol.R_o)
    else:
        out.update(C=np.moveaxis(np.asarray(sol.C), (0, 1), (2, 3)),
                   R=np.moveaxis(np.asarray(sol.R), (0, 1), (2, 3)))
    return {key: np.asarray(val) for key, val in out.items()}


def _params_of(args) -> dict:
    skip = {"func", "command", "out", "plot", "json"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _add_solve(p):
    add_physics_arguments(p)
    add_grid_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE.npz", help="write the solution arrays")
    o.add_argument("--plot", metavar="FILE.png", help="write a figure of the solution")
    o.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    o.add_argument("--progress", action="store_true", default=None,
                   help="progress lines on stderr (default: on for >= 1000 steps)")


def _run_solve(args) -> int:
    model = model_from_args(args)
    grid = grid_from_args(args)
    progress = args.progress if args.progress is not None else grid.steps >= 1000
    sol, t_compile, t_run = timed_solve(model, grid, progress)
    check_diverged(sol, model, grid)
    arrays = solution_arrays(sol, model)
    if args.out:
        np.savez(args.out, params=json.dumps(_params_of(args)), **arrays)
    if args.plot:
        from ._plot import plot_solution
        plot_solution(arrays, args.plot, title=_title(args))
    summary = dict(e_tr=float(arrays["e_tr"][-1]), e_ts=float(arrays["e_ts"][-1]),
                   a=_final(arrays["a"]), t=float(arrays["t"][-1]), steps=grid.steps,
                   dt=float(grid.dt), m=model.m, k=model.k,
                   wall_time_s=round(t_run, 4), compile_time_s=round(t_compile, 4))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"t = {summary['t']:g}: e_tr = {summary['e_tr']:.6g}, e_ts = {summary['e_ts']:.6g} "
              f"(compile {t_compile:.2f} s, solve {t_run:.2f} s)"
              + (f"; wrote {args.out}" if args.out else "") + (f", {args.plot}" if args.plot else ""))
    return 0


def _final(a):
    a = np.asarray(a)
    return float(a[-1]) if a.ndim == 1 else [float(x) for x in a[-1]]


def _title(args) -> str:
    scale = f"gamma0={args.gamma0}" if args.gamma0 is not None else f"a0={args.a0 or 1.0}"
    return f"m={args.m}, alpha={args.alpha}, tau={args.tau}, {scale}"


def _add_demo(p):
    p.add_argument("--out", default="demo.png", metavar="FILE.png",
                   help="figure to write (default demo.png)")
    p.add_argument("--quick", action="store_true", help="smaller widths (a few seconds)")


def _run_demo(args) -> int:
    from ._demo import run_demo
    run_demo(args.out, quick=args.quick)
    return 0


# ------------------------------------------------------------------------------- the parser
#: name -> (help, add_arguments, run). Other modules add their commands here.
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "solve": ("solve the DMFT (symmetric, or general with --init)", _add_solve, _run_solve),
    "demo": ("the three regimes of train/test error for a few widths (writes a figure)",
             _add_demo, _run_demo),
}


def _register_optional_commands() -> None:
    """Import modules that add commands to COMMANDS (each one optional)."""
    import importlib
    for name in ("_cli_experiment", "_cli_simulate", "_cli_threshold", "_cli_grad"):
        try:
            importlib.import_module(f"dmft_jax.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"dmft_jax.{name}":
                raise


def build_parser() -> argparse.ArgumentParser:
    _register_optional_commands()
    parser = _Parser(prog="dmft-jax",
                     description="Dynamical mean field theory of two-layer networks (spec: "
                                 "Montanari & Urbani, arXiv:2502.21269).")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"dmft-jax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_text, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), "")
    prefix = f"dmft-jax {command}".strip()
    try:
        _enable_x64()  # before any array exists
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return 2
    except SolveError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
