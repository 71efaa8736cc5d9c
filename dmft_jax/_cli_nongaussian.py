"""The non-Gaussian DMFT on the command line (docs/nongaussian.md; issue 10, item 6).

`dmft-jax solve --theory nongaussian` solves `dj.nongaussian_dmft` (the exact DMFT of the real
two-layer network, by Monte Carlo over draws of the sample-side process) with the physics and
grid flags of the Gaussian solve, and writes the Gaussian solve's arrays plus standard errors
and diagnostics. `dmft-jax grad --theory nongaussian --mode forward` differentiates one of its
timed observables at fixed draws (common random numbers). `dmft-jax compare` recognizes its out
files by their `theory` entry and draws them as lines with a +-1 standard-error band.

The new flags default to `argparse.SUPPRESS`: a Gaussian run's namespace, and hence the
`params` stored in its files, is the same as before they existed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ._cli_args import COUNT, Choice, Count, Real, SolveError, UsageError, check_memory

THEORIES = ("gaussian", "nongaussian")
#: --method values of each theory (the flag itself is declared in `_cli_adaptive`).
METHODS = {"gaussian": ("euler", "trapezoid"), "nongaussian": ("pass", "fixed-point")}
#: Defaults of the non-Gaussian flags (documented in the README).
DRAWS, SEED, GROUPS, TOL, MAX_ITER, BATCH = 4000, 0, 8, 1e-4, 50, 256
#: Flags that only the non-Gaussian theory takes (attribute names).
NG_ONLY = ("draws", "seed", "groups", "antithetic", "exchangeable", "control_variates", "implicit",
           "sampling", "tol", "max_iter", "batch")
#: --sampling values: the Gaussian paths from a factor of the Euler covariance (clipped where
#: it is not PSD) or the path-wise weight side (PSD by construction; spec 7.5).
SAMPLINGS = ("factor", "paths")
#: Flags of the adaptive Gaussian solve, refused by the non-Gaussian theory.
_ADAPTIVE = ("t_max", "rtol", "atol", "history", "max_decimation_error", "max_steps",
             "save_at", "checkpoint", "decimation_norm")


def add_nongaussian_arguments(p: argparse.ArgumentParser, *, fixed_point: bool = True) -> None:
    """--theory and the Monte Carlo flags of the non-Gaussian DMFT (all default SUPPRESS)."""
    S = argparse.SUPPRESS
    g = p.add_argument_group("non-Gaussian DMFT (--theory nongaussian; docs/nongaussian.md)")
    g.add_argument("--theory", type=Choice(THEORIES), default=S, metavar="gaussian|nongaussian",
                   help="gaussian: the DMFT of the Gaussian surrogate (default); nongaussian: "
                        "the exact DMFT of the real network at width m, by Monte Carlo")
    g.add_argument("--draws", type=COUNT, default=S, metavar="N",
                   help=f"Monte Carlo draws in total (default {DRAWS}); a multiple of --groups "
                        "(of 2 --groups with --antithetic)")
    g.add_argument("--seed", type=Count(0), default=S,
                   help=f"seed of the draws (default {SEED}); the same seed gives the same draws")
    g.add_argument("--groups", type=COUNT, default=S, metavar="G",
                   help=f"independent replicas for the standard errors (>= 2, default {GROUPS})")
    g.add_argument("--antithetic", action="store_true", default=S,
                   help="antithetic draws: each replica's second half is minus its first half")
    g.add_argument("--implicit", action="store_true", default=S,
                   help="the semi-implicit per-draw step (spec 7.6): stiff draws do not force a "
                        "smaller --dt (first order, O(dt) from the explicit step)")
    g.add_argument("--sampling", type=Choice(SAMPLINGS), default=S, metavar="factor|paths",
                   help="factor (default): the Gaussian paths from a causal factor of the "
                        "weight side's Euler covariance, its negative Schur complements clipped "
                        "and reported; paths: the path-wise weight side (spec 7.5), the draws' "
                        "paths are the effective weight process itself, positive semidefinite "
                        "by construction (--method pass; not with --control-variates)")
    g.add_argument("--control-variates", action="store_true", default=S,
                   help="estimate da/dt and e_tr with the Gaussian model's error at the same "
                        "paths as control variates (closed-form means; smaller standard "
                        "errors at early times)")
    g.add_argument("--exchangeable", action="store_true", default=S,
                   help="average every kernel over neuron permutations (needs a symmetric "
                        "initialization: all a_i(0) equal, equal off-diagonal C(0, 0))")
    if fixed_point:
        g.add_argument("--tol", type=Real(0.0, 1.0, open_low=True), default=S,
                       help=f"--method fixed-point: residual tolerance (default {TOL:g})")
        g.add_argument("--max-iter", type=Count(1, 100_000), default=S, metavar="N",
                       help=f"--method fixed-point: most iterations (default {MAX_ITER})")
        g.add_argument("--batch", type=COUNT, default=S, metavar="B",
                       help="--method fixed-point: draws per batch of the sample side (a "
                            "divisor of --draws / --groups; default: the largest one <= "
                            f"{BATCH}); memory ~ 8 B steps^2 m^2 bytes whatever --draws")


def theory(args) -> str:
    return getattr(args, "theory", "gaussian")


def _given(args, names) -> list[str]:
    return [f"--{k.replace('_', '-')}" for k in names if getattr(args, k, None) not in (None,)]


def check_gaussian(args) -> None:
    """The Gaussian theory: no non-Gaussian flag, no non-Gaussian --method."""
    given = [f"--{k.replace('_', '-')}" for k in NG_ONLY if hasattr(args, k)]
    if given:
        raise UsageError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to "
                         "--theory nongaussian only")
    method = getattr(args, "method", None)
    if method in METHODS["nongaussian"]:
        raise UsageError(f"--method {method} is a method of --theory nongaussian; the Gaussian "
                         "DMFT takes euler or trapezoid")


def check_flags(args, command: str = "solve") -> None:
    """UsageError for what the non-Gaussian theory cannot do; fills in its defaults."""
    def no(flags, why):
        if flags:
            verb = "does" if len(flags) == 1 else "do"
            raise UsageError(f"{', '.join(flags)} {verb} not apply to --theory nongaussian: "
                             f"{why}")
    no(_given(args, _ADAPTIVE), "its causal pass runs on the fixed grid --dt/--steps (Euler)")
    if getattr(args, "dynamics", "flow") != "flow" or getattr(args, "lr", None) is not None:
        raise UsageError("--dynamics gd / --lr do not apply to --theory nongaussian: it "
                         "describes gradient flow only")
    if args.activation == "relu":
        raise UsageError("--activation relu: the non-Gaussian DMFT needs sigma'' (K.9), which "
                         "ReLU lacks; use a smooth activation (erf, tanh, --h)")
    no(_given(args, ("phihat", "phi_norm2")), "it needs the pointwise target phi; use --target "
       "same|none|NAME")
    method = getattr(args, "method", None)
    if method in METHODS["gaussian"]:
        raise UsageError(f"--method {method} is a method of the Gaussian DMFT; --theory "
                         "nongaussian takes pass (default) or fixed-point")
    args.method = method or "pass"
    if args.method != "fixed-point":
        no([f for f, k in (("--tol", "tol"), ("--max-iter", "max_iter"), ("--batch", "batch"))
            if hasattr(args, k)], "only --method fixed-point iterates")
    elif getattr(args, "sampling", "factor") == "paths":
        raise UsageError("--sampling paths is the causal pass's (--method pass): the fixed "
                         "point samples its paths from a factor of each iterate")
    for name, default in (("draws", DRAWS), ("seed", SEED), ("groups", GROUPS),
                          ("antithetic", False), ("exchangeable", False),
                          ("control_variates", False), ("implicit", False),
                          ("sampling", "factor"), ("tol", TOL),
                          ("max_iter", MAX_ITER), ("batch", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if command == "solve":
        args.dt = 0.05 if args.dt is None else args.dt
        args.steps = 40 if args.steps is None else args.steps   # t = 2: the per-draw J is O(N^2)


# --------------------------------------------------------------------------------- the model
def _initialization(args, k: int):
    """(a, C, v) from --init FILE.npz, or a_i(0) = --a0 (--gamma0 sqrt(m)), C = I, v = 0."""
    from ._cli_physics import INIT_ARRAYS, INIT_OPTIONAL, initial_a0
    from ._cli_args import read_npz
    if getattr(args, "init", None):
        if args.gamma0 is not None or args.a0 is not None:
            raise UsageError("--init sets a(0) from the file: do not combine it with "
                             "--a0/--gamma0")
        data = read_npz("--init", args.init, INIT_ARRAYS, INIT_OPTIONAL)
        a = data["a"]
        if args.m is not None and args.m != a.shape[0]:
            raise UsageError(f"--m {args.m} does not match the {a.shape[0]} neurons of --init")
        return a, data["C"], data.get("v")
    m = 16 if args.m is None else args.m
    args.m = m
    return np.full(m, initial_a0(args)), np.eye(m), None


def _target(args, h_spec):
    """(phi, target) for `nongaussian_dmft`: "same", None (pure noise) or a named function
    applied to every index direction."""
    from ._cli_physics import target_from
    from ._covariance import activation
    from ._nongaussian import _SumOver
    spec = args.target or "same"
    if spec == "same":
        return "same", None
    tgt = target_from(args, h_spec)
    if spec == "none":
        return None, tgt
    return _SumOver(activation(spec)), tgt


def model_from_args(args):
    """(NonGaussianDMFT, TimeGrid) of the flags (UsageError with the library's message)."""
    from ._cli_physics import covariance_from, grid_from_args
    from ._nongaussian import nongaussian_dmft
    h, h_spec = covariance_from(args)
    phi, tgt = _target(args, h_spec)
    k = args.k or 1
    a, C, v = _initialization(args, k)
    if len(np.atleast_1d(a)) < 1:
        raise UsageError(f"--init: {args.init!r} has an empty array a (no neurons)")
    try:
        model = nongaussian_dmft(h_spec, phi, h=h, target=tgt, k=k, tau=args.tau, a=a, C=C,
                                 v=v, alpha=args.alpha, draws=args.draws, key=args.seed,
                                 groups=args.groups, freeze_a=args.freeze_a,
                                 antithetic=args.antithetic, exchangeable=args.exchangeable,
                                 control_variates=args.control_variates,
                                 implicit=args.implicit, paths=args.sampling == "paths",
                                 # the causal pass runs an exchangeable weight side in the
                                 # two-number algebra (the same result to round-off)
                                 symmetric=args.exchangeable and args.method == "pass")
    except ValueError as err:
        text = _flag_names(str(err))
        where = "--init: " if getattr(args, "init", None) and "--" not in text else ""
        raise UsageError(where + text) from None
    return model, grid_from_args(args)


def _flag_names(text: str) -> str:
    """The library's message with its argument names spelled as flags."""
    for word, flag in (("draws must", "--draws must"), ("groups must", "--groups must"),
                       ("paths=True", "--sampling paths"),
                       ("control_variates need", "--control-variates need"),
                       ("exchangeable=True", "--exchangeable"), ("groups x 2", "--groups x 2"),
                       ("antithetic pairs", "--antithetic pairs")):
        text = text.replace(word, flag)
    return text


def _per_draw(N: float, m: float, k: float) -> float:
    """Numbers kept per draw by the sample side: the responses (lower triangle in blocks,
    ~N^2 m^2 / 2)
    and the histories of S, K, xi, F, g, z, E, lam, plus r0, y, grad phi."""
    from ._nongaussian import y_blocks        # (the module imports jax: not at start-up)
    j = sum(rows * ext for rows, ext in y_blocks(int(N)))
    return j * m * m + N * (m * m + m * k + 4 * m + 2) + k + 2


def solve_bytes(model, steps: int, together: int | None = None) -> float:
    """Estimated peak bytes of the causal pass with `together` replicas solved at once (default
    the model's `replica_batch`, or all): the buffers of `NonGaussianDMFT.init`, per draw J
    (~N^2 m^2 / 2), S, K, xi, F, g, z, E, lam (N (m^2 + m k + 4 m + 2)) and per replica Lf, C, R
    (3 N^2 m^2) plus the least-squares solve ((N m)^2, a few copies) and, with `paths`, the
    couplings (draws per replica squared); about twice that for
    XLA's copies in the loop, the output arrays (4 N^2 m^2) and every replica's one-time
    histories."""
    N, m, k = float(steps) + 1, float(model.m), float(model.k)
    G = float(together or model.replica_batch or model.groups)
    P = float(model.draws) * G
    per_draw = _per_draw(N, m, k)
    per_group = 3 * N * N * m * m + 4 * (N * m) ** 2 + N * (m * k + 4 * m + 8)
    if model.paths:         # the path-wise weight side's couplings (draws x draws)
        per_group += float(model.draws) ** 2
    histories = model.draws * model.groups * N * (2 * m + 2) + model.groups * per_group
    return 8 * (2 * (P * per_draw + G * per_group) + 4 * N * N * m * m + histories)


def with_replica_batch(model, steps: int):
    """The pass's model with `replica_batch` the largest divisor of --groups whose replicas fit
    in the available memory solved together (all of them if they fit: the run time is the
    same on a CPU, see `NonGaussianDMFT.run_fixed`)."""
    import dataclasses

    from ._cli_args import available_memory
    have, _ = available_memory()
    G = model.groups
    fits = [b for b in range(G, 0, -1) if G % b == 0 and solve_bytes(model, steps, b) <= have]
    b = fits[0] if fits else 1
    return model if b == G else dataclasses.replace(model, replica_batch=b)


def fixed_point_bytes(model, steps: int, batch: int) -> float:
    """Estimated peak bytes of `--method fixed-point`: one batch's per-draw buffers (as in the
    pass, `batch` draws), one replica's iterate, kernels, path factor and Anderson history
    (~ 30 N^2 m^2), the least-squares solve, and every draw's normals (P N m)."""
    N, m, k = float(steps) + 1, float(model.m), float(model.k)
    P = float(model.draws * model.groups)
    per_draw = _per_draw(N, m, k)
    per_replica = 30 * N * N * m * m + 4 * (N * m) ** 2
    return 8 * (2 * (batch * per_draw + per_replica) + P * (N * m + k + 2)
                + 4 * N * N * m * m)


def fixed_point_batch(args, model) -> int:
    """--batch, checked to divide the draws per replica, or the largest divisor <= BATCH."""
    per = model.draws
    if args.batch is not None:
        if per % args.batch:
            raise UsageError(f"--batch {args.batch} must divide the draws per replica "
                             f"(--draws / --groups = {per})")
        return args.batch
    return max(b for b in range(1, min(per, BATCH) + 1) if per % b == 0)


def check_solve_memory(args, model, copies: float = 1.0) -> None:
    if getattr(args, "method", None) == "fixed-point":
        batch = fixed_point_batch(args, model)
        check_memory(copies * fixed_point_bytes(model, args.steps, batch),
                     f"--batch {batch}, --steps {args.steps}, m = {model.m}")
        return
    check_memory(copies * solve_bytes(model, args.steps),
                 f"--draws {args.draws}, --steps {args.steps}, m = {model.m} (even one "
                 "replica at a time; --method fixed-point --batch B needs less)")


# ----------------------------------------------------------------------------- the solve
def run_solve(args, out) -> int:
    """`solve --theory nongaussian`: one solve, its arrays, a figure, the summary."""
    from ._cli_io import diverged
    from ._cli_solve import timed_solve
    from ._stepper import Euler
    check_flags(args, "solve")
    model, grid = model_from_args(args)
    if args.method != "fixed-point":
        model = with_replica_batch(model, args.steps)
    check_solve_memory(args, model)
    if args.method == "fixed-point":
        sol, t_compile, t_run = _fixed_point(args, model, grid)
    else:
        progress = bool(args.progress)
        if progress:
            print(f"dmft-jax solve: compiling the non-Gaussian DMFT ({grid.steps} steps, "
                  f"{args.draws} draws)", file=sys.stderr, flush=True)
        sol, t_compile, t_run = timed_solve(model, grid, progress, Euler())
    summary = dict(theory="nongaussian", method=args.method, dynamics="flow", steps=grid.steps,
                   dt=float(grid.dt), m=model.m, k=model.k, draws=args.draws,
                   groups=args.groups,
                   # replicas solved together (the fixed point maps them one at a time)
                   replica_batch=(1 if args.method == "fixed-point"
                                  else model.replica_batch or args.groups),
                   sampling=args.sampling, seed=args.seed, wall_time_s=round(t_run, 4),
                   compile_time_s=round(t_compile, 4))
    with np.errstate(all="ignore"):       # a diverged solve has huge values: reported below
        arrays = solution_arrays(sol)
    if args.method == "fixed-point":
        summary.update(iterations=int(arrays["fp_iterations"].max()),
                       converged=bool(arrays["fp_converged"]))
    bad = sorted(k for k, x in arrays.items() if x.dtype.kind == "f" and not np.all(np.isfinite(x)))
    # an iterate that has not converged is not a solution: say so before judging its values
    if args.method == "fixed-point" and not summary["converged"]:
        out.error_json(dict(summary, diverged=False, failed=True))
        raise SolveError(f"the fixed-point iteration did not converge: residual "
                         f"{arrays['fp_residuals'][-1]:.3g} > --tol {args.tol:g} after "
                         f"{summary['iterations']} iterations; raise --max-iter")
    if diverged(sol) or bad:
        t_bad = float(sol.divergence_time)
        unstable = int(sol.unstable_draws)
        out.error_json(dict(summary, diverged=True, divergence_time=t_bad, non_finite=bad,
                            unstable_draws=unstable))
        raise SolveError(divergence_message(model, grid, t_bad, bad, unstable))
    out.write_npz(dict(arrays, **metadata(args), params=np.asarray(out.params())))
    if out.path("plot"):
        out.write_figure(figure(arrays, _title(args, model)), "plot")
    last = {k: float(arrays[k][-1]) for k in ("e_tr", "e_tr_se", "e_ts", "e_ts_se")}
    summary = dict(last, a=[float(x) for x in arrays["a"][-1]], t=float(arrays["t"][-1]),
                   diverged=False, **summary)
    out.report(summary, f"t = {summary['t']:g}: e_tr = {last['e_tr']:.6g} +- "
                        f"{last['e_tr_se']:.2g}, e_ts = {last['e_ts']:.6g} +- "
                        f"{last['e_ts_se']:.2g} (non-Gaussian DMFT, {args.draws} draws in "
                        f"{args.groups} groups; "
                        + (f"fixed point in {summary['iterations']} iterations; "
                           if args.method == "fixed-point" else "")
                        + f"compile {t_compile:.2f} s, solve {t_run:.2f} s)")
    return 0


def _fixed_point(args, model, grid):
    """`--method fixed-point`: `dj.nongaussian_fixed_point` (spec 7.4), compiled first so that
    the run time is reported alone."""
    import time

    import jax

    from ._nongaussian_fp import _solve, prepare
    opt, batch = prepare(model, grid, tol=args.tol, max_iter=args.max_iter, damping=1.0,
                         anderson=5, window=None, batch=fixed_point_batch(args, model))
    t0 = time.perf_counter()
    compiled = _solve.lower(model, grid, opt, batch, False).compile()
    t1 = time.perf_counter()
    sol = jax.block_until_ready(compiled(model, grid, opt, batch, False))
    return sol, t1 - t0, time.perf_counter() - t1


def divergence_message(model, grid, t_bad: float, bad: list[str], unstable: int = 0) -> str:
    """One line: when the solve diverged (or which draws went unstable) and a step to try."""
    from ._cli_io import divergence_line
    a_max = float(np.max(np.abs(np.asarray(model.a0))))
    rate = float(model.alpha_bar) / model.m * max(a_max, 1e-12) ** 2 * float(model.h.d1(1.0))
    dt = float(grid.dt)
    when = (f"at t = {t_bad:.4g} (non-finite values or |C| > 1)" if np.isfinite(t_bad)
            else f"(non-finite {', '.join(bad[:4])})")
    if unstable:
        return divergence_line("the solve", 1, 1, (
            f"at t = {t_bad:.4g}: {unstable} of {model.draws * model.groups} draws went "
            f"unstable (dt lambda_max(S)/m > 2 on two consecutive steps: the explicit "
            f"per-draw step's bound, spec 7.6); the answer would be biased by them; use a "
            f"smaller --dt than {dt:g}"))
    return divergence_line("the solve", 1, 1, f"{when}: the step --dt {dt:g} may be too large "
                           f"for explicit Euler or some draws are unstable (stiffness, "
                           f"docs/nongaussian.md); try --dt {min(0.5 / rate, 0.5 * dt):.3g}")


# ----------------------------------------------------------------------------- the out file
def _mean_se(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replica mean and standard error (replica standard deviation / sqrt(groups))."""
    return x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(x.shape[0])


def _neuron_averages(rep: dict) -> dict:
    """gamma = mean_i |a_i| / sqrt(m), a_l1 = mean_i |a_i|, a_mean = mean_i a_i, v_mean =
    mean_i v_i (T, k), C_d0 = mean_i C_ii(t, 0), C_o_eq = mean_{i != j} C_ij(t, t), each with
    its replica standard error."""
    a = np.asarray(rep["a"])
    m = a.shape[-1]
    c_t0, c_tt = np.asarray(rep["C_t0"]), np.asarray(rep["C_tt"])
    off = ~np.eye(m, dtype=bool)
    per = dict(gamma=np.abs(a).mean(-1) / np.sqrt(m), a_l1=np.abs(a).mean(-1),
               a_mean=a.mean(-1), v_mean=np.asarray(rep["v"]).mean(-2),
               C_d0=np.diagonal(c_t0, axis1=-2, axis2=-1).mean(-1),
               C_o_eq=(c_tt[..., off].mean(-1) if m > 1 else np.zeros(c_tt.shape[:-2])))
    out = {}
    for name, x in per.items():
        out[name], out[name + "_se"] = _mean_se(x)
    return out


#: Observables of `NonGaussianSolution` with a standard error `<name>_se`.
SE_NAMES = ("a", "v", "nu", "e_tr", "e_ts", "C_t0", "C_tt", "nu_k2")


def solution_arrays(sol) -> dict[str, np.ndarray]:
    """The arrays of `solve --theory nongaussian --out` (documented in the README): the
    general solve's t, a, v, nu, e_tr, e_ts, gamma, C_A, C, R (rho and R_A do not exist in this
    theory and are left out), C_t0, C_tt, `<name>_se`, the neuron averages and diagnostics."""
    out = dict(t=sol.t, a=sol.a, v=sol.v, nu=sol.nu, e_tr=sol.e_tr, e_ts=sol.e_ts,
               C_A=sol.C_A, C=np.moveaxis(np.asarray(sol.C), (0, 1), (2, 3)),
               R=np.moveaxis(np.asarray(sol.R), (0, 1), (2, 3)), C_t0=sol.C_t0, C_tt=sol.C_tt,
               nu_gap=np.abs(np.asarray(sol.nu_k2) - np.asarray(sol.nu)),
               clipped=sol.clipped, sampling_mismatch=sol.sampling_mismatch,
               stiffness=sol.stiffness,
               stiff_fraction=np.asarray(sol.stiff_fraction, np.float64))
    out.update({f"{n}_se": getattr(sol, f"{n}_se") for n in SE_NAMES}, nu_k2=sol.nu_k2)
    out.update(_neuron_averages({k: np.asarray(v) for k, v in sol.replicas.items()}))
    if getattr(sol, "iterations", None) is not None:           # --method fixed-point
        from ._results import RESULTS
        its = np.asarray(sol.iterations).reshape(-1)
        res = np.array(sol.residuals).reshape(its.shape[0], -1)[:, :max(int(its.max()), 1)]
        for row, n in zip(res, its):        # a finished replica keeps its last residual
            row[max(int(n), 1):] = row[max(int(n), 1) - 1]
        out.update(fp_iterations=its, fp_residuals=np.max(res, axis=0),
                   fp_converged=np.asarray(sol.result != RESULTS.not_converged))
    return {key: np.asarray(val) for key, val in out.items()}


def metadata(args) -> dict:
    """The scalar entries that identify a non-Gaussian out file."""
    return dict(theory=np.asarray("nongaussian"), dynamics=np.asarray("flow"),
                method=np.asarray(args.method), draws=np.asarray(args.draws),
                groups=np.asarray(args.groups), seed=np.asarray(args.seed),
                sampling=np.asarray(getattr(args, "sampling", "factor")))


def figure(arrays: dict, title: str = ""):
    """e_tr and e_ts with +-1 standard-error bands, a(t), C_ii(t, 0)."""
    from ._plot import new_figure
    t = arrays["t"]
    fig, ax = new_figure(1, 3, (14, 4))
    for name, label in (("e_tr", "train $e_{tr}$"), ("e_ts", "test $e_{ts}$")):
        x, se = arrays[name], arrays[name + "_se"]
        line, = ax[0, 0].plot(t, x, label=label)
        ax[0, 0].fill_between(t, x - se, x + se, color=line.get_color(), alpha=0.3, lw=0)
    ax[0, 0].set(xlabel="t", ylabel="error", title="errors (+-1 standard error)")
    ax[0, 0].legend()
    m = arrays["a"].shape[-1]
    for i in range(min(m, 6)):
        x, se = arrays["a"][:, i], arrays["a_se"][:, i]
        line, = ax[0, 1].plot(t, x, lw=1.5, label=f"$a_{{{i + 1}}}$")
        ax[0, 1].fill_between(t, x - se, x + se, color=line.get_color(), alpha=0.3, lw=0)
        c, cse = arrays["C_t0"][:, i, i], arrays["C_t0_se"][:, i, i]
        line, = ax[0, 2].plot(t, c, lw=1.5, label=f"$C_{{{i + 1}{i + 1}}}(t, 0)$")
        ax[0, 2].fill_between(t, c - cse, c + cse, color=line.get_color(), alpha=0.3, lw=0)
    ax[0, 1].set(xlabel="t", ylabel="a(t)", title="second layer")
    ax[0, 2].set(xlabel="t", title="correlations C(t, 0)")
    ax[0, 2].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _title(args, model) -> str:
    return (f"non-Gaussian DMFT: m={model.m}, alpha={args.alpha}, tau={args.tau}, "
            f"{args.draws} draws, seed {args.seed}")


# ------------------------------------------------------------------------------- compare
def is_nongaussian(path: str) -> bool:
    """True for a `solve --theory nongaussian` file (its `theory` entry)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            if "theory.npy" not in archive.namelist():
                return False
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False
    from ._cli_args import ArraySpec, read_npz
    value = str(read_npz("", path, {"theory": ArraySpec("text", 0)})["theory"])
    if value not in THEORIES:
        raise UsageError(f"{path!r}: unknown theory {value!r} (gaussian or nongaussian)")
    return value == "nongaussian"


#: compare's observable names -> the (line, standard error) arrays of a non-Gaussian file.
COMPARE_LINES = dict(e_tr="e_tr", e_ts="e_ts", a="a_mean", gamma="gamma", a_l1="a_l1",
                     v="v_mean", C_d0="C_d0", C_o="C_o_eq")


def compare_series(path: str, names) -> list[dict]:
    """A non-Gaussian solve file as one `compare` series: lines with +-se bands (`se`)."""
    import os

    from ._cli_args import ArraySpec, read_npz
    wanted = [COMPARE_LINES[n] for n in names if n in COMPARE_LINES]
    spec = {"t": ArraySpec("real", 1), **{k: ArraySpec("real") for k in wanted},
            **{k + "_se": ArraySpec("real") for k in wanted}}
    data = read_npz("", path, spec)
    T = data["t"].shape[0]
    for key, arr in data.items():
        if arr.ndim < 1 or arr.shape[0] != T:
            raise UsageError(f"{path!r}: array {key!r} has shape {arr.shape}, which does not "
                             f"match t ({T} times)")
    first = {k: (x if x.ndim == 1 else x.reshape(T, -1)[:, 0]) for k, x in data.items()}
    lines = {n: first[COMPARE_LINES[n]] for n in names if n in COMPARE_LINES}
    bands = {n: first[COMPARE_LINES[n] + "_se"] for n in lines}
    return [dict(label=f"{os.path.basename(path)} non-Gaussian DMFT", t=data["t"], exp=None,
                 diverged=None, dmft=lines, se=bands, dmft_diverged=False, dynamics="flow",
                 dmft_step=None)]
