"""The physics and grid flags shared by the commands, and the models they describe.

`add_covariance_arguments` (every command with a covariance), `add_physics_arguments`
(`solve`, `experiment`, `sweep`, `simulate`, `grad`) and `add_grid_arguments` (`solve`,
`grad`, `threshold`) declare the flags with their typed parsers (`_cli_args`), so that values
are valid once parsed; `model_from_args` builds the DMFT they describe (symmetric, or general
from `--init FILE.npz`), turning the library's ValueErrors into one-line UsageErrors.
"""

from __future__ import annotations

import argparse

import numpy as np

from ._cli_args import (
    COUNT,
    FINITE,
    MAX_COUNT,
    MAX_DEGREE,
    MAX_K,
    NON_NEGATIVE,
    POSITIVE,
    ArraySpec,
    Choice,
    Count,
    UsageError,
    covariance_spec,
    non_empty_path,
    phihat_rows,
    phihat_spec,
    read_npz,
)

ACTIVATIONS = ("relu", "erf", "tanh", "identity")


def _presets() -> tuple[str, ...]:
    from ._covariance import PRESETS
    return tuple(PRESETS)


def add_covariance_arguments(p: argparse.ArgumentParser, default_target: str = "same") -> None:
    """The covariance and target flags (docs/equations.md section 2), shared by every command."""
    presets = _presets()
    g = p.add_argument_group("covariance and target (docs/equations.md section 2)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--h", type=covariance_spec(presets), metavar="C0,C1,...|PRESET",
                     help="Taylor coefficients of h(q), constant term first (>= 0, h(1) > 0, "
                          "h'(1) > 0, degree <= 170), or a preset: cubic (0.9q + q^3/6, "
                          "default), quadratic (0.9q + q^2/2), fig8 (0.3q + q^2/2), validation "
                          "(q/10 + q^2/2)")
    src.add_argument("--activation", type=Choice(ACTIVATIONS), metavar="NAME",
                     help="relu, erf, tanh or identity (centered, E sigma(G) = 0)")
    g.add_argument("--hermite-degree", type=Count(1, MAX_DEGREE), default=40, metavar="K",
                   help="relu only: solve with its degree-K Hermite truncation (ReLU's h''(1) is "
                        "infinite, which makes the DMFT memory term diverge); 1..170, default 40")
    tg = g.add_mutually_exclusive_group()
    tg.add_argument("--phihat", type=phihat_spec, metavar="C0,C1,...[;...]",
                    help="Taylor coefficients of phihat per index direction (rows separated "
                         "by ';')")
    tg.add_argument("--target", type=Choice(("same", "none") + ACTIVATIONS + presets),
                    default=None, metavar="same|none|NAME",
                    help=f"phi = sigma (same), pure noise (none), or a named function: an "
                         f"activation or a preset (default {default_target})")
    p.set_defaults(default_target=default_target)
    g.add_argument("--k", type=Count(1, MAX_K), default=None,
                   help=f"number of index directions (1..{MAX_K}, default 1)")
    g.add_argument("--phi-norm2", type=NON_NEGATIVE, default=None, metavar="X",
                   help="||phi||^2 (default: derived from the target)")


def add_physics_arguments(p: argparse.ArgumentParser, *, init: bool = True) -> None:
    """The physics flags shared by `solve`, `experiment`, `sweep`, `simulate`, `grad`."""
    add_covariance_arguments(p)
    ph = p.add_argument_group("model (docs/equations.md section 1)")
    ph.add_argument("--tau", type=NON_NEGATIVE, default=0.3, help="label noise (default 0.3)")
    ph.add_argument("--alpha", type=POSITIVE, default=0.3, help="alpha = n/(m d) (default 0.3)")
    ph.add_argument("--m", type=COUNT, default=None, help="width (default 16)")
    sc = ph.add_mutually_exclusive_group()
    sc.add_argument("--a0", type=FINITE, default=None, help="mean-field init a_i(0) (default 1)")
    sc.add_argument("--gamma0", type=FINITE, default=None,
                    help="lazy init, a_i(0) = gamma0 sqrt(m)")
    ph.add_argument("--freeze-a", action="store_true", help="keep the second layer at a(0)")
    if init:
        ph.add_argument("--init", type=non_empty_path, metavar="FILE.npz",
                        help="general DMFT from arrays a (m,), C (m, m), optional v (m, k)")


def add_grid_arguments(p: argparse.ArgumentParser, dt: float | None = 0.05,
                       steps: int | None = 200) -> None:
    """--dt and --steps of a DMFT time grid (defaults None: set by the command, e.g. `solve`
    fills in 0.05 and 200 unless it solves adaptively)."""
    g = p.add_argument_group("time grid (docs/equations.md section 6)")
    g.add_argument("--dt", type=POSITIVE, default=dt,
                   help=f"time step (default {0.05 if dt is None else dt}; gradient flow only)")
    g.add_argument("--steps", type=COUNT, default=steps,
                   help=f"number of steps N (default {200 if steps is None else steps}; with "
                        "--dynamics gd the number of GD steps)")


#: The training dynamics a DMFT describes: gradient flow (docs/equations.md), or projected
#: gradient descent with a finite step (docs/discrete_gd.md).
DYNAMICS = ("flow", "gd")


def add_dynamics_arguments(p: argparse.ArgumentParser) -> None:
    """--dynamics flow|gd and --lr (the GD step) of `solve` and `grad`."""
    g = p.add_argument_group("dynamics (docs/discrete_gd.md)")
    g.add_argument("--dynamics", type=Choice(DYNAMICS), default="flow", metavar="flow|gd",
                   help="flow: gradient flow (default; time step --dt); gd: full-batch projected "
                        "gradient descent with step --lr, its exact discrete-time DMFT on the "
                        "iterates t_k = k eta, eta = lr d / n = lr / (alpha m)")
    g.add_argument("--lr", type=POSITIVE, default=None, metavar="LR",
                   help="--dynamics gd: the GD step size (the experiment's --lr); one step "
                        "advances t by eta = lr / (alpha m)")


#: Flags of the adaptive flow solve (`solve --t-max ...`) and of the Euler/trapezoid choice,
#: none of which applies to the exact GD recursion.
_FLOW_ONLY = ("t_max", "rtol", "atol", "history", "max_steps", "save_at", "checkpoint", "method")


def check_dynamics(args) -> None:
    """UsageError for flags that do not apply to the chosen --dynamics (before any work); for
    gd, --steps defaults to 200."""
    if args.dynamics == "flow":
        if args.lr is not None:
            raise UsageError("--lr is the step of --dynamics gd (gradient descent); the gradient "
                             "flow's time step is --dt: add --dynamics gd or drop --lr")
        return
    if args.lr is None:
        raise UsageError("--dynamics gd needs --lr LR, the GD step (one step advances t by "
                         "eta = lr d / n = lr / (alpha m))")
    if args.dt is not None:
        raise UsageError("--dt does not apply to --dynamics gd: its time step is "
                         "eta = lr / (alpha m), set by --lr (--steps counts the GD steps)")
    given = [f"--{k.replace('_', '-')}" for k in _FLOW_ONLY if getattr(args, k, None) is not None]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise UsageError(f"{', '.join(given)} {verb} not apply to --dynamics gd: the "
                         "discrete-time DMFT of GD is exact on its iterates (no integration "
                         "method, no adaptive steps); give --lr and --steps")
    args.steps = 200 if args.steps is None else args.steps


def gd_step(args, model) -> float:
    """eta = lr d / n = lr / alpha_bar: the time advanced by one GD step (alpha_bar = alpha m
    of the model, so that --init files set m)."""
    return float(args.lr) / float(model.alpha_bar)


def dynamics_model(args, model):
    """(model, grid) of the chosen dynamics: the flow model on the --dt grid, or
    `DiscreteGD(model)` on t_k = k eta."""
    from ._grid import TimeGrid
    if args.dynamics == "gd":
        from ._discrete import DiscreteGD
        eta = gd_step(args, model)
        if not eta * args.steps <= 1e300:
            raise UsageError(f"--lr {args.lr:g}, --steps {args.steps}: the final time "
                             f"{args.steps} x eta = {eta * args.steps:.3g} overflows")
        return DiscreteGD(model), TimeGrid(eta, args.steps)
    return model, grid_from_args(args)


# -------------------------------------------------------------------------------- the model
def covariance_from(args):
    """(h, h_spec) from --h / --activation (values already validated by their parsers)."""
    from ._covariance import PRESETS, covariance, relu_hermite_coefficients
    if args.activation is not None:
        if args.activation == "relu":
            c = np.asarray(relu_hermite_coefficients(args.hermite_degree)) ** 2
            return covariance(c), "relu"
        return covariance(args.activation), args.activation
    spec = args.h or "cubic"
    if spec in PRESETS:
        return covariance(spec), spec
    coeffs = [float(x) for x in spec.split(",") if x.strip()]
    try:
        return covariance(coeffs), coeffs
    except ValueError as err:
        raise UsageError(f"--h: {err}") from None


def target_spec(args, h_spec):
    """(spec, k) of the target flags as `dmft_jax.target` takes them."""
    k = args.k
    if args.phihat is not None:
        rows = phihat_rows(args.phihat)
        if k is not None and len(rows) not in (1, k):
            raise UsageError(f"--phihat gives {len(rows)} index directions but --k is {k} "
                             "(mismatched k)")
        return (rows if len(rows) > 1 else rows[0]), (k or len(rows))
    spec = args.target or getattr(args, "default_target", "same")
    if h_spec == "relu" and spec == "relu":
        spec = "same"  # phi = the (truncated) relu the solve uses
    return spec, (k or 1)


def target_from(args, h_spec):
    """The `Target` of the target flags (UsageError on bad input)."""
    from ._covariance import target
    spec, k = target_spec(args, h_spec)
    try:
        return target(spec, h_spec, k=k, norm2=args.phi_norm2)
    except ValueError as err:
        raise UsageError(f"--{'phihat' if args.phihat else 'target'}: {err}") from None


def covariance_and_target(args):
    """(h, target) from the covariance and target flags (UsageError on bad input)."""
    h, h_spec = covariance_from(args)
    return h, target_from(args, h_spec)


def check_common(args) -> None:
    """Defaults that depend on other flags (--m 16 unless --init)."""
    if args.m is None and not getattr(args, "init", None):
        args.m = 16


def initial_a0(args) -> float:
    """a_i(0) from --a0 (default 1) or --gamma0 (a0 = gamma0 sqrt(m))."""
    if args.gamma0 is not None:
        return args.gamma0 * float(np.sqrt(args.m))
    return 1.0 if args.a0 is None else args.a0


def model_from_args(args):
    """The DMFT model described by the physics flags (symmetric, or general with --init)."""
    from ._dmft import symmetric_dmft
    check_common(args)
    h, tgt = covariance_and_target(args)
    if getattr(args, "init", None):
        return _general_from_file(args, h, tgt)
    scale = {"gamma0": args.gamma0} if args.gamma0 is not None else {"a0": initial_a0(args)}
    try:
        return symmetric_dmft(h, tgt, tau=args.tau, alpha=args.alpha, m=args.m,
                              freeze_a=args.freeze_a, **scale)
    except ValueError as err:
        raise UsageError(str(err)) from None


#: The arrays of an --init file.
INIT_ARRAYS = dict(a=ArraySpec("real", 1), C=ArraySpec("real", 2))
INIT_OPTIONAL = dict(v=ArraySpec("real", 2))


def _general_from_file(args, h, tgt):
    from ._dmft import general_dmft
    if args.gamma0 is not None or args.a0 is not None:
        raise UsageError("--init sets a(0) from the file: do not combine it with --a0/--gamma0")
    data = read_npz("--init", args.init, INIT_ARRAYS, INIT_OPTIONAL)
    a, C, v = data["a"], data["C"], data.get("v")
    m = a.shape[0]
    if m < 1:
        raise UsageError(f"--init: {args.init!r} has an empty array a (no neurons)")
    if C.shape != (m, m):
        raise UsageError(f"--init: C must have shape (m, m) = ({m}, {m}) for the {m} entries of "
                         f"a, got {C.shape} in {args.init!r}")
    if v is not None and v.shape[0] != m:
        raise UsageError(f"--init: v must have shape (m, k) with m = {m}, got {v.shape}")
    if v is not None and v.shape[1] != tgt.k:
        raise UsageError(f"--init: v has k = {v.shape[1]} columns but the target has k = {tgt.k} "
                         "(mismatched k; set --k or --phihat rows)")
    if args.m is not None and args.m != m:
        raise UsageError(f"--m {args.m} does not match the {m} neurons of --init")
    try:
        return general_dmft(h, tgt, tau=args.tau, alpha=args.alpha, a=a, C=C, v=v,
                            freeze_a=args.freeze_a)
    except ValueError as err:
        raise UsageError(f"--init: {err}") from None


def grid_from_args(args):
    from ._grid import TimeGrid
    return TimeGrid(args.dt, args.steps)


def general_width(model) -> int | None:
    """m for a general DMFT (its neuron blocks are m x m), None for the symmetric one."""
    from ._algebra import Symmetric
    return None if isinstance(model.algebra, Symmetric) else model.m


def stability_dt(model, a_max: float) -> float:
    """A step size inside the explicit-Euler stability bound of docs/equations.md section 6.

    The delta part of M^R decays at rate ~ alpha a^2 h'(1) (alpha_bar a^2 h'(1) / m), so
    explicit Euler needs dt below ~ 1 / (alpha a^2 h'(1)); we suggest half of that.
    """
    rate = float(model.alpha) * max(a_max, 1e-12) ** 2 * float(model.h.d1(1.0))
    return 0.5 / max(rate, 1e-12)


def smaller_dt(model, dt: float) -> float:
    """The step to suggest after a diverged solve: inside the stability bound, at most dt/2."""
    a0 = float(np.max(np.abs(np.asarray(model.a0))))
    return min(stability_dt(model, a0), 0.5 * dt)


def check_one_step(flag_step: str, dt: float, flag_horizon: str, horizon: float) -> None:
    """Refuse a schedule whose single step already passes the horizon (it would silently run
    to t = dt instead of t_max)."""
    if dt > horizon:
        raise UsageError(f"{flag_step}: one step advances gradient-flow time by dt = {dt:.4g}, "
                         f"beyond {flag_horizon} {horizon:g}; use a smaller {flag_step} (dt = "
                         f"lr d / n) or a longer {flag_horizon}")



def steps_of(flag: str, span: float, dt: float) -> int:
    """round(span / dt) as a step count (at least 1), refused beyond MAX_COUNT."""
    ratio = span / dt
    if not ratio <= MAX_COUNT:
        raise UsageError(f"{flag} {span:g}: {ratio:.3g} steps of dt = {dt:.3g} exceed "
                         f"{MAX_COUNT}; raise --lr or shorten {flag}")
    return max(1, int(round(ratio)))
