"""`dmft-jax grad --theory nongaussian`: forward-mode derivatives of a timed observable of the
non-Gaussian DMFT at fixed draws (common random numbers: the same --seed gives the same draws,
so the derivative is that of a deterministic function of the parameters).

Checked against central finite differences of the same seed (tests/test_cli_nongaussian.py:
m = 2, 8 steps of dt = 0.1, 400 draws in 4 replicas, relative agreement 1e-5 or better).

The path extension's square root of the conditional covariance has a finite forward-mode
derivative (`dmft_jax._nongaussian.psd_sqrt`: Daleckii-Krein, zero on the null space). There is
no reverse mode: the non-Gaussian DMFT has no adjoint (`jax.grad` through the loop would store
every step).
"""

from __future__ import annotations

import time

import numpy as np

from ._cli_args import SolveError, UsageError

#: Observables (`--observable`) and parameters (`--wrt`) the non-Gaussian derivative supports.
OBSERVABLES = ("e_ts", "e_tr", "gap", "gamma", "a", "v")
WRT = ("a0", "gamma0", "tau", "alpha", "alpha_bar")


def _check(args) -> list[str]:
    """UsageError for what the non-Gaussian derivative cannot do; the --wrt names."""
    if args.mode == "reverse":
        raise UsageError("--mode reverse: the non-Gaussian DMFT has no adjoint; use --mode "
                         "forward (the default with --theory nongaussian)")
    args.mode = "forward"
    if args.observable not in OBSERVABLES:
        raise UsageError(f"--observable {args.observable}: the non-Gaussian derivative takes "
                         f"{', '.join(OBSERVABLES)}")
    if args.temperature is not None or args.chunks is not None:
        raise UsageError("--temperature and --chunks do not apply to --theory nongaussian")
    names = [x.strip() for x in args.wrt.split(",") if x.strip()]
    bad = [x for x in names if x not in WRT]
    if not names or bad or len(set(names)) != len(names):
        raise UsageError(f"--wrt: {', '.join(bad) or args.wrt!r} not supported with --theory "
                         f"nongaussian (known: {', '.join(WRT)}, each once)")
    return names


def run(args, out) -> int:
    """`grad --theory nongaussian`: the JSON line of value and forward-mode derivatives."""
    import jax.tree_util as jtu

    from . import _adjoint
    from . import _cli_nongaussian as ng
    from ._cli_grad import _as_scalar, _jsonable, _observable, _output_shape
    ng.check_flags(args, "grad")
    names = _check(args)
    args.dt = 0.05 if args.dt is None else args.dt
    args.steps = 200 if args.steps is None else args.steps
    model, grid = ng.model_from_args(args)
    observable = _observable(args, grid)
    ng.check_solve_memory(args, model, copies=3.0)
    t0 = time.perf_counter()
    shape = _output_shape(observable, model, grid)
    if shape != () and int(np.prod(shape)) == 1:
        observable, shape = jtu.Partial(_as_scalar, observable), ()
    call = (observable, model, grid, tuple(names), "forward", None)
    _adjoint.lower(*call, jacobian=shape != ()).compile()
    t1 = time.perf_counter()
    fn = _adjoint.value_and_grad if shape == () else _adjoint.jacobian
    value, grads = fn(*call)
    value, grads = np.asarray(value), {k: np.asarray(v) for k, v in grads.items()}
    result = dict(value=_jsonable(value), grad={k: _jsonable(g) for k, g in grads.items()},
                  mode="forward", theory="nongaussian", draws=args.draws, groups=args.groups,
                  seed=args.seed, seconds=round(time.perf_counter() - t1, 4),
                  compile_seconds=round(t1 - t0, 4))
    out.json = True
    if not (np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads.values())):
        out.error_json(dict(result, diverged=True))
        raise SolveError("the derivative is not finite (non-finite value or gradient): the "
                         f"solve diverged or some draws are unstable; try a smaller --dt than "
                         f"{float(grid.dt):g}")
    out.report(dict(result, diverged=False), "")
    return 0
