"""`dmft-jax simulate`: the Gaussian model of spec section 3, many realizations, written to npz.

Registered into `dmft_jax._cli.COMMANDS` on import. Same physics flags as `solve` (symmetric
initialization, or a general one with --init FILE.npz); the simulator runs projected GD (or SGD
with --batch) at step --lr, i.e. gradient-flow time dt = lr d / n per step (spec section 1).
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from ._cli import COMMANDS, SolveError, UsageError, add_physics_arguments, model_from_args


def _add_simulate(p):
    add_physics_arguments(p)
    g = p.add_argument_group("simulation (spec section 3)")
    g.add_argument("--d", type=int, default=100, help="input dimension d (default 100)")
    g.add_argument("--realizations", type=int, default=20,
                   help="independent draws of the Gaussian model (default 20)")
    g.add_argument("--lr", type=float, default=0.1, help="GD/SGD step size (default 0.1)")
    g.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    g.add_argument("--t-max", type=float, default=5.0,
                   help="final gradient-flow time (default 5); steps = round(t_max / dt)")
    g.add_argument("--record-every", type=float, default=None, metavar="T",
                   help="record every T of gradient-flow time (default: t_max / 50)")
    g.add_argument("--batch", type=int, default=0,
                   help="SGD batch size b (0 = full-batch GD, default)")
    g.add_argument("--batch-size", type=int, default=None, metavar="R",
                   help="realizations vmapped together (default: 1 on CPU, a 1 GB budget on GPU)")
    g.add_argument("--max-stored-degree", type=int, default=2, metavar="P",
                   help="store the tensors J^(p) for p <= P, stream (regenerate) higher degrees "
                        "(default 2)")
    g.add_argument("--float32", action="store_true",
                   help="simulate in float32 (half the memory; ample for Monte Carlo accuracy)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE.npz", help="write the recorded arrays")
    o.add_argument("--json", action="store_true", help="print a one-line JSON summary")


def _check_flags(args):
    checks = [("--d", args.d >= 1, "an integer >= 1"),
              ("--realizations", args.realizations >= 1, "an integer >= 1"),
              ("--lr", np.isfinite(args.lr) and args.lr > 0, "a finite number > 0"),
              ("--t-max", np.isfinite(args.t_max) and args.t_max > 0, "a finite number > 0"),
              ("--batch", args.batch >= 0, ">= 0 (0 = full batch)"),
              ("--max-stored-degree", args.max_stored_degree >= 0, ">= 0")]
    if args.record_every is not None:
        checks.append(("--record-every", np.isfinite(args.record_every) and args.record_every > 0,
                       "a finite number > 0"))
    if args.batch_size is not None:
        checks.append(("--batch-size", args.batch_size >= 1, "an integer >= 1"))
    for flag, ok, what in checks:
        if not ok:
            value = getattr(args, flag[2:].replace("-", "_"))
            raise UsageError(f"{flag} must be {what}, got {value}")


def _gaussian_model(args, dmft):
    from ._gaussian_model import gaussian_model_from_dmft
    exact = float(dmft.alpha_bar) * args.d
    n = int(round(exact))
    if n < 1:
        raise UsageError(f"--d {args.d}: n = alpha m d = {exact:g} rounds to {n}; raise --d or "
                         "--alpha so that n >= 1")
    if abs(n - exact) > 1e-9 * max(1.0, exact):
        print(f"dmft-jax simulate: note: n = alpha m d = {exact:g} is not an integer; using "
              f"n = {n} (alpha_bar = n/d = {n / args.d:g})", file=sys.stderr)
    try:
        gm = gaussian_model_from_dmft(dmft, args.d, n=n)
    except ValueError as err:
        raise UsageError(f"{_flag_of(str(err), args)}: {err}") from None
    too_big = [p for p in gm.degrees if p > args.max_stored_degree and args.d**p > 1 << 27]
    if too_big:
        raise UsageError(f"{'--activation' if args.activation else '--h'}: degree {too_big[0]} "
                         f"of h needs d^{too_big[0]} = {float(args.d)**too_big[0]:.3g} entries "
                         "per sample: use a covariance of lower degree or a smaller --d")
    streamed = [p for p in gm.degrees if p > args.max_stored_degree]
    if streamed:
        per_step = sum(gm.n * args.d**p for p in streamed)
        print(f"dmft-jax simulate: note: degree(s) {streamed} of h are streamed (regenerated each "
              f"step): ~{per_step:.2g} Gaussian draws per step and realization", file=sys.stderr)
    if args.batch > gm.n:
        raise UsageError(f"--batch {args.batch} exceeds the n = {gm.n} samples")
    return gm


def _flag_of(message: str, args) -> str:
    """The flag a model-construction error is about."""
    if message.startswith("d = "):
        return "--d"
    if message.startswith("||phi||^2"):
        return "--phi-norm2"
    if message.startswith("phihat"):
        return "--phihat" if args.phihat else "--target"
    if "finite degree" in message and (args.phihat or args.target) and not args.activation:
        return "--h/--target"
    return "--activation" if args.activation else "--h"


def _schedule(args, gm):
    """(steps, record_every in steps, dt) from --t-max and --record-every in gradient-flow time."""
    dt = args.lr * gm.d / gm.n
    steps = max(1, int(round(args.t_max / dt)))
    every_t = args.t_max / 50 if args.record_every is None else args.record_every
    every = max(1, int(round(every_t / dt)))
    every = min(every, steps)
    return int(math.ceil(steps / every)) * every, every, dt


def simulation_arrays(sim) -> dict[str, np.ndarray]:
    """The arrays written by `simulate --out`: `t` (T,); (realizations, T) arrays `a`, `v`
    (mean over neurons of a_i, of v_i1), `C_d0` (mean_i C_ii(t, 0)), `C_o` (mean over i != j of
    C_ij(t, t)), `e_tr`, `e_ts`; per neuron `a_neurons` (R, T, m), `v_neurons` (R, T, m, k), `C0`,
    `C` (R, T, m, m); `diverged` (R,); `controls` (R, m + 1) zero-mean control variates."""
    a = np.asarray(sim.a)
    return dict(t=np.asarray(sim.t), a=a.mean(axis=-1), v=np.asarray(sim.v)[..., 0].mean(axis=-1),
                C_d0=np.asarray(sim.C_d0), C_o=np.asarray(sim.C_o), e_tr=np.asarray(sim.e_tr),
                e_ts=np.asarray(sim.e_ts), a_neurons=a, v_neurons=np.asarray(sim.v),
                C0=np.asarray(sim.C0), C=np.asarray(sim.C), diverged=np.asarray(sim.diverged),
                controls=np.asarray(sim.controls))


def _run_simulate(args) -> int:
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    from ._gaussian_model import simulate
    _check_flags(args)
    gm = _gaussian_model(args, model_from_args(args))
    steps, every, dt = _schedule(args, gm)
    t0 = time.perf_counter()
    sim = simulate(gm, jr.PRNGKey(args.seed), args.realizations, lr=args.lr, steps=steps,
                   record_every=every, batch=args.batch or None, batch_size=args.batch_size,
                   max_stored_degree=args.max_stored_degree,
                   dtype=jnp.float32 if args.float32 else None)
    arrays = simulation_arrays(jax.block_until_ready(sim))
    wall = time.perf_counter() - t0
    if args.out:
        params = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
        np.savez(args.out, params=json.dumps(params), n=gm.n, d=gm.d, lr=args.lr, dt=dt, **arrays)
    bad = int(arrays["diverged"].sum())
    ok = ~arrays["diverged"]
    summary = dict(realizations=args.realizations, diverged=bad, d=gm.d, n=gm.n, m=gm.m,
                   steps=steps, dt=dt, t=float(arrays["t"][-1]),
                   e_tr=float(arrays["e_tr"][ok, -1].mean()) if ok.any() else None,
                   e_ts=float(arrays["e_ts"][ok, -1].mean()) if ok.any() else None,
                   wall_time_s=round(wall, 3))
    if args.json:
        print(json.dumps(summary))
    else:
        errors = (f"mean e_tr = {summary['e_tr']:.6g}, e_ts = {summary['e_ts']:.6g}" if ok.any()
                  else "no realization converged")
        print(f"{args.realizations} realizations, d = {gm.d}, n = {gm.n}, {steps} steps of lr "
              f"{args.lr:g} (dt = {dt:.4g}): at t = {summary['t']:g} {errors} ({wall:.1f} s)"
              + (f"; wrote {args.out}" if args.out else ""))
    if bad:
        msg = (f"{bad} of {args.realizations} realizations diverged (flagged in 'diverged'); "
               f"try a smaller --lr than {args.lr:g}")
        if bad == args.realizations:
            raise SolveError(msg)
        print(f"dmft-jax simulate: warning: {msg}", file=sys.stderr)
    return 0


COMMANDS["simulate"] = ("simulate the Gaussian model (spec section 3) by projected GD/SGD",
                        _add_simulate, _run_simulate)
