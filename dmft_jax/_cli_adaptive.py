"""Adaptive solves on the command line: flags, a segmented run (progress, checkpoints,
interrupts between segments) and the arrays of the out file.

`dmft-jax solve --t-max T` runs `dmft_jax.Adaptive` with `dmft_jax.Trapezoid`. The compiled
loop runs in segments of attempted steps; between segments the command prints progress and,
with `--checkpoint FILE.npz`, saves the whole loop state (atomically), from which a later run
with the same flags resumes. The segments only decide where the loop pauses, never its steps,
so a resumed solve gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

from ._cli_args import COUNT, POSITIVE, Count, Real, UsageError

#: Default tolerances and sizes of `solve --t-max`.
RTOL, ATOL, HISTORY, MAX_STEPS = 1e-5, 1e-7, 512, 100_000
#: Seconds between progress lines / checkpoint writes (the latter: env DMFT_JAX_CHECKPOINT_EVERY).
PROGRESS_EVERY, CHECKPOINT_EVERY = 5.0, 30.0


def _checkpoint_every() -> float:
    try:
        return float(os.environ.get("DMFT_JAX_CHECKPOINT_EVERY", CHECKPOINT_EVERY))
    except ValueError:
        return CHECKPOINT_EVERY


def add_adaptive_arguments(p) -> None:
    """--t-max, --rtol, --atol, --method, --history, --max-steps, --save-at, --checkpoint."""
    g = p.add_argument_group("adaptive time stepping (instead of --dt/--steps)")
    g.add_argument("--t-max", type=POSITIVE, default=None, metavar="T",
                   help="solve adaptively from t = 0 to T (second-order exponential "
                        "trapezoid, step set by --rtol/--atol, bounded history)")
    g.add_argument("--rtol", type=Real(0.0, 1.0, open_low=True), default=None,
                   help=f"relative tolerance of each step (default {RTOL:g})")
    g.add_argument("--atol", type=Real(0.0, 1.0, open_low=True), default=None,
                   help=f"absolute tolerance of each step (default {ATOL:g})")
    g.add_argument("--method", choices=("euler", "trapezoid", "pass", "fixed-point"),
                   default=None,
                   help="euler (spec section 6, first order; default with --dt/--steps) or "
                        "trapezoid (second order; default and only choice with --t-max); "
                        "--theory nongaussian: pass (the causal pass, default) or fixed-point")
    g.add_argument("--history", type=Count(8, 65_536), default=None, metavar="L",
                   help=f"stored times of the two-time functions (default {HISTORY}); when "
                        "full, a quarter of the older half is dropped")
    g.add_argument("--max-decimation-error", type=POSITIVE, default=None, metavar="X",
                   help="stop (exit 1) when the bounded history would drop a time whose "
                        "linear-interpolation error exceeds X times the tolerance (default 1; "
                        "a large X accepts a coarser history)")
    g.add_argument("--decimation-norm", choices=("entry", "row"), default=None,
                   help="unit of that interpolation error: atol + rtol |value| (entry, "
                        "default) or atol + rtol max|row| (row, the step control's norm: the "
                        "history lasts longer through a slow t ~ m regime, but keeps the "
                        "responses' small tails less well near interpolation)")
    g.add_argument("--control-train-error", action="store_true", default=None,
                   help="also bound the estimated quadrature error of C_A(t, t), i.e. of the "
                        "train error, by the tolerance (more steps under lazy "
                        "initialization; without it only a, v, C, R are controlled)")
    g.add_argument("--max-steps", type=COUNT, default=None, metavar="N",
                   help=f"most accepted steps (default {MAX_STEPS})")
    g.add_argument("--save-at", default=None, metavar="T1,T2,...|log:K|lin:K",
                   help="output times of the one-time arrays: a list, or K log- or "
                        "linearly spaced times up to t_max (default: every accepted step)")
    g.add_argument("--checkpoint", default=None, metavar="FILE.npz",
                   help="save the loop state every 30 s and at the end; resume from it if it "
                        "exists (same flags)")


def check_flags(args) -> None:
    """UsageError for flags that contradict each other (before any work)."""
    adaptive_only = ("rtol", "atol", "history", "max_decimation_error", "max_steps", "save_at",
                     "checkpoint", "control_train_error", "decimation_norm")
    if args.t_max is None:
        given = [f"--{k.replace('_', '-')}" for k in adaptive_only
                 if getattr(args, k) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} need(s) --t-max (an adaptive solve)")
        args.dt = 0.05 if args.dt is None else args.dt
        args.steps = 200 if args.steps is None else args.steps
        args.method = args.method or "euler"
        return
    if args.dt is not None or args.steps is not None:
        raise UsageError("--t-max solves adaptively: do not combine it with --dt/--steps "
                         "(the uniform grid)")
    if args.method == "euler":
        raise UsageError("--method euler has no error estimate: --t-max needs trapezoid")
    args.method = "trapezoid"
    args.rtol = RTOL if args.rtol is None else args.rtol
    args.atol = ATOL if args.atol is None else args.atol
    args.history = HISTORY if args.history is None else args.history
    if args.max_decimation_error is None:
        args.max_decimation_error = 1.0
    args.decimation_norm = args.decimation_norm or "entry"
    args.max_steps = MAX_STEPS if args.max_steps is None else args.max_steps
    if args.checkpoint is not None and not args.checkpoint.endswith(".npz"):
        raise UsageError(f"--checkpoint: expected a .npz file name, got {args.checkpoint!r}")
    args.save_times = save_times(args.save_at, args.t_max)


def save_times(text: str | None, t_max: float) -> np.ndarray | None:
    """The --save-at times (sorted, in (0, t_max], t = 0 added), or None."""
    if text is None:
        return None
    text = text.strip()
    for kind in ("log:", "lin:"):
        if text.startswith(kind):
            try:
                count = int(text[4:])
            except ValueError:
                raise UsageError(f"--save-at: expected {kind}K with an integer K, "
                                 f"got {text!r}") from None
            if not 2 <= count <= 1_000_000:
                raise UsageError(f"--save-at: K must be in [2, 1000000], got {count}")
            if kind == "lin:":
                return np.linspace(0.0, t_max, count + 1)
            return np.concatenate([[0.0], np.geomspace(t_max * 1e-6, t_max, count)])
    try:
        times = np.array([float(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise UsageError(f"--save-at: expected comma-separated times, log:K or lin:K, "
                         f"got {text!r}") from None
    if times.size == 0 or not np.all(np.isfinite(times)):
        raise UsageError(f"--save-at: expected finite times, got {text!r}")
    if np.any(times < 0) or np.any(times > t_max):
        raise UsageError(f"--save-at: times must lie in [0, --t-max {t_max:g}], got {text!r}")
    return np.unique(np.concatenate([[0.0], times]))


def controller(args):
    from ._integrate import Adaptive
    return Adaptive(args.t_max, rtol=args.rtol, atol=args.atol, max_steps=args.max_steps,
                    history=args.history, max_decimation_error=args.max_decimation_error,
                    control_auxiliary=bool(args.control_train_error),
                    decimation_norm=args.decimation_norm)


def adaptive_bytes(history: int, max_steps: int, pair: float, vec: float, k: int) -> float:
    """Peak bytes of an adaptive solve: the history (as a fixed-grid solve of `history`
    times, ~3 copies) and the records at every step (a few copies of ~10 + 2 pair numbers)."""
    L = float(history)
    records = (8 + vec * (k + 2) + 2 * pair) * (max_steps + 1.0)
    return 8 * 3 * ((2 * pair + 2) * L * L + 4 * vec * (k + 2) * L + 2 * records)


# ------------------------------------------------------------------------------ the run
def fingerprint(params: dict) -> str:
    """A hash of the flags that define the solve (checkpoints resume only the same solve)."""
    skip = {"out", "plot", "json", "progress", "checkpoint", "save_at", "save_times"}
    keep = {k: v for k, v in params.items() if k not in skip and not k.startswith("_")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def _load_checkpoint(path: str, carry, key: str):
    import jax
    import jax.numpy as jnp
    leaves, tree = jax.tree_util.tree_flatten(carry)
    spec = {f"leaf_{i:04d}": None for i in range(len(leaves))}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["fingerprint"]) != key:
                raise UsageError(f"--checkpoint: {path!r} belongs to a solve with other flags "
                                 "(remove it or use another file)")
            names = [n for n in data.files if n.startswith("leaf_")]
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"--checkpoint: cannot read {path!r}: {err}") from None
    if sorted(names) != sorted(spec):
        raise UsageError(f"--checkpoint: {path!r} does not hold this solver's state")
    with np.load(path, allow_pickle=False) as data:
        out = []
        for i, leaf in enumerate(leaves):
            x = data[f"leaf_{i:04d}"]
            if x.shape != leaf.shape or x.dtype != leaf.dtype:
                raise UsageError(f"--checkpoint: {path!r} does not hold this solver's state "
                                 f"(array {i}: {x.shape} {x.dtype}, expected {leaf.shape} "
                                 f"{leaf.dtype})")
            out.append(jnp.asarray(x))
    return jax.tree_util.tree_unflatten(tree, out)


def _save_checkpoint(out, carry, key: str) -> None:
    import jax
    leaves = jax.tree_util.tree_leaves(carry)
    arrays = {f"leaf_{i:04d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["fingerprint"] = np.asarray(key)
    out.write_npz(arrays, flag="checkpoint")


def run(model, ctrl, args, out, progress: bool):
    """The segmented adaptive solve: (solution, compile seconds, run seconds, resumed?)."""
    import equinox as eqx
    import jax

    from ._integrate import adaptive_advance, adaptive_done, adaptive_finish, adaptive_init
    from ._stepper import Trapezoid
    stepper = Trapezoid()
    params, static = eqx.partition((model, ctrl), eqx.is_array)

    def init(p):
        mod, ctl = eqx.combine(p, static)
        return adaptive_init(mod, ctl, stepper)

    def advance(p, carry, attempts):
        mod, ctl = eqx.combine(p, static)
        carry = adaptive_advance(mod, ctl, stepper, carry, attempts)
        return carry, adaptive_done(ctl, carry)

    def finish(p, carry):
        mod, ctl = eqx.combine(p, static)
        return adaptive_finish(mod, ctl, stepper, carry, throw=False)

    t0 = time.perf_counter()
    carry = jax.jit(init)(params)
    advance_c = jax.jit(advance).lower(params, carry, 1).compile()
    finish_c = jax.jit(finish).lower(params, carry).compile()
    compile_s = time.perf_counter() - t0
    key = fingerprint(json.loads(out.params()))
    resumed = False
    if args.checkpoint and os.path.exists(args.checkpoint):
        carry, resumed = _load_checkpoint(args.checkpoint, carry, key), True
        if progress:
            print(f"dmft-jax solve: resuming from {args.checkpoint} at t = "
                  f"{float(carry.ts[carry.n]):.4g}", file=sys.stderr, flush=True)
    start = last_report = last_save = time.perf_counter()
    attempts, done = 16, False
    while not done:
        seg = time.perf_counter()
        carry, done = advance_c(params, carry, attempts)
        done = bool(done)
        now = time.perf_counter()
        # aim at about a second per segment: progress, checkpoints and Ctrl-C in between
        attempts = int(min(max(attempts * min(4.0, 1.0 / max(now - seg, 1e-3)), 8), 100_000))
        if progress and (done or now - last_report >= PROGRESS_EVERY):
            _report(carry, ctrl, now - start)
            last_report = now
        if args.checkpoint and (done or now - last_save >= _checkpoint_every()):
            _save_checkpoint(out, carry, key)
            last_save = now
    sol = jax.block_until_ready(finish_c(params, carry))
    return sol, compile_s, time.perf_counter() - start, resumed


def _report(carry, ctrl, seconds: float) -> None:
    t, t_max = float(carry.ts[carry.n]), float(ctrl.t_max)
    print(f"dmft-jax solve: t = {t:.4g} / {t_max:.4g} ({100 * t / t_max:.1f}%), "
          f"step {float(carry.h):.3g}, {int(carry.accepted)} accepted, "
          f"{int(carry.rejected)} rejected, {int(carry.n) + 1} stored, {seconds:.1f} s",
          file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the arrays
def arrays(sol, model, save_at) -> dict[str, np.ndarray]:
    """The out file of an adaptive solve (see the README): one-time arrays on `t` (the
    accepted steps, or the --save-at times by linear interpolation), two-time arrays on
    `t_stored`, `stats` and `layout`."""
    from ._cli_physics import general_width
    count = int(sol.stats["accepted"]) + 1
    stored = int(sol.stats["stored"])
    t = np.asarray(sol.t)[:count]
    one = dict(a=sol.a, gamma=sol.gamma, v=sol.v, nu=sol.nu, rho=sol.rho, e_tr=sol.e_tr,
               e_ts=sol.e_ts)
    general = general_width(model) is not None
    if general:
        one.update(C_t0=sol.C_t0, C_tt=sol.C_tt)
    else:
        one.update(C_d0=sol.C_d0, C_o_eq=sol.C_o_eq)
    one = {k: np.asarray(v)[:count] for k, v in one.items()}
    if save_at is not None:
        one = {k: _interp(save_at, t, v) for k, v in one.items()}
        t_out = save_at
    else:
        t_out = t
    two = dict(C_A=sol.C_A, R_A=sol.R_A)
    if general:
        two.update(C=np.moveaxis(np.asarray(sol.C), (0, 1), (2, 3)),
                   R=np.moveaxis(np.asarray(sol.R), (0, 1), (2, 3)))
    else:
        two.update(C_d=sol.C_d, C_o=sol.C_o, R_d=sol.R_d, R_o=sol.R_o)
    two = {k: np.asarray(v)[:stored, :stored] for k, v in two.items()}
    stats = {k: float(v) if k == "decimation_error" else int(v) for k, v in sol.stats.items()}
    layout = ("adaptive solve: one-time arrays (a, gamma, v, nu, rho, e_tr, e_ts, "
              + ("C_t0, C_tt" if general else "C_d0 = C_d(t, 0), C_o_eq = C_o(t, t)")
              + ") on t ("
              + ("the --save-at times, linear interpolation between accepted steps"
                 if save_at is not None else "every accepted step")
              + "); two-time arrays X[n, l] = X(t_stored[n], t_stored[l]) on t_stored (the "
              "bounded history; read between stored times by linear interpolation); R zero "
              "for l >= n (R(t+, t) = 1 is the jump); R_A is the regular part of R_A "
              "(its delta is exact, not on the diagonal)")
    return dict(t=t_out, t_steps=t, t_stored=np.asarray(sol.t_stored)[:stored], **one, **two,
                stats=np.asarray(json.dumps(stats)), layout=np.asarray(layout))


def _interp(at: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    cols = [np.interp(at, t, flat[:, j]) for j in range(flat.shape[1])]
    return np.stack(cols, axis=-1).reshape((at.shape[0],) + x.shape[1:])
