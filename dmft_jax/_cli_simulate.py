"""`dmft-jax simulate`: the Gaussian model (docs/equations.md section 3), many realizations.

Same physics flags as `solve` (symmetric initialization, or a general one with --init
FILE.npz); the simulator runs projected GD (or SGD with --batch) at step --lr, i.e.
gradient-flow time dt = lr d / n per step (docs/equations.md section 1). Realizations that
diverge are marked in `diverged` and reported; when all of them diverge the (flagged) file is
still written and the command exits 1.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from ._cli_args import (
    COUNT,
    MAX_DEGREE,
    POSITIVE,
    Command,
    Count,
    SolveError,
    UsageError,
    check_memory,
)
from ._cli_io import add_output_arguments, diverged, divergence_line
from ._cli_physics import add_physics_arguments, check_one_step, model_from_args, steps_of


def _add_simulate(p):
    add_physics_arguments(p)
    g = p.add_argument_group("simulation (docs/equations.md section 3)")
    g.add_argument("--d", type=COUNT, default=100, help="input dimension d (default 100)")
    g.add_argument("--realizations", type=COUNT, default=20,
                   help="independent draws of the Gaussian model (default 20)")
    g.add_argument("--lr", type=POSITIVE, default=0.1, help="GD/SGD step size (default 0.1)")
    g.add_argument("--seed", type=Count(0), default=0, help="PRNG seed (default 0)")
    g.add_argument("--t-max", type=POSITIVE, default=5.0,
                   help="final gradient-flow time (default 5); steps = round(t_max / dt); one "
                        "step dt = lr d / n must not pass it")
    g.add_argument("--record-every", type=POSITIVE, default=None, metavar="T",
                   help="record every T of gradient-flow time (default: t_max / 50)")
    g.add_argument("--batch", type=Count(0), default=0,
                   help="SGD batch size b (0 = full-batch GD, default)")
    g.add_argument("--batch-size", type=COUNT, default=None, metavar="R",
                   help="realizations vmapped together (default: 1 on CPU, a 1 GB budget on GPU)")
    g.add_argument("--max-stored-degree", type=Count(0, MAX_DEGREE), default=2, metavar="P",
                   help="store the tensors J^(p) for p <= P, stream (regenerate) higher degrees "
                        "(default 2)")
    g.add_argument("--float32", action="store_true",
                   help="simulate in float32 (half the memory; ample for Monte Carlo accuracy)")
    add_output_arguments(p)


def _gaussian_model(args, dmft):
    """(Gaussian model, notes): the notes are printed once every check has passed."""
    from ._gaussian_model import gaussian_model_from_dmft
    notes = []
    exact = float(dmft.alpha_bar) * args.d
    n = int(round(exact))
    if n < 1:
        raise UsageError(f"--d {args.d}: n = alpha m d = {exact:g} rounds to {n}; raise --d or "
                         "--alpha so that n >= 1")
    if abs(n - exact) > 1e-9 * max(1.0, exact):
        notes.append(f"n = alpha m d = {exact:g} is not an integer; using n = {n} "
                     f"(alpha_bar = n/d = {n / args.d:g})")
    try:
        gm = gaussian_model_from_dmft(dmft, args.d, n=n)
    except ValueError as err:
        raise UsageError(f"{_flag_of(str(err), args)}: {err}") from None
    too_big = [p for p in gm.degrees if p > args.max_stored_degree and args.d**p > 1 << 27]
    if too_big:
        p, flag = too_big[0], "--activation" if args.activation else "--h"
        raise UsageError(f"--d {args.d}: degree {p} of h ({flag}) needs d^{p} = "
                         f"{float(args.d) ** p:.3g} entries per sample; use a smaller --d or a "
                         "covariance of lower degree")
    streamed = [p for p in gm.degrees if p > args.max_stored_degree]
    if streamed:
        per_step = sum(gm.n * args.d**p for p in streamed)
        notes.append(f"degree(s) {streamed} of h are streamed (regenerated each step): "
                     f"~{per_step:.2g} Gaussian draws per step and realization")
    if args.batch > gm.n:
        raise UsageError(f"--batch {args.batch} exceeds the n = {gm.n} samples")
    return gm, notes


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
    check_one_step("--lr", dt, "--t-max", args.t_max)
    steps = steps_of("--t-max", args.t_max, dt)
    every_t = args.t_max / 50 if args.record_every is None else min(args.record_every, args.t_max)
    every = min(steps_of("--record-every", every_t, dt), steps)
    return int(math.ceil(steps / every)) * every, every, dt


def _check_memory(args, gm, steps: int, every: int) -> None:
    """Refuse a simulation whose records or vmapped realizations exceed the memory."""
    from ._gaussian_model import DEFAULT_BATCH_BYTES, memory_per_realization
    item = 4 if args.float32 else 8
    R, T, m, k = args.realizations, steps // every + 1, gm.m, gm.k
    records = 2.0 * 8 * R * T * (2 * m * m + m * k + m + 4)  # device, then host arrays
    per = float(memory_per_realization(gm, args.max_stored_degree, item, args.batch or None))
    if args.batch_size:
        vmapped = min(args.batch_size, R) * per
    else:  # the default batches realizations within DEFAULT_BATCH_BYTES (at least one)
        vmapped = max(per, min(R * per, DEFAULT_BATCH_BYTES))
    check_memory(records + vmapped + 16.0 * R,
                 f"--d {gm.d} (n = {gm.n}), --realizations {R}, --m {m}, {T} records"
                 + (f", --batch-size {args.batch_size}" if args.batch_size else ""))


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


def _run_simulate(args, out) -> int:
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    from ._gaussian_model import simulate
    gm, notes = _gaussian_model(args, model_from_args(args))
    steps, every, dt = _schedule(args, gm)
    _check_memory(args, gm, steps, every)
    for note in notes:
        print(f"dmft-jax simulate: note: {note}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    sim = simulate(gm, jr.PRNGKey(args.seed), args.realizations, lr=args.lr, steps=steps,
                   record_every=every, batch=args.batch or None, batch_size=args.batch_size,
                   max_stored_degree=args.max_stored_degree,
                   dtype=jnp.float32 if args.float32 else None)
    arrays = simulation_arrays(jax.block_until_ready(sim))
    wall = time.perf_counter() - t0
    bad_runs = diverged(arrays)
    bad, ok = int(bad_runs.sum()), ~bad_runs
    summary = dict(realizations=args.realizations, diverged=bad, d=gm.d, n=gm.n, m=gm.m,
                   steps=steps, dt=dt, t=float(arrays["t"][-1]),
                   e_tr=float(arrays["e_tr"][ok, -1].mean()) if ok.any() else None,
                   e_ts=float(arrays["e_ts"][ok, -1].mean()) if ok.any() else None,
                   wall_time_s=round(wall, 3))
    params = out.params(out=args.out, json=args.json)  # this file's params always held both
    out.write_npz(dict(arrays, params=np.asarray(params), n=gm.n, d=gm.d, lr=args.lr, dt=dt))
    if bad:
        line = divergence_line("realizations", bad, args.realizations,
                               f"(flagged in 'diverged'); try a smaller --lr than {args.lr:g}")
        if bad == args.realizations:  # no result at all: the flagged file, and exit 1
            out.error_json(summary)
            raise SolveError(line + out.written())
        print(f"dmft-jax simulate: warning: {line}", file=sys.stderr, flush=True)
    errors = (f"mean e_tr = {summary['e_tr']:.6g}, e_ts = {summary['e_ts']:.6g}"
              + (f" over the {int(ok.sum())} that did not diverge" if bad else ""))
    out.report(summary, f"{args.realizations} realizations, d = {gm.d}, n = {gm.n}, {steps} "
                        f"steps of lr {args.lr:g} (dt = {dt:.4g}): at t = {summary['t']:g} "
                        f"{errors} ({wall:.1f} s)")
    return 0


SIMULATE = Command("simulate", "simulate the Gaussian model (docs/equations.md section 3) by "
                   "projected GD/SGD", _add_simulate, _run_simulate)
