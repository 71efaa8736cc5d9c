"""`dmft-jax grad`: exact derivatives of one DMFT observable with respect to hyperparameters.

    dmft-jax grad --a0 1 --tau 0.3 --alpha 0.5 --m 4 --steps 200 --dt 0.05 \\
        --observable e_ts --time 5 --wrt a0,tau,alpha,h1,dt --mode reverse

prints one JSON line {"value": ..., "grad": {"a0": ..., ...}, "mode": ..., "seconds": ...}
(`seconds`: the value-and-gradient run after compilation, `compile_seconds` separately).
Array-valued observables (a, v of the general DMFT) give lists and the Jacobian.
Physics and grid flags are those of `dmft-jax solve`. With `--theory nongaussian` (forward
mode only) it differentiates the non-Gaussian DMFT at fixed draws (`_cli_nongaussian_grad`).
A non-finite value or gradient means the solve diverged: the JSON line then has
`"diverged": true` and the command exits 1.

With `--dynamics gd --lr LR` the observable is read on the discrete-time DMFT of projected GD
(docs/discrete_gd.md), t_k = k eta with eta = lr / (alpha m). `--wrt lr` is the derivative in
the GD step, and `alpha` / `alpha_bar` are taken at fixed lr (the step eta = lr / alpha_bar moves
with them). A GD trajectory that breaks the divergence rule (GD diverges in theory) is reported
like a diverged solve, with its step (`divergence_step`), even when its values are finite.
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import _cli_nongaussian as nongaussian
from ._cli_args import COUNT, NON_NEGATIVE, POSITIVE, Command, SolveError, UsageError
from ._cli_io import add_output_arguments, divergence_line
from ._cli_physics import (
    add_dynamics_arguments,
    add_grid_arguments,
    add_physics_arguments,
    check_dynamics,
    dynamics_model,
    model_from_args,
    smaller_dt,
)
from ._cli_solve import check_solve_memory

_TIMED = ("e_ts", "e_tr", "gap", "gamma", "a", "v")
_TEMPERED = ("min_e_ts", "argmin_time")


def _add_grad(p):
    from ._observables import OBSERVABLES
    add_physics_arguments(p)
    add_grid_arguments(p, dt=None, steps=None)
    add_dynamics_arguments(p)
    g = p.add_argument_group("derivative")
    g.add_argument("--observable", default="e_ts", choices=sorted(OBSERVABLES),
                   help="the quantity to differentiate (default e_ts)")
    g.add_argument("--time", type=NON_NEGATIVE, default=None, metavar="T",
                   help=f"time at which {', '.join(_TIMED)} are read (linear interpolation; "
                        "default: the last grid time)")
    g.add_argument("--temperature", type=POSITIVE, default=None, metavar="X",
                   help="min_e_ts / argmin_time: soft-min temperature (default: exact min)")
    g.add_argument("--wrt", default="a0", metavar="NAMES",
                   help="comma-separated parameters: a0, gamma0, tau, alpha, alpha_bar, norm2, "
                        "dt (flow) or lr (--dynamics gd), h, h<p>, phihat, phihat<p> (Taylor "
                        "coefficient of q^p; with --target same phihat is a separate copy of h: "
                        "--wrt h moves h only)")
    g.add_argument("--mode", default=None, choices=("forward", "reverse"),
                   help="reverse (adjoint, default) or forward mode; both O(N^2) memory "
                        "(--theory nongaussian: forward only)")
    g.add_argument("--chunks", type=COUNT, default=None, help="causal chunks of the loop")
    nongaussian.add_nongaussian_arguments(p, fixed_point=False)
    add_output_arguments(p, out=None, json_summary=False)


def _observable(args, grid):
    import jax.tree_util as jtu

    from ._observables import OBSERVABLES
    name = args.observable
    if args.time is not None:
        if name not in _TIMED:
            raise UsageError(f"--time does not apply to --observable {name} "
                             f"(only {', '.join(_TIMED)})")
        t_max = float(grid.t_max)
        if not args.time <= t_max:
            step = "eta" if args.dynamics == "gd" else "dt"
            raise UsageError(f"--time must lie in [0, {t_max:g}] (steps * {step}), got "
                             f"{args.time}")
    if args.temperature is not None:
        if name not in _TEMPERED:
            raise UsageError(f"--temperature applies to --observable min_e_ts or argmin_time, "
                             f"not {name}")
        return jtu.Partial(OBSERVABLES[name], temperature=args.temperature)
    if args.time is not None:
        return jtu.Partial(OBSERVABLES[name], time=args.time)
    return OBSERVABLES[name]


def _jsonable(x):
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x.tolist()


def _wrt_names(args) -> tuple[list[str], list[str]]:
    """(requested names, names passed to the adjoint): with --dynamics gd, `lr` (and the
    fixed-lr chain rule of alpha, alpha_bar) is computed through the step eta (`dt`)."""
    names = [x.strip() for x in args.wrt.split(",") if x.strip()]
    if args.dynamics != "gd":
        if "lr" in names:
            raise UsageError("--wrt: lr is the step of --dynamics gd; the flow's step is dt")
        return names, names
    if "dt" in names:
        raise UsageError("--wrt: with --dynamics gd the step is --lr: use --wrt lr "
                         "(dt = eta = lr / (alpha m) is not a free parameter)")
    internal = [x for x in names if x != "lr"]
    if {"lr", "alpha", "alpha_bar"} & set(names):
        internal.append("dt")
    if not internal:
        internal = ["dt"]
    return names, internal


def _gd_chain_rule(grads: dict, names: list[str], model, grid) -> dict:
    """Derivatives at fixed lr from those at fixed eta: eta = lr / alpha_bar, so
    d/d lr = (1/alpha_bar) d/d eta and d/d alpha_bar |_lr = d/d alpha_bar |_eta
    - (eta/alpha_bar) d/d eta (the same for alpha, alpha = alpha_bar / m)."""
    eta, alpha_bar, alpha = float(grid.dt), float(model.alpha_bar), float(model.alpha)
    g_eta = grads.get("dt")
    out = {}
    for name in names:
        if name == "lr":
            out[name] = g_eta / alpha_bar
        elif name == "alpha":
            out[name] = grads[name] - (eta / alpha) * g_eta
        elif name == "alpha_bar":
            out[name] = grads[name] - (eta / alpha_bar) * g_eta
        else:
            out[name] = grads[name]
    return out


def _run_grad(args, out) -> int:
    import jax.tree_util as jtu

    from . import _adjoint
    if nongaussian.theory(args) == "nongaussian":
        from ._cli_nongaussian_grad import run
        return run(args, out)
    nongaussian.check_gaussian(args)
    args.mode = args.mode or "reverse"
    check_dynamics(args)
    if args.dynamics == "flow":
        args.dt = 0.05 if args.dt is None else args.dt
        args.steps = 200 if args.steps is None else args.steps
    model, grid = dynamics_model(args, model_from_args(args))
    if args.chunks is not None and args.chunks > grid.steps:
        raise UsageError(f"--chunks {args.chunks} exceeds --steps {grid.steps}")
    observable = _observable(args, grid)
    names, internal = _wrt_names(args)
    try:
        wrt = _adjoint.parse_wrt(internal)
        _adjoint.zero_perturbations(model, grid, wrt)
    except ValueError as err:
        raise UsageError(f"--wrt: {err}") from None
    check_solve_memory(args, model, copies=3.0)  # measured 2.4x (forward) to 2.9x (reverse)
    t0 = time.perf_counter()
    shape = _output_shape(observable, model, grid)
    if shape != () and math.prod(shape) == 1:
        observable = jtu.Partial(_as_scalar, observable)
        shape = ()
    fn = _adjoint.value_and_grad if shape == () else _adjoint.jacobian
    call = (observable, model, grid, wrt, args.mode, args.chunks)
    _adjoint.lower(*call, jacobian=shape != ()).compile()   # compiled apart, then reused
    t1 = time.perf_counter()
    value, grads = fn(*call)
    value = np.asarray(value)
    grads = {k: np.asarray(v) for k, v in grads.items()}
    if args.dynamics == "gd":
        grads = _gd_chain_rule(grads, names, model, grid)
    t2 = time.perf_counter()
    result = dict(value=_jsonable(value), grad={k: _jsonable(g) for k, g in grads.items()},
                  mode=args.mode, seconds=round(t2 - t1, 4), compile_seconds=round(t1 - t0, 4))
    out.json = True  # grad always prints its JSON line
    if args.dynamics == "gd":
        return _report_gd(args, out, model, grid, result)
    if not (np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads.values())):
        out.error_json(dict(result, diverged=True))
        raise SolveError(divergence_line(
            "the solve", 1, 1, f"(non-finite value or gradient): the step --dt "
            f"{float(grid.dt):g} may be too large for explicit Euler; try --dt "
            f"{smaller_dt(model, float(grid.dt)):.3g}"))
    out.report(dict(result, diverged=False), "")
    return 0


def _report_gd(args, out, model, grid, result) -> int:
    """The JSON line of a GD derivative; a GD trajectory that diverges (the rule of
    `dmft_jax._results`, read on a plain solve of the same model) or a non-finite value or
    gradient exits 1 with the divergence step."""
    import jax

    from ._cli_solve import divergence_report, gd_stability
    from ._integrate import solve
    sol = jax.block_until_ready(solve(model, grid, throw=False))
    stab = gd_stability(sol)
    result = dict(result, dynamics="gd", lr=float(args.lr), eta=float(grid.dt),
                  edge_of_stability_step=stab["rise_step"])
    finite = (np.all(np.isfinite(result["value"]))
              and all(np.all(np.isfinite(np.asarray(g, float))) for g in result["grad"].values()))
    if stab["divergence_step"] is not None or not finite:
        result.update(diverged=True, divergence_step=stab["divergence_step"],
                      divergence_time=stab["divergence_time"])
        out.error_json(result)
        if stab["divergence_step"] is None:
            raise SolveError(divergence_line("the derivative", 1, 1,
                                             "(non-finite value or gradient of the GD DMFT)"))
        raise SolveError(divergence_line("gradient descent", 1, 1,
                                         divergence_report(stab, args.lr, float(grid.dt))))
    out.report(dict(result, diverged=False), "")
    return 0


def _output_shape(observable, model, grid) -> tuple:
    import equinox as eqx

    from ._integrate import integrate
    return eqx.filter_eval_shape(lambda m, g: observable(integrate(m, g, throw=False)), model, grid).shape


def _as_scalar(observable, sol):
    return observable(sol).reshape(())


GRAD = Command("grad", "derivatives of a DMFT observable w.r.t. hyperparameters (JSON line)",
               _add_grad, _run_grad)
