"""`dmft-jax threshold`: the interpolation threshold of gradient flow (spec section 7).

Pure noise (or a k-index target through tau' [F.73, F.74]) with the second layer frozen; the
relaxation-time method: t_rel = inf{t : e_tr(t) < 1e-7 tau^2} over a scan, fitted by
t_rel ~ c (x* - x)^(-nu). Prints one JSON line with parameter, threshold, threshold_err,
exponent, exponent_err, points (and amplitude, unrelaxed, model, m, tau_prime).
"""

from __future__ import annotations

import json

import numpy as np

from ._cli import COMMANDS, UsageError, add_covariance_arguments, covariance_and_target


def _add(p):
    add_covariance_arguments(p, default_target="none")
    g = p.add_argument_group("model and scan")
    g.add_argument("--tau", type=float, default=1.0, help="label noise (default 1)")
    g.add_argument("--m", default="inf", metavar="M|inf",
                   help="width: inf for the m -> infinity theories (lz2, H.2), else the finite-m "
                        "symmetric DMFT with the second layer frozen (default inf)")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument("--gamma0", type=float, default=None,
                       help="fixed lazy scale gamma = a/sqrt(m) (when scanning alpha)")
    scale.add_argument("--a", type=float, default=None,
                       help="fixed second layer a (scans alpha_bar = n/d, the H.2 setting)")
    g.add_argument("--alpha", type=float, default=None,
                   help="fixed alpha = n/(m d) (when scanning gamma0; default 0.5)")
    g.add_argument("--parameter", choices=("gamma0", "alpha", "alpha_bar"), default=None,
                   help="what to scan (default: alpha_bar with --a, alpha with --gamma0, "
                        "else gamma0)")
    g.add_argument("--range", metavar="FROM,TO", required=True,
                   help="scan range on the interpolating side of the threshold")
    g.add_argument("--num", type=int, default=8, help="points in the scan (default 8)")
    g.add_argument("--dt", type=float, default=0.1, help="time step (default 0.1)")
    g.add_argument("--steps", type=int, default=2000, help="steps per solve (default 2000)")
    g.add_argument("--errors", choices=("covariance", "jackknife"), default="covariance",
                   help="uncertainty of the fit (default covariance)")


def _parse(args):
    try:
        lo, hi = (float(x) for x in args.range.split(","))
    except ValueError:
        raise UsageError(f"--range: expected FROM,TO, got {args.range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo != hi):
        raise UsageError(f"--range: need two different finite numbers, got {args.range!r}")
    if args.num < 3:
        raise UsageError(f"--num must be >= 3 (a fit of 3 parameters), got {args.num}")
    if not args.dt > 0:
        raise UsageError(f"--dt must be > 0, got {args.dt}")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if not args.tau > 0:
        raise UsageError(f"--tau must be > 0 (the relaxation level is 1e-7 tau^2), got {args.tau}")
    if args.m.lower() in ("inf", "infinity"):
        m = None
    else:
        try:
            m = int(args.m)
        except ValueError:
            raise UsageError(f"--m: expected an integer or inf, got {args.m!r}") from None
        if m < 1:
            raise UsageError(f"--m must be >= 1 or inf, got {m}")
    parameter = args.parameter or ("alpha_bar" if args.a is not None else
                                   "alpha" if args.gamma0 is not None else "gamma0")
    return np.linspace(lo, hi, args.num), m, parameter


def _run(args) -> int:
    from ._threshold import threshold
    values, m, parameter = _parse(args)
    h, tgt = covariance_and_target(args)
    alpha = args.alpha if args.alpha is not None else (0.5 if parameter == "gamma0" else None)
    if alpha is not None and not alpha > 0:
        raise UsageError(f"--alpha must be > 0, got {alpha}")
    if parameter == "alpha_bar" and args.a is None:
        raise UsageError("--parameter alpha_bar needs --a (the fixed second layer)")
    if parameter == "alpha" and args.gamma0 is None and args.a is None:
        raise UsageError("--parameter alpha needs --gamma0 (or --a at finite --m)")
    try:
        out = threshold(h, None if tgt.norm2 == 0 and _is_noise(tgt) else tgt,
                        parameter=parameter, values=values, tau=args.tau, m=m, alpha=alpha,
                        gamma0=args.gamma0, a=args.a, dt=args.dt, steps=args.steps,
                        errors=args.errors)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(json.dumps(out))
    return 0


def _is_noise(tgt) -> bool:
    return all(float(np.max(np.abs(np.asarray(k(np.linspace(-1, 1, 5)))))) == 0.0
               for k in tgt.kernels)


COMMANDS["threshold"] = ("interpolation threshold of gradient flow by relaxation times (JSON line)",
                         _add, _run)
