"""`dmft-jax solve` (one DMFT solve, its arrays, a figure, a summary) and `dmft-jax demo`."""

from __future__ import annotations

import sys
import time

import numpy as np

from . import _cli_adaptive as adaptive
from . import _cli_nongaussian as nongaussian
from ._cli_args import Command, SolveError, check_memory, solve_bytes
from ._cli_io import DATA, FIGURE, add_output_arguments, diverged, divergence_line
from ._cli_physics import (
    add_dynamics_arguments,
    add_grid_arguments,
    add_physics_arguments,
    check_dynamics,
    dynamics_model,
    general_width,
    model_from_args,
    smaller_dt,
)


def solve_sizes(args, model) -> str:
    """The flags that set a solve's memory, for the preflight's message."""
    parts = [f"--steps {args.steps}"]
    m = general_width(model)
    if m is not None:
        parts.append(f"--init with m = {m}")
    if model.k > 1:
        parts.append(f"k = {model.k}")
    return ", ".join(parts)


def check_solve_memory(args, model, copies: float = 1.0) -> None:
    """Refuse a solve (times `copies`, e.g. ~3 for its gradient) beyond the available memory."""
    if getattr(args, "t_max", None) is not None:
        m = general_width(model)
        pair, vec = (2.0, 1.0) if m is None else (float(m) ** 2, float(m))
        check_memory(copies * adaptive.adaptive_bytes(args.history, args.max_steps, pair, vec,
                                                      model.k),
                     f"--history {args.history}, --max-steps {args.max_steps}"
                     + (f", --init with m = {m}" if m is not None else ""))
        return
    check_memory(copies * solve_bytes(args.steps, general_width(model), model.k),
                 solve_sizes(args, model))


def timed_solve(model, grid, progress: bool, stepper=None):
    """Compile, then run, the solve; returns (solution, compile seconds, run seconds)."""
    import equinox as eqx
    import jax

    from ._integrate import integrate
    params, static = eqx.partition((model, grid), eqx.is_array)

    def run(p):
        mod, grd = eqx.combine(p, static)
        return integrate(mod, grd, stepper, progress=progress, throw=False)

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(params).compile()
    t1 = time.perf_counter()
    sol = jax.block_until_ready(compiled(params))
    return sol, t1 - t0, time.perf_counter() - t1


def divergence_error(sol, model, grid) -> str:
    """The one-line message of a diverged solve: when, why, and a step to try."""
    t_bad = float(sol.divergence_time)
    dt = float(grid.dt)
    hint = (f"at t = {t_bad:.4g} (non-finite values or |C| > 1): the step --dt {dt:g} is too "
            "large for explicit Euler (stability needs dt < ~1/(alpha a^2 h'(1)), "
            f"docs/equations.md section 6); try --dt {smaller_dt(model, dt):.3g}")
    return divergence_line("the solve", 1, 1, hint)


def solution_arrays(sol, model, euler: bool = True) -> dict[str, np.ndarray]:
    """The arrays written by `solve --out` on a uniform grid (documented in the README)."""
    # Euler's R_A carries the delta as 1/dt on its diagonal (the matrix form [D.5]); the
    # trapezoid's delta is exact, its R_A is the regular part. The discrete GD DMFT has the
    # Euler layout (`euler=True`): its R_A is 1/eta on the diagonal exactly ([G.2]).
    size = np.shape(sol.t)[0]
    r_a = np.asarray(sol.R_A) + (np.eye(size) / float(sol.t[1] - sol.t[0]) if euler else 0.0)
    out = dict(t=sol.t, a=sol.a, v=sol.v, nu=sol.nu, rho=sol.rho, e_tr=sol.e_tr, e_ts=sol.e_ts,
               gamma=sol.gamma, C_A=sol.C_A, R_A=r_a)
    if general_width(model) is None:
        out.update(C_d=sol.C_d, C_o=sol.C_o, R_d=sol.R_d, R_o=sol.R_o)
    else:
        out.update(C=np.moveaxis(np.asarray(sol.C), (0, 1), (2, 3)),
                   R=np.moveaxis(np.asarray(sol.R), (0, 1), (2, 3)))
    return {key: np.asarray(val) for key, val in out.items()}


def _add_solve(p):
    add_physics_arguments(p)
    add_grid_arguments(p, dt=None, steps=None)
    add_dynamics_arguments(p)
    adaptive.add_adaptive_arguments(p)
    nongaussian.add_nongaussian_arguments(p)
    add_output_arguments(p, plot=True)
    p.set_defaults(_output_files=dict(p.get_default("_output_files"), checkpoint=DATA))
    p.add_argument("--progress", action="store_true", default=None,
                   help="progress lines on stderr, from compilation on (default: on for >= "
                        "1000 steps and for adaptive solves)")


def _run_solve(args, out) -> int:
    if nongaussian.theory(args) == "nongaussian":
        return nongaussian.run_solve(args, out)
    nongaussian.check_gaussian(args)
    check_dynamics(args)
    if args.dynamics == "gd":
        return _run_gd(args, out, model_from_args(args))
    adaptive.check_flags(args)
    model = model_from_args(args)
    if args.t_max is not None:
        return _run_adaptive(args, out, model)
    model, grid = dynamics_model(args, model)
    check_solve_memory(args, model)
    progress = args.progress if args.progress is not None else grid.steps >= 1000
    if progress:  # compilation takes seconds to minutes at large N: say what is happening
        print(f"dmft-jax solve: compiling the solver ({grid.steps} steps)", file=sys.stderr,
              flush=True)
    from ._stepper import Euler, Trapezoid
    euler = args.method == "euler"
    sol, t_compile, t_run = timed_solve(model, grid, progress, Euler() if euler else Trapezoid())
    summary = dict(dynamics="flow", steps=grid.steps, dt=float(grid.dt), m=model.m, k=model.k,
                   method=args.method, wall_time_s=round(t_run, 4),
                   compile_time_s=round(t_compile, 4))
    if diverged(sol):
        out.error_json(dict(summary, diverged=True, divergence_time=float(sol.divergence_time)))
        raise SolveError(divergence_error(sol, model, grid))
    arrays = solution_arrays(sol, model, euler)
    out.write_npz(dict(arrays, dynamics=np.asarray("flow"), params=np.asarray(out.params())))
    if out.path("plot"):
        from ._plot import solution_figure
        out.write_figure(solution_figure(arrays, title=_title(args)), "plot")
    summary = dict(e_tr=float(arrays["e_tr"][-1]), e_ts=float(arrays["e_ts"][-1]),
                   a=_final(arrays["a"]), t=float(arrays["t"][-1]), diverged=False, **summary)
    out.report(summary, f"t = {summary['t']:g}: e_tr = {summary['e_tr']:.6g}, "
                        f"e_ts = {summary['e_ts']:.6g} (compile {t_compile:.2f} s, "
                        f"solve {t_run:.2f} s)")
    return 0


def _run_gd(args, out, model) -> int:
    """`solve --dynamics gd`: the exact DMFT of projected GD (docs/discrete_gd.md) on the
    iterates t_k = k eta. Its divergence is a result about GD (the step at which it happens),
    reported as such (exit 1, no file), not as a failure of the solver."""
    model, grid = dynamics_model(args, model)
    check_solve_memory(args, model)
    progress = args.progress if args.progress is not None else grid.steps >= 1000
    if progress:
        print(f"dmft-jax solve: compiling the discrete GD DMFT ({grid.steps} steps)",
              file=sys.stderr, flush=True)
    sol, t_compile, t_run = timed_solve(model, grid, progress)
    eta = float(grid.dt)
    stab = gd_stability(sol)
    summary = dict(dynamics="gd", lr=float(args.lr), eta=eta, steps=grid.steps, m=model.m,
                   k=model.k, edge_of_stability_step=stab["rise_step"],
                   edge_of_stability_time=stab["rise_time"], wall_time_s=round(t_run, 4),
                   compile_time_s=round(t_compile, 4))
    if diverged(sol):
        summary.update(diverged=True, divergence_step=stab["divergence_step"],
                       divergence_time=stab["divergence_time"], cause=stab["cause"])
        out.error_json(summary)
        raise SolveError(divergence_line("gradient descent", 1, 1,
                                         divergence_report(stab, args.lr, eta)))
    arrays = solution_arrays(sol, model.dmft, euler=True)
    out.write_npz(dict(arrays, dynamics=np.asarray("gd"), eta=np.asarray(eta),
                       params=np.asarray(out.params())))
    if out.path("plot"):
        from ._plot import solution_figure
        out.write_figure(solution_figure(arrays, title=_title(args) + f", GD lr={args.lr:g}"),
                         "plot")
    summary = dict(e_tr=float(arrays["e_tr"][-1]), e_ts=float(arrays["e_ts"][-1]),
                   a=_final(arrays["a"]), t=float(arrays["t"][-1]), diverged=False, **summary)
    rise = ("" if stab["rise_step"] is None else
            f"; e_tr first rises at step {stab['rise_step']} (edge of stability)")
    out.report(summary, f"GD, {grid.steps} steps of eta = {eta:.4g}, t = {summary['t']:g}: "
                        f"e_tr = {summary['e_tr']:.6g}, e_ts = {summary['e_ts']:.6g}{rise} "
                        f"(compile {t_compile:.2f} s, solve {t_run:.2f} s)")
    return 0


def gd_stability(sol) -> dict:
    """The stability markers of a GD solve (`dmft_jax._stability`) as plain numbers: the edge
    of stability (first rise of e_tr) and the divergence step, with their times, and the part
    of the divergence rule that was broken."""
    from ._stability import divergence_step, edge_of_stability_step
    t = np.asarray(sol.t)
    e = np.asarray(sol.e_tr)
    bad = int(divergence_step(sol))
    # the rise is read on the rows before divergence (a diverged row is no longer a GD iterate)
    rise = int(edge_of_stability_step(e[: bad + 1] if bad >= 0 else e))
    out = dict(rise_step=rise if rise >= 0 else None,
               rise_time=float(t[rise]) if rise >= 0 else None,
               divergence_step=bad if bad >= 0 else None,
               divergence_time=float(t[bad]) if bad >= 0 else None, cause=None)
    if bad >= 0:
        values = [np.asarray(x)[bad] for x in (sol.e_tr, sol.e_ts, sol.a)]
        if not all(np.all(np.isfinite(x)) for x in values):
            out["cause"] = "a value became non-finite"
        elif e[bad] > 1e3 * (1.0 + abs(e[0])):
            out["cause"] = f"e_tr grew to {e[bad]:.3g}, beyond 1000 (1 + e_tr(0))"
        else:
            out["cause"] = "a correlation left [-1, 1]"
    return out


def divergence_report(stab: dict, lr: float, eta: float) -> str:
    """The detail of the one-line report of a diverged GD solve: the step, the time, why, and
    what it means (a prediction about GD, not a failure of the solver)."""
    rise = ("" if stab["rise_step"] is None else
            f"; its edge of stability (first rise of e_tr) is step {stab['rise_step']}, beyond "
            "which finite-d systems follow the theory only for ~ln(d)/2 steps")
    return (f"at step {stab['divergence_step']} (t = {stab['divergence_time']:.4g}, "
            f"eta = lr d/n = {eta:.4g}): {stab['cause']}. This is the DMFT's prediction for GD "
            f"with --lr {lr:g} (d = infinity), not a solver failure{rise} "
            "(docs/discrete_gd.md); a smaller --lr is stable")


def _run_adaptive(args, out, model) -> int:
    """`solve --t-max`: the segmented adaptive solve, its arrays and summary."""
    from ._results import RESULTS
    check_solve_memory(args, model)
    ctrl = adaptive.controller(args)
    progress = True if args.progress is None else args.progress
    if progress:
        print(f"dmft-jax solve: compiling the adaptive solver (history {args.history}, "
              f"max {args.max_steps} steps)", file=sys.stderr, flush=True)
    sol, t_compile, t_run, resumed = adaptive.run(model, ctrl, args, out, progress)
    stats = {k: float(v) if k == "decimation_error" else int(v) for k, v in sol.stats.items()}
    summary = dict(t_max=float(args.t_max), rtol=args.rtol, atol=args.atol,
                   method=args.method, m=model.m, k=model.k, **stats, resumed=resumed,
                   wall_time_s=round(t_run, 4), compile_time_s=round(t_compile, 4))
    if bool(sol.result != RESULTS.successful):
        t_end = float(sol.t[int(sol.stats["accepted"])])
        failed = bool(sol.result == RESULTS.diverged)
        out.error_json(dict(summary, diverged=failed, failed=True, t_reached=t_end))
        raise SolveError(f"the adaptive solve stopped at t = {t_end:.4g} of {args.t_max:g}: "
                         f"{RESULTS[sol.result]}")
    arrays = adaptive.arrays(sol, model, args.save_times)
    out.write_npz(dict(arrays, params=np.asarray(out.params(save_times=None))))
    if out.path("plot"):
        from ._plot import solution_figure
        out.write_figure(solution_figure(arrays, title=_title(args)), "plot")
    end = int(sol.stats["accepted"])
    summary = dict(e_tr=float(sol.e_tr[end]), e_ts=float(sol.e_ts[end]),
                   a=_final(np.asarray(sol.a)[: end + 1]), t=float(sol.t[end]), diverged=False,
                   **summary)
    if stats["decimation_error"] > 1:
        print(f"dmft-jax solve: warning: the bounded history dropped times whose linear "
              f"interpolation error was {stats['decimation_error']:.3g} x the tolerance; "
              "a larger --history is more accurate", file=sys.stderr, flush=True)
    out.report(summary, f"t = {summary['t']:g}: e_tr = {summary['e_tr']:.6g}, "
                        f"e_ts = {summary['e_ts']:.6g} ({stats['accepted']} steps, "
                        f"{stats['rejected']} rejected; compile {t_compile:.2f} s, "
                        f"solve {t_run:.2f} s)")
    return 0


def _final(a):
    a = np.asarray(a)
    return float(a[-1]) if a.ndim == 1 else [float(x) for x in a[-1]]


def _title(args) -> str:
    scale = f"gamma0={args.gamma0}" if args.gamma0 is not None else f"a0={args.a0 or 1.0}"
    return f"m={args.m}, alpha={args.alpha}, tau={args.tau}, {scale}"


# -------------------------------------------------------------------------------------- demo
def _add_demo(p):
    add_output_arguments(p, out=FIGURE, out_default="demo.png", json_summary=False,
                         out_help="figure to write (default demo.png; png, pdf, svg, ...)")
    p.add_argument("--quick", action="store_true", help="smaller widths (a few seconds)")


def _run_demo(args, out) -> int:
    from ._demo import run_demo
    run_demo(args.out, quick=args.quick, save=lambda fig: out.write_figure(fig, "out"))
    return 0


SOLVE = Command("solve", "solve the DMFT (symmetric, or general with --init; or the "
                "non-Gaussian DMFT with --theory nongaussian)",
                _add_solve, _run_solve)
DEMO = Command("demo", "the three regimes of train/test error for a few widths (writes a figure)",
               _add_demo, _run_demo)
