"""`dmft-jax threshold`: the interpolation threshold of gradient flow (docs/equations.md
section 7).

Pure noise (or a k-index target through tau' [F.73, F.74]) with the second layer frozen; the
relaxation-time method: t_rel = inf{t : e_tr(t) < 1e-7 tau^2} over a scan, fitted by
t_rel ~ c (x* - x)^(-nu). Prints one JSON line with parameter, threshold, threshold_err,
exponent, exponent_err, points (and amplitude, unrelaxed, diverged, model, m, tau_prime, range,
late_threshold, late_exponent: the fit of the slowest points, t_rel >= a third of the largest).
With --range, a scan in which some solve diverged is not a result: the JSON lists the values
under `diverged` and the command exits 1. Without --range the scan is found automatically
(`dmft_jax.threshold` with values=None: bracket, refine, placed scan; `range` is "auto" and the
JSON adds `bracket` and `solves`); solves that diverge while it explores are listed under
`diverged` and left out of the fit, with a line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ._cli_args import (
    FINITE,
    POSITIVE,
    Command,
    Count,
    RealList,
    SolveError,
    UsageError,
    check_memory,
    solve_bytes,
)
from ._cli_io import add_output_arguments, divergence_line
from ._cli_physics import add_covariance_arguments, add_grid_arguments, covariance_and_target

_RANGE = RealList(FINITE, min_len=2, max_len=2)


def _width(text: str) -> int | None:
    """Type of --m: a positive integer, or inf / infinity (None)."""
    if str(text).strip().lower() in ("inf", "infinity"):
        return None
    try:
        return Count(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a width >= 1 or inf, got {text!r}") from None


def _add(p):
    add_covariance_arguments(p, default_target="none")
    g = p.add_argument_group("model and scan")
    g.add_argument("--tau", type=POSITIVE, default=1.0,
                   help="label noise (> 0: the relaxation level is 1e-7 tau^2; default 1)")
    g.add_argument("--m", type=_width, default=None, metavar="M|inf",
                   help="width: inf for the m -> infinity theories (lz2, H.2), else the finite-m "
                        "symmetric DMFT with the second layer frozen (default inf)")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument("--gamma0", type=FINITE, default=None,
                       help="fixed lazy scale gamma = a/sqrt(m) (when scanning alpha)")
    scale.add_argument("--a", type=FINITE, default=None,
                       help="fixed second layer a (scans alpha_bar = n/d, the H.2 setting)")
    g.add_argument("--alpha", type=POSITIVE, default=None,
                   help="fixed alpha = n/(m d) (when scanning gamma0; default 0.5)")
    g.add_argument("--parameter", choices=("gamma0", "alpha", "alpha_bar"), default=None,
                   help="what to scan (default: alpha_bar with --a, alpha with --gamma0, "
                        "else gamma0)")
    g.add_argument("--range", type=_RANGE, metavar="FROM,TO", default=None,
                   help="scan range on the interpolating side of the threshold (default: "
                        "found automatically: bracket, refine, then a scan placed where t_rel "
                        "lies between dt*steps/8 and 0.8 dt*steps; progress on stderr)")
    g.add_argument("--num", type=Count(3), default=8,
                   help="points in the scan (>= 3, a fit of 3 parameters; default 8); "
                        "without --range, values solved at once in each stage")
    # dt 0.2: twice the horizon of 0.1 at the same cost; t_rel is 2.0 ... 2.9 (1.3 ... 0.6%)
    # above its dt -> 0 extrapolation (H.2, alpha_bar = 0.97 ... 1.065;
    # benchmarks/results/reduced.md, section threshold), and the longer horizon moves the fit
    # towards the asymptotic regime: alpha_bar* = 1.1901 (dt 0.2) / 1.1740 (dt 0.1) against
    # 1.1864 from the extrapolated t_rel over t = 600
    add_grid_arguments(p, dt=0.2, steps=2000)
    g.add_argument("--errors", choices=("covariance", "jackknife"), default="covariance",
                   help="uncertainty of the fit (default covariance)")
    add_output_arguments(p, out=None, json_summary=False)


def _scan(args: argparse.Namespace):
    """(values, parameter) of the scan, validated; values None without --range (automatic)."""
    parameter = args.parameter or ("alpha_bar" if args.a is not None else
                                   "alpha" if args.gamma0 is not None else "gamma0")
    if parameter == "alpha_bar" and args.a is None:
        raise UsageError("--parameter alpha_bar needs --a (the fixed second layer)")
    if parameter == "alpha" and args.gamma0 is None and args.a is None:
        raise UsageError("--parameter alpha needs --gamma0 (or --a at finite --m)")
    if args.range is None:
        return None, parameter
    lo, hi = _RANGE.values(args.range)
    if lo == hi:
        raise UsageError(f"--range: need two different numbers, got {args.range!r}")
    if parameter in ("alpha", "alpha_bar") and not min(lo, hi) > 0:
        raise UsageError(f"--range: {parameter} must be > 0 over the scan, got {args.range!r}")
    return np.linspace(lo, hi, args.num), parameter


def _threshold(args, h, tgt, values, parameter: str, alpha) -> dict:
    """The fitted threshold (as `dmft_jax.threshold` returns it) plus `diverged`: the values
    whose solve diverged, kept apart from `unrelaxed` (did not relax within dt * steps)."""
    from ._threshold import (_json_float, fit_divergence, late_fit, relaxation_scan, tau_prime,
                             threshold)
    if values is None:
        start = time.perf_counter()

        def report(line):
            print(f"dmft-jax threshold: {line} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)

        return threshold(h, tgt, parameter=parameter, tau=args.tau, m=args.m, alpha=alpha,
                         gamma0=args.gamma0, a=args.a, dt=args.dt, steps=args.steps,
                         errors=args.errors, num=args.num, report=report)
    _, _, t_rel = relaxation_scan(h, tgt, parameter=parameter, values=values, tau=args.tau,
                                  m=args.m, alpha=alpha, gamma0=args.gamma0, a=args.a,
                                  dt=args.dt, steps=args.steps)
    ok, bad = np.isfinite(t_rel), np.isnan(t_rel)
    fit = dict(threshold=None, threshold_err=None, exponent=None, exponent_err=None,
               amplitude=None)
    if ok.sum() >= 3:
        fit = fit_divergence(values[ok], t_rel[ok], side=-1 if parameter == "gamma0" else 1,
                             errors=args.errors)
        fit.pop("side"), fit.pop("residual")
    model = ("H.2" if parameter == "alpha_bar" else "lz2") if args.m is None else "dmft"
    tp = float(tau_prime(h, tgt, args.tau)) if model == "lz2" else float(args.tau)
    return dict(parameter=parameter, **{k: _json_float(v) for k, v in fit.items()},
                points=[[float(x), float(t)] for x, t in zip(values[ok], t_rel[ok])],
                unrelaxed=[float(x) for x in values[~ok & ~bad]],
                diverged=[float(x) for x in values[bad]], model=model, m=args.m, tau_prime=tp,
                range=[float(values[0]), float(values[-1])], **late_fit(values, t_rel, parameter))


def _run(args, out) -> int:
    check_memory(args.num * solve_bytes(args.steps), f"--num {args.num} x --steps {args.steps}")
    values, parameter = _scan(args)
    h, tgt = covariance_and_target(args)
    alpha = args.alpha if args.alpha is not None else (0.5 if parameter == "gamma0" else None)
    try:
        result = _threshold(args, h, None if tgt.norm2 == 0 and _is_noise(tgt) else tgt,
                            values, parameter, alpha)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out.json = True  # threshold always prints its JSON line
    if result["diverged"] and values is None:
        # the automatic scan explores: a diverged probe is reported, and the fit uses relaxed
        # solves only
        print(f"dmft-jax threshold: {len(result['diverged'])} of {result['solves']} solves "
              f"diverged (at {parameter} = {', '.join(f'{x:g}' for x in result['diverged'])});"
              f" they are not in the fit (a smaller --dt reaches them)", file=sys.stderr)
    elif result["diverged"]:
        out.error_json(result)
        raise SolveError(divergence_line(
            "solves of the scan", len(result["diverged"]), args.num,
            f"(at {parameter} = {', '.join(f'{x:g}' for x in result['diverged'])}): the step "
            f"--dt {args.dt:g} is too large for explicit Euler; try --dt {args.dt / 2:g}"))
    out.report(result, "")
    return 0


def _is_noise(tgt) -> bool:
    return all(float(np.max(np.abs(np.asarray(k(np.linspace(-1, 1, 5)))))) == 0.0
               for k in tgt.kernels)


THRESHOLD = Command("threshold", "interpolation threshold of gradient flow by relaxation times "
                    "(JSON line)", _add, _run)
