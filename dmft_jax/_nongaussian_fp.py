"""The non-Gaussian DMFT by fixed-point iteration over whole trajectories (spec nongaussian.md
section 7.4, Option B), memory-light: the per-draw response tensors J live only for one batch of
draws at a time.

One iteration maps an iterate X = (a, C, R, v) on the whole grid to a new one, G(X):

1. the causal factor of the Gaussian paths xi ~ GP(v r0, C - v v^T) from C and v
   (`factor_row`, row after row: the same factor as the causal pass's);
2. the sample side (spec 7.2: K.4, K.5, K.9, K.13, K.14) of every draw along the whole
   trajectory with R and a, one batch of draws at a time (`lax.map`), accumulating the kernels
   M^delta, M, M*, C^E, da/dt (K.1, K.6-K.8') as batch means; a batch's J (B N^2 m^2 numbers)
   is dropped when its kernels are summed;
3. the weight side (W1-W5, the Gaussian DMFT's `weight_terms`/`weight_row`/`weight_write`)
   integrated with these kernels on the same loop (`dmft_jax._integrate`).

The draws are common random numbers (fixed whitened normals), so G is deterministic. Because
the system is causal on the grid, row n of G(X) depends on X only through its rows < n: plain
iteration (damping 1, no Anderson) reaches the fixed point in at most N + 1 iterations, and the
fixed point is exactly the causal pass's solution with the same draws (tested). Damping and
Anderson acceleration (type II, Walker & Ni 2011) reduce the number of iterations; time
windows ("converge on [0, T1], then extend") apply the acceleration to the leading rows only,
while the rows beyond the window follow plain iteration.

Starting guess: the Gaussian DMFT with the same h, target and initialization (spec 7.4), exact
for linear sigma up to Monte Carlo error.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from ._algebra import General
from ._dmft import DMFT, Kernels, weight_row, weight_terms, weight_write
from ._grid import TimeGrid
from ._integrate import AbstractModel, _finish, _fixed, chunk_bounds
from ._nongaussian import (
    NonGaussianDMFT,
    NonGaussianSolution,
    aggregates,
    factor_row,
    path_row,
    shard_draws,
    y_zeros,
)
from ._results import RESULTS
from ._stepper import Euler, Row, RowWeights

_KERNELS = ("k_delta", "k_memory", "k_jump", "k_noise", "k_force", "k_da")
_KERNEL_AXES = dict(k_delta=1, k_memory=2, k_jump=1, k_noise=2, k_force=1, k_da=1)
_WEIGHTS = ("a", "v", "C", "R")
_WEIGHT_AXES = dict(a=1, v=1, C=2, R=2)


def _kernels_at(s, n) -> Kernels:
    return Kernels(delta=s["k_delta"][..., n], memory=s["k_memory"][..., n, :],
                   memory_jump=s["k_jump"][..., n], noise=s["k_noise"][..., n, :],
                   force=s["k_force"][..., n], d_a=s["k_da"][..., n])


class _Sweep(AbstractModel):
    """The sample side of one batch of draws along a whole trajectory, for a fixed iterate
    (a, v, C, R) and path factor Lf: row n computes the paths' row, then K.4-K.14 and the
    kernels of row n (`NonGaussianDMFT._sample_side`), and stores the kernels. Nothing
    advances (the weight side is not solved here); it runs on `dmft_jax._integrate`'s loop."""

    core: NonGaussianDMFT
    fixed: dict        # a, v, C, R (the iterate) and Lf (its path factor), time axes last
    draws: dict        # z (B, m, L), r0 (B, k), y (B,), dphi (B, k)

    def init(self, size: int) -> dict:
        m, k, dtype = self.core.m, self.core.k, self.core.dtype
        B = self.draws["y"].shape[0]
        zeros = jnp.zeros
        per_draw = shard_draws(dict(   # a batch's draws split across devices, when several
            self.draws,
            xi=zeros((B, m, size), dtype), F=zeros((B, m, size), dtype),
            g=zeros((B, m, size), dtype), E=zeros((B, size), dtype),
            lam=zeros((B, size), dtype), S=zeros((B, m, m, size), dtype),
            K=zeros((B, m, k, size), dtype), Y=y_zeros(B, m, size, dtype)))
        return dict(
            self.fixed, **per_draw, e_tr=zeros((size,), dtype), nu_k2=zeros((m, size), dtype),
            k_delta=zeros((m, m, size), dtype), k_memory=zeros((m, m, size, size), dtype),
            k_jump=zeros((m, m, size), dtype), k_noise=zeros((m, m, size, size), dtype),
            k_force=zeros((m, k, size), dtype), k_da=zeros((m, size), dtype))

    def time_axes(self):
        axes = dict(_WEIGHT_AXES, Lf=2, z=1, r0=0, y=0, dphi=0, xi=1, F=1, g=1, E=1, lam=1,
                    S=1, K=1, Y=1, e_tr=1, nu_k2=1)
        return dict(axes, **_KERNEL_AXES)

    def advancing(self):
        return frozenset()

    def default_chunks(self, steps: int) -> int | None:
        return self.core.default_chunks(steps)

    def row(self, n, s, wts: RowWeights):
        xi_n = path_row(n, s["Lf"][:, :, n, :], s["z"], s["r0"], s["v"])
        s = dict(s, xi=s["xi"].at[..., n].set(xi_n))
        s, k = self.core._sample_side(n, s, wts, xi_n)
        s = dict(s, k_delta=s["k_delta"].at[..., n].set(k.delta),
                 k_memory=s["k_memory"].at[..., n, :].set(k.memory),
                 k_jump=s["k_jump"].at[..., n].set(k.memory_jump),
                 k_noise=s["k_noise"].at[..., n, :].set(k.noise),
                 k_force=s["k_force"].at[..., n].set(k.force),
                 k_da=s["k_da"].at[..., n].set(k.d_a))
        return s, Row({}, {}, {}, None)

    def write(self, n, s, front):
        del n, front
        return s

    def solution(self, state, ts, records=None):
        del ts, records
        return state


class _WeightSide(AbstractModel):
    """The weight side (W1-W5) of the non-Gaussian DMFT with given kernels (one replica): the
    Gaussian DMFT's equations in the `General(m)` algebra, kernels read from the state."""

    core: NonGaussianDMFT
    kernels: dict

    def init(self, size: int) -> dict:
        m, k, dtype, alg = self.core.m, self.core.k, self.core.dtype, self.core.algebra
        c0 = jnp.zeros((m, m, size), dtype).at[..., 0].set(self.core.c0)
        return dict(
            self.kernels,
            a=jnp.zeros((m, size), dtype).at[:, 0].set(self.core.a0),
            v=jnp.zeros((m, k, size), dtype).at[..., 0].set(self.core.v0),
            C=alg.history_set(alg.history_zeros(size, dtype), 0, c0, True),
            R=alg.history_zeros(size, dtype), nu=jnp.zeros((m, size), dtype),
            rho=jnp.zeros((size,), dtype))

    def time_axes(self):
        return dict(_WEIGHT_AXES, nu=1, rho=1, **_KERNEL_AXES)

    def advancing(self):
        return frozenset(_WEIGHTS)

    def row(self, n, s, wts: RowWeights):
        alg = self.core.algebra
        s, x = weight_terms(alg, n, s, wts, _kernels_at(s, n))
        return s, weight_row(alg, n, s, wts, x)._replace(stiff=None)

    def write(self, n, s, front):
        return weight_write(self.core.algebra, n, s, front)

    def solution(self, state, ts, records=None):
        del ts, records
        return state


def _path_factor(core: NonGaussianDMFT, C, v):
    """The causal path factor of a whole trajectory (`factor_row` for n = 0 .. L - 1), in
    causal chunks (row n only reads the leading (n + 1) block). Returns Lf (m, m, L, L) and
    the per-row clipped mass and mismatch (L,)."""
    m, size = core.m, C.shape[-1]
    Lf = jnp.zeros((m, m, size, size), C.dtype)
    clipped = jnp.zeros((size,), C.dtype)
    mismatch = jnp.zeros((size,), C.dtype)
    for lo, hi in chunk_bounds(size, None if size < 64 else 4):
        c, vv = C[..., :hi, :hi], v[..., :hi]

        def body(n, carry, c=c, vv=vv):
            lf, cl, mm = carry
            row, cn, mn = factor_row(n, lf, c, vv, core.rtol)
            return lf.at[:, :, n, :].set(row), cl.at[n].set(cn), mm.at[n].set(mn)

        lf, clipped, mismatch = jax.lax.fori_loop(lo, hi, body,
                                                  (Lf[..., :hi, :hi], clipped, mismatch))
        Lf = Lf.at[..., :hi, :hi].set(lf)
    return Lf, clipped, mismatch


def _map(core: NonGaussianDMFT, grid: TimeGrid, x: dict, draws: dict):
    """One evaluation of the iteration map for one replica: G(x) and what the solution needs.
    `draws` has a leading batch axis (nb, B, ...)."""
    Lf, clipped, mismatch = _path_factor(core, x["C"], x["v"])
    fixed = dict(x, Lf=Lf)
    dt = jnp.concatenate([jnp.diff(grid.ts), jnp.zeros((1,), grid.ts.dtype)])

    def batch(d):
        s = _fixed(_Sweep(core=core, fixed=fixed, draws=d), grid, Euler(), False, "", None)
        return ({key: s[key] for key in _KERNELS + ("e_tr", "nu_k2")},
                aggregates(s, dt, not core.implicit))

    sums, agg = jax.lax.map(batch, draws)
    lam_max = jnp.max(agg.pop("lam_max"), axis=0)
    kernels = {key: jnp.mean(val, axis=0) for key, val in sums.items()}
    agg = dict({key: jnp.mean(val, axis=0) for key, val in agg.items()}, lam_max=lam_max)
    diag = dict(e_tr=kernels.pop("e_tr"), nu_k2=kernels.pop("nu_k2"), clipped=clipped,
                mismatch=mismatch)
    w = _fixed(_WeightSide(core=core, kernels=kernels), grid, Euler(), False, "", None)
    return {key: w[key] for key in _WEIGHTS}, dict(diag, nu=w["nu"]), agg


def _start(core: NonGaussianDMFT, grid: TimeGrid) -> dict:
    """The starting iterate: the Gaussian DMFT (General(m), Euler, same grid) with the
    activation's h and the target's phihat; the initial condition held constant where it is
    not finite."""
    gauss = DMFT(algebra=General(core.m), h=core.h, target=core.target, tau=core.tau,
                 alpha_bar=core.alpha_bar, a0=core.a0, c0=core.c0, v0=core.v0,
                 freeze_a=core.freeze_a)
    s = _fixed(gauss, grid, Euler(), False, "", None)
    x = {key: s[key] for key in _WEIGHTS}
    flat = _WeightSide(core=core, kernels={}).init(grid.size)
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in x.values()]))
    held = dict(flat, a=jnp.broadcast_to(core.a0[:, None], flat["a"].shape),
                v=jnp.broadcast_to(core.v0[..., None], flat["v"].shape))
    return {key: jnp.where(ok, x[key], held[key]) for key in _WEIGHTS}


def _window_mask(x: dict, end) -> dict:
    """True on the entries of rows < end (both time indices for C and R)."""
    out = {}
    for key, val in x.items():
        t = jnp.arange(val.shape[-1]) < end
        out[key] = jnp.broadcast_to(t[:, None] & t[None, :] if _WEIGHT_AXES[key] == 2 else t,
                                    val.shape)
    return out


class _Options(eqx.Module):
    tol: Array
    damping: Array
    max_iter: int = eqx.field(static=True)
    anderson: int = eqx.field(static=True)
    window: int = eqx.field(static=True)


def _iterate(core: NonGaussianDMFT, grid: TimeGrid, opt: _Options, draws: dict):
    """The fixed-point iteration of one replica (a `lax.while_loop`). Returns the last map's
    weight side, diagnostics and aggregates, the iteration count, the residuals and a flag
    (0 converged, 1 not converged, 2 non-finite)."""
    x0 = _start(core, grid)
    vec0, unravel = ravel_pytree(x0)
    D, mA, size = vec0.shape[0], max(opt.anderson, 1), grid.size
    out0 = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                  jax.eval_shape(lambda: _map(core, grid, x0, draws)))

    def masked(vec, end):
        return jnp.where(ravel_pytree(_window_mask(unravel(vec), end))[0], vec, 0.0)

    def body(c):
        g, diag, agg = _map(core, grid, unravel(c["x"]), draws)
        gv = ravel_pytree(g)[0]
        f = masked(gv - c["x"], c["end"])
        res = jnp.max(jnp.abs(f))
        # Anderson (type II): history of differences of f and g since the last reset
        fresh = c["count"] > 0
        slot = (c["count"] - 1) % mA
        dF = jnp.where(fresh, c["dF"].at[slot].set(f - c["f"]), c["dF"])
        dG = jnp.where(fresh, c["dG"].at[slot].set(gv - c["g"]), c["dG"])
        valid = (jnp.arange(mA) < jnp.minimum(c["count"], mA)) & (opt.anderson > 0)
        M = dF @ dF.T
        reg = 1e-12 * (jnp.trace(M) + 1e-300)
        M = jnp.where(valid[:, None] & valid[None, :], M, 0.0) + jnp.diag(
            jnp.where(valid, reg, 1.0))
        gamma = jnp.where(valid, jnp.linalg.solve(M, jnp.where(valid, dF @ f, 0.0)), 0.0)
        x_acc = gv - gamma @ dG - (1.0 - opt.damping) * (f - gamma @ dF)
        x_acc = jnp.where(jnp.all(jnp.isfinite(x_acc)), x_acc, c["x"] + opt.damping * f)
        inside = ravel_pytree(_window_mask(g, c["end"]))[0]
        x_new = jnp.where(inside, x_acc, gv)
        finite = jnp.isfinite(res)
        window_done = finite & (res < opt.tol)
        done = (window_done & (c["end"] >= size)) | ~finite
        end = jnp.where(window_done, jnp.minimum(c["end"] + opt.window, size), c["end"])
        count = jnp.where(window_done, 0, c["count"] + 1)
        return dict(x=jnp.where(window_done, gv, x_new), f=f, g=gv, dF=dF, dG=dG,
                    count=count, end=end, k=c["k"] + 1,
                    res=c["res"].at[c["k"]].set(res), done=done, finite=finite,
                    out=(g, diag, agg))

    carry = dict(x=vec0, f=jnp.zeros((D,), vec0.dtype), g=jnp.zeros((D,), vec0.dtype),
                 dF=jnp.zeros((mA, D), vec0.dtype), dG=jnp.zeros((mA, D), vec0.dtype),
                 count=jnp.asarray(0), end=jnp.asarray(min(opt.window, size)),
                 k=jnp.asarray(0), res=jnp.full((opt.max_iter,), jnp.nan, vec0.dtype),
                 done=jnp.asarray(False), finite=jnp.asarray(True), out=out0)
    c = jax.lax.while_loop(lambda c: ~c["done"] & (c["k"] < opt.max_iter), body, carry)
    flag = jnp.where(~c["finite"], 2, jnp.where(c["done"], 0, 1))
    g, diag, agg = c["out"]
    return g, diag, agg, c["k"], c["res"], flag


def _batches(core: NonGaussianDMFT, size: int, batch: int) -> dict:
    """The draws of every replica (`NonGaussianDMFT.draws_of`: the causal pass's draws), split
    into batches: leading axes (groups, draws / batch, batch)."""
    d = core.draws_of(size)
    G, P = core.groups, core.draws
    return {key: val.reshape((G, P // batch, batch) + val.shape[2:]) for key, val in d.items()}


@eqx.filter_jit
def _solve(core: NonGaussianDMFT, grid: TimeGrid, opt: _Options, batch: int, throw: bool):
    draws = _batches(core, grid.size, batch)

    def replica(d):
        return _iterate(core, grid, opt, d)

    g, diag, agg, its, res, flag = jax.lax.map(replica, draws)
    s = dict(g, **diag)
    sol = core.solution_from(s, agg, grid.ts, iterations=its, residuals=res)
    result = RESULTS.where(core.valid() & grid.valid(), RESULTS.successful,
                           RESULTS.invalid_input)
    result = RESULTS.where((result == RESULTS.successful) & jnp.any(flag == 2),
                           RESULTS.diverged, result)
    result = RESULTS.where((result == RESULTS.successful) & jnp.any(flag == 1),
                           RESULTS.not_converged, result)
    result = RESULTS.where((result == RESULTS.successful) & sol.diverged, RESULTS.diverged,
                           result)
    stats = dict(accepted=jnp.asarray(grid.steps), rejected=jnp.asarray(0),
                 stored=jnp.asarray(grid.size), decimations=jnp.asarray(0),
                 decimation_error=jnp.zeros(()))
    return _finish(sol, result, stats, throw)


def nongaussian_fixed_point(model: NonGaussianDMFT, grid: TimeGrid, *, tol: float = 1e-4,
                            max_iter: int = 50, damping: float = 1.0, anderson: int = 5,
                            window: int | None = None, batch: int | None = None,
                            throw: bool = True) -> NonGaussianSolution:
    """Solve the non-Gaussian DMFT `model` on the uniform `grid` by fixed-point iteration over
    whole trajectories (spec 7.4), each replica on its own, draws in batches (see the module
    docstring). The draws are those of the causal pass (`dj.solve(model, grid)`), and the fixed
    point is its solution.

    **Arguments:**

    - `tol`: stop when max |G(X) - X| over a, v, C, R on the current window is below `tol`
      (and the window covers the grid).
    - `max_iter`: most map evaluations per replica; beyond it the result is
      `RESULTS.not_converged` (raised when `throw`).
    - `damping` in (0, 1]: X <- X + damping (G(X) - X) (mixed into Anderson's update).
    - `anderson`: number of past differences in Anderson acceleration (0: plain damped
      iteration).
    - `window`: rows per time window (default: the whole grid): iterate with acceleration on
      rows < T1 until converged there, then extend by `window` rows.
    - `batch`: draws per batch (default: a replica's draws, `model.draws`); must divide
      `model.draws`. Memory of the sample side ~ 8 batch L^2 m^2 bytes (J) per batch.
    - `throw`: raise when the result is not successful (use False under `vmap`).

    Returns a `NonGaussianSolution` with `iterations` (groups,) (map evaluations per replica)
    and `residuals` (groups, max_iter) (the window residual after each, NaN beyond).
    """
    sol = _solve(model, grid, *prepare(model, grid, tol=tol, max_iter=max_iter, damping=damping,
                                       anderson=anderson, window=window, batch=batch), False)
    if throw:       # outside the compiled solve, so that `throw` does not recompile it
        sol = sol.result.error_if(sol, sol.result != RESULTS.successful)
    return sol


def prepare(model, grid, *, tol, max_iter, damping, anderson, window, batch):
    """Validate the options of `nongaussian_fixed_point` (ValueError) and return the arguments
    (options, batch) of the compiled solve `_solve(model, grid, options, batch, throw)` (the
    command line compiles it separately to time the run alone)."""
    if not isinstance(model, NonGaussianDMFT):
        raise ValueError(f"model must be a dj.NonGaussianDMFT, got {type(model).__name__}")
    if not isinstance(grid, TimeGrid):
        raise ValueError("the fixed-point iteration runs on a uniform dj.TimeGrid")
    if model.symmetric:
        raise ValueError("the fixed-point iteration runs the weight side in the general "
                         "algebra: build the model with symmetric=False (exchangeable=True "
                         "averages the kernels the same way)")
    if model.paths:
        raise ValueError("the fixed-point iteration samples its paths from a factor of the "
                         "iterate's C, v: build the model with paths=False (the path-wise "
                         "weight side is the causal pass's)")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be positive and finite, got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    if int(anderson) != anderson or anderson < 0:
        raise ValueError(f"anderson must be a non-negative integer, got {anderson}")
    window = grid.size if window is None else window
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive number of rows, got {window}")
    batch = model.draws if batch is None else batch
    if int(batch) != batch or batch < 1 or model.draws % batch:
        raise ValueError(f"batch must divide the draws per replica ({model.draws}), got {batch}")
    opt = _Options(tol=jnp.asarray(tol, model.dtype), damping=jnp.asarray(damping, model.dtype),
                   max_iter=int(max_iter), anderson=int(anderson), window=int(window))
    return opt, int(batch)
