"""The one time-stepping loop that every DMFT variant plugs into.

A *model* (`AbstractModel`) says what is solved: given the history up to row n and the
quadrature weights of that row, it computes the row's auxiliary quantities (response
functions, memory kernels, ...) and returns the values that advance with their time
derivative (`dmft_jax._stepper.Row`). A *stepper* says how they advance (`Euler`,
`Trapezoid`, `Map`); *when* is a fixed `TimeGrid` or an adaptive controller (`Adaptive`).
`integrate` owns the loop: row after row, causally, with the history kept in preallocated
buffers written in place.

Fixed grids run as `lax.fori_loop`s in causal chunks (reverse mode works; see
`dmft_jax._adjoint`). Adaptive solves run a `lax.while_loop` that accepts or rejects steps from
the stepper's error estimate, records the one-time observables at every accepted step, and keeps
at most `history` stored times for the two-time functions: when the history is full, every
other point of its older half is dropped (Kim-Latz decimation, see `Adaptive`).
"""

from __future__ import annotations

import abc
import sys
import time
from typing import Any, Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike

from ._grid import TimeGrid
from ._results import RESULTS
from ._stepper import AbstractStepper, Euler, Map, RowWeights, Trapezoid, error_norm


class AbstractModel(eqx.Module):
    """The equations of one DMFT variant, as the causal update of one time row.

    The state is a dict of buffers whose trailing axes are time (`time_axes`): advancing
    buffers (`advancing()`, written by `write` one row ahead) and auxiliary ones (written by
    `row`). Row 0 of the advancing buffers is the initial condition.
    """

    @abc.abstractmethod
    def init(self, size: int) -> dict:
        """The history buffers over `size` times, with row 0 (the initial condition) written."""

    @abc.abstractmethod
    def row(self, n, state: dict, weights: RowWeights):
        """Complete row n: return `(state, Row)` with the auxiliaries of row n written.

        `weights` are the quadrature weights of row n (`dmft_jax._stepper.RowWeights`); the
        model never sees a step size.
        """

    @abc.abstractmethod
    def write(self, n, state: dict, front) -> dict:
        """Write an advanced front as row n of the advancing buffers."""

    @abc.abstractmethod
    def advancing(self) -> frozenset:
        """Keys of the buffers written by `write`; the others are auxiliaries of `row`."""

    @abc.abstractmethod
    def time_axes(self) -> dict[str, int]:
        """For each key of the state, how many trailing axes of its arrays are time."""

    @abc.abstractmethod
    def solution(self, state: dict, ts: Array, records: dict | None = None):
        """The typed result: two-time arrays on the stored times `ts`, one-time arrays on
        `records["t"]` (every accepted step of an adaptive solve) or on `ts` when
        `records` is None."""

    def mask(self, n, tree):
        """A front or rate pytree restricted to the layout of row n (entries of two-time rows
        beyond column n zeroed). The corrector of `Trapezoid` evaluates row n + 1's rates and
        combines them with row n's front. Default: unchanged (no two-time rows)."""
        del n
        return tree

    #: True for exact discrete-time recursions (`next` instead of rates; `Map` stepper).
    discrete: ClassVar[bool] = False

    def default_chunks(self, steps: int) -> int | None:
        """Causal chunks of a fixed-grid solve when the caller gives none (None: the default
        of `chunk_bounds`). Models whose run time dominates their compile time at small N
        (Monte Carlo over many draws) ask for more."""
        del steps
        return None

    def records(self, n, state: dict) -> dict:
        """One-time observables of row n (after `row(n)`), recorded at every accepted step of an
        adaptive solve. Default: none."""
        del n, state
        return {}

    def valid(self) -> Array:
        """True if the (possibly traced) parameters are in range; checked by the solver, which
        reports `RESULTS.invalid_input` otherwise. Default: always valid."""
        return jnp.asarray(True)

    def aux_error(self, n, state: dict):
        """`(error, value)`: the estimated quadrature error of an auxiliary of row n and the
        auxiliary itself, which the adaptive step-size control bounds next to the advancing
        quantities; None for none. Default: the models of the DMFT family that keep the
        buffer `ca_error` (`dmft_jax._volterra.diagonal_error`: C_A(t_n, t_n), i.e. the train
        error [C.24]); None otherwise."""
        if "ca_error" not in state:
            return None
        return state["ca_error"][n], state["C_A"][n, n]

    def divergence(self, n, state: dict) -> Array:
        """True if row n shows divergence (the rule of `dmft_jax._results`). Default: never."""
        del n, state
        return jnp.asarray(False)

    def interval_corrections(self) -> dict[str, str]:
        """Two-time buffers whose integrals survive history decimation exactly: a map from the
        key of a correction buffer to the key of the two-time function it corrects. Default:
        none.

        A response X(s, s') (R, and Sigma_R, which carries R) falls from its jump X(s'^+, s')
        over a time ~1/m after its column starts (and likewise in its second argument), so the
        trapezoid over an interval merged by decimation misses the integral the finer grid had
        resolved. An adaptive solve with a bounded history then keeps, for every stored interval
        [t_j, t_{j+1}] and stored time t_k, the pair (d1, d2) of corrections

            d1[j, k] = int_{t_j}^{t_{j+1}} X(s, t_k) ds - trapezoid,
            d2[k, j] = int_{t_j}^{t_{j+1}} X(t_k, s) ds - trapezoid,

        zero until the first decimation and summed exactly when intervals merge
        (`merge_intervals`): the integral of the finest grid the solve ever had. The model adds
        sum_j Kbar_j d[j, k] (`dmft_jax._volterra.Merged`: the kernel's interval mean, or for a
        response its value at the diagonal end of the interval next to the diagonal) to
        each integral over X when its state holds the correction key (`<key>_int`;
        `dmft_jax._volterra.merged`). An adaptive solve adds them to the state
        when its history can fill up (history <= max_steps).
        """
        return {}

    def masses(self) -> frozenset:
        """Keys of two-time buffers that hold quadrature masses along their last axis (point
        values along the first): M[k, l] the mass at t_l of a measure indexed by t_k (the DMFT's
        R_A(t_k, .), `dmft_jax._volterra.response_rows`). History decimation moves the mass of
        a dropped time to its kept neighbours by linear interpolation, which keeps the total
        mass and the first moment (`move_masses`). Default: none."""
        return frozenset()

    def unread_history(self) -> frozenset:
        """Keys of one-time buffers whose values at past times no later row reads (diagnostics
        such as nu(t)): history decimation need not keep them interpolable. Default: none."""
        return frozenset()

    def interval_jumps(self, state: dict) -> dict:
        """For each corrected key (`interval_corrections`): the jump values X(t_k^+, t_k) =
        X(t_k, t_k^-) over the stored times, a pytree matching the buffer's leaves with shape
        (..., L) (the stored diagonal X(t_k, t_k) is zero); None for a symmetric function
        (C: continuous across the diagonal, corrected on every interval)."""
        del state
        return {}

    # ------------------------------------------------------------------- generic buffer ops
    def run_fixed(self, loop: Callable[["AbstractModel"], dict]) -> dict:
        """The final state of a fixed-grid solve: `loop(model)`, the shared loop. A model whose
        state holds independent replicas may call it on groups of them one after another and
        join the results (the non-Gaussian DMFT, to bound its memory); the default calls it
        once."""
        return loop(self)

    def window(self, state: dict, size: int) -> dict:
        """The leading `size` x `size` time block of every buffer of `time_axes()` (a copy).
        The interval corrections stay out: a window runs while the history has room, before
        any decimation, when they are zero (and the window's program leaves their products
        out)."""
        def cut(x, k):
            return x[(Ellipsis,) + (slice(0, size),) * k]
        return {key: jtu.tree_map(lambda x: cut(x, k), state[key])
                for key, k in self.time_axes().items()}

    def unwindow(self, state: dict, small: dict) -> dict:
        """Write a window back into the full buffers (the others as they were)."""
        def put(x, y, k):
            return x.at[(Ellipsis,) + (slice(0, y.shape[-1]),) * k].set(y)
        return dict(state, **{key: jtu.tree_map(lambda x, y: put(x, y, k), state[key], small[key])
                              for key, k in self.time_axes().items()})

    def clear_aux(self, n, state: dict) -> dict:
        """Zero index n of every auxiliary buffer along all its time axes (what `row(n)`
        wrote): O(L) writes, in place."""
        out = dict(state)
        adv = self.advancing()
        for key, k in self.time_axes().items():
            if key in adv:
                continue
            out[key] = jtu.tree_map(lambda x, k=k: clear_index(x, k, n), state[key])
        return out

    def select_times(self, state: dict, keep: Array, ts: Array | None = None) -> dict:
        """Every buffer restricted to the stored times `keep` (indices, static count) along
        all time axes, zero-padded back to its length (history decimation). The interval
        corrections in `state` (`interval_corrections`), if any, are merged
        (`merge_intervals`; this needs the stored times `ts` before the decimation)."""
        merged = {}
        corrections = {ck: key for ck, key in self.interval_corrections().items() if ck in state}
        all_jumps = self.interval_jumps(state) if corrections else {}
        for ck, key in corrections.items():
            leaves, tree = jtu.tree_flatten(state[key])
            jumps = all_jumps[key]
            jumps = [None] * len(leaves) if jumps is None else jtu.tree_leaves(jumps)
            parts = [merge_intervals(x, j, d1, d2, ts, keep) for x, j, d1, d2 in
                     zip(leaves, jumps, jtu.tree_leaves(state[ck][0]),
                         jtu.tree_leaves(state[ck][1]))]
            merged[ck] = (jtu.tree_unflatten(tree, [p[0] for p in parts]),
                          jtu.tree_unflatten(tree, [p[1] for p in parts]))
        def take(x, k):
            for axis in range(x.ndim - k, x.ndim):
                size = x.shape[axis]
                x = jnp.take(x, keep, axis=axis)
                pad = [(0, 0)] * x.ndim
                pad[axis] = (0, size - keep.shape[0])
                x = jnp.pad(x, pad)
            return x
        moved = {key: move_masses(state[key], ts, keep) for key in self.masses()}
        out = {key: jtu.tree_map(lambda x, k=k: take(x, k), moved.get(key, state[key]))
               for key, k in self.time_axes().items()}
        return dict(out, **merged)


def move_masses(x: Array, ts: Array, keep: Array) -> Array:
    """Masses along the last axis of `x` with every time not in `keep` given to its kept
    neighbours by linear interpolation (its mass times (t_b - t_p)/(t_b - t_a) to t_a, the
    rest to t_b): the integral of any linear function is kept. Kept columns stay in place (the
    caller selects them); at most one dropped time between two kept ones."""
    size = ts.shape[0]
    a = keep
    b = jnp.concatenate([keep[1:], keep[-1:]])
    before = jnp.concatenate([keep[:1], keep[:-1]])
    after = (b - a) == 2
    prior = (a - before) == 2
    p, q = jnp.minimum(a + 1, size - 1), jnp.maximum(a - 1, 0)
    safe = lambda d: jnp.where(d > 0, d, 1.0)                       # noqa: E731
    to_left = jnp.where(after, (ts[b] - ts[p]) / safe(ts[b] - ts[a]), 0.0)
    to_right = jnp.where(prior, (ts[q] - ts[before]) / safe(ts[a] - ts[before]), 0.0)
    new = x[..., a] + to_left * x[..., p] + to_right * x[..., q]
    return x.at[..., a].set(new)


def merge_intervals(x: Array, jump: Array | None, d1: Array, d2: Array, ts: Array,
                    keep: Array):
    """Interval corrections (`AbstractModel.interval_corrections`) of the two-time function
    `x` (..., L, L) after the history keeps only the times `keep` (at most one dropped time
    between two kept ones): `(d1, d2)` on the kept grid, zero-padded to L.

    A response (`jump` given) vanishes for s < s' (causal), its stored diagonal is zero and
    its jump values stand at both ends, x(t_k^+, t_k) = x(t_k, t_k^-) = jump[k]. A symmetric
    function (C; `jump` None) counts on every interval with its stored values. When the
    time t_p between kept t_a and t_b goes, the correction of the merged interval is that of
    its two halves plus their trapezoids minus the merged trapezoid, so that trapezoid plus
    correction is still the integral of the finest grid:

        d1'[a, k] = d1[a, k] + d1[p, k] + T1[a, k] + T1[p, k] - (t_b - t_a)/2 (x[a, k] + x[b, k])

    (first argument; T1[j, k] = h_j/2 (x[j, k] + x[j+1, k]), for j >= k if causal), and the
    same along the second argument for d2 (intervals j + 1 <= k if causal).
    """
    size = ts.shape[0]
    idx = jnp.arange(size)
    if jump is None:
        xh = x
        first = second = jnp.ones((size, size), bool)
    else:
        xh = jnp.where(idx[:, None] == idx[None, :], jump[..., None, :], x)
        first = idx[:, None] >= idx[None, :]                 # interval j, column k: j >= k
        second = idx[:, None] + 1 <= idx[None, :]            # interval j, row k: j + 1 <= k
    new1 = _merge_rows(d1, xh, first, ts, keep)
    new2 = jnp.swapaxes(_merge_rows(jnp.swapaxes(d2, -1, -2), jnp.swapaxes(xh, -1, -2), second,
                                    ts, keep), -1, -2)
    return new1, new2


def _merge_rows(d: Array, x: Array, valid: Array, ts: Array, keep: Array) -> Array:
    """`merge_intervals` along the first of the last two axes: rows of `d` are intervals,
    rows of `x` times; `valid[j, k]`: interval j counts for column k."""
    size = ts.shape[0]
    h = jnp.concatenate([jnp.diff(ts), jnp.zeros((1,), ts.dtype)])
    a = keep
    b = jnp.concatenate([keep[1:], keep[-1:]])
    merged = (b - a) == 2
    p = jnp.minimum(a + 1, size - 1)
    fine = 0.5 * h[:, None] * (x + jnp.roll(x, -1, axis=-2)) * valid
    coarse = (0.5 * (ts[b] - ts[a])[:, None] * (x[..., a, :] + x[..., b, :])
              * (valid[a] & valid[p]))
    new = d[..., a, :] + jnp.where(merged[:, None],
                                   d[..., p, :] + fine[..., a, :] + fine[..., p, :] - coarse,
                                   0.0)
    new = new[..., keep]
    pad = [(0, 0)] * (d.ndim - 2) + [(0, size - keep.shape[0])] * 2
    return jnp.pad(new, pad)


def scale_index(x: Array, k: int, n, keep) -> Array:
    """x with index n along each of its last k axes multiplied by `keep` (bool)."""
    for axis in range(x.ndim - k, x.ndim):
        where = (slice(None),) * axis + (n,)
        x = x.at[where].set(jnp.where(keep, x[where], jnp.zeros((), x.dtype)))
    return x


def clear_index(x: Array, k: int, n) -> Array:
    """x with index n set to zero along each of its last k axes."""
    for axis in range(x.ndim - k, x.ndim):
        where = (slice(None),) * axis + (n,)
        x = x.at[where].set(jnp.zeros((), x.dtype))
    return x


# ------------------------------------------------------------------------------ progress
class _Progress:
    """Host-side progress lines on stderr (called from inside the compiled loop)."""

    def __init__(self, label: str, steps: int | None = None):
        self.label, self.steps, self.start = label, steps, None

    def fixed(self, n):
        n = int(n)
        now = time.perf_counter()
        if self.start is None or n == 0:
            self.start = now
            return
        frac = n / self.steps
        # The cost of row n grows like n^2: estimate the rest from the cubic law.
        eta = (now - self.start) * (1.0 / frac**3 - 1.0) if frac > 0 else float("nan")
        print(f"{self.label}: step {n}/{self.steps} ({100 * frac:.0f}%), "
              f"~{eta:.1f}s left", file=sys.stderr, flush=True)

    def adaptive(self, t, t_max, h, accepted, rejected, stored):
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        print(f"{self.label}: t = {float(t):.4g} / {float(t_max):.4g}, step {float(h):.3g}, "
              f"{int(accepted)} accepted, {int(rejected)} rejected, {int(stored)} stored, "
              f"{now - self.start:.1f} s", file=sys.stderr, flush=True)


#: Solves of at least this many steps run in 8 causal chunks by default (see `chunk_bounds`).
CHUNK_FROM = 2048


def chunk_bounds(steps: int, chunks: int | None = None) -> list[tuple[int, int]]:
    """Split the steps 0..steps-1 into `chunks` consecutive ranges of (nearly) equal length.

    Default: one chunk below `CHUNK_FROM` steps, else 8. Each chunk is a loop of its own in
    the compiled program, so chunking multiplies the compile time (measured on the 2-core CPU,
    N = 300, m = 16: Euler 3.6 s with one chunk, 18.8 s with 8; Trapezoid 7.4 s and 40 s) while
    saving ~60% of the O(N^3) run time, which outweighs it only from N ~ 2000 on (Euler, m = 16:
    N = 1024 runs in 1.5 s chunked, N = 1600 in 15.4 s unchunked, N = 2048 in 14.8 s chunked;
    benchmarks/README.md).
    """
    if chunks is None:
        chunks = 1 if steps < CHUNK_FROM else 8
    chunks = max(1, min(chunks, steps))
    edges = [round(j * steps / chunks) for j in range(chunks + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


# ------------------------------------------------------------------------------ controllers
class Adaptive(eqx.Module):
    """Adaptive time stepping from 0 to `t_max` with a bounded history.

    **Step control** (an integral controller on the stepper's embedded error estimate, as in
    diffrax's `PIDController` with its I term): a step is accepted when

        max |y_err| / (atol + rtol max(|y_n|, |y_{n+1}|)) <= 1

    over the new row of every advancing quantity, and the next step is
    h * clip(safety * err^(-1/(q+1)), factor_min, factor_max), q the estimate's order.
    The controller's decisions are not differentiated (stop_gradient on the step sizes).
    By default only the advancing quantities are under this control: a model's auxiliaries
    (the DMFT's R_A and C_A, hence e_tr = -C_A(t, t)/2) are quadratures over the history and
    can be less accurate (measured: lazy m = 64, t = 8, rtol 1e-3 and 1e-4: e_tr 0.21 and
    5e-3 relative off, e_ts 2e-3 and 1.5e-4). `control_auxiliary=True` also bounds the model's
    estimate of its auxiliary's quadrature error (`AbstractModel.aux_error`; for the DMFT family
    Simpson minus trapezoid on the last two intervals of C_A(t, t)'s integral) by
    atol + rtol |C_A(t, t)|: e_tr then follows the tolerance (same setting, rtol 1e-3: 1.4e-3
    off) at several times the steps (1121 instead of 176), because under lazy initialization
    the step then resolves the responses' near-diagonal structure of width ~1/m.

    **Steps that leave the domain** (a new row with a correlation beyond
    1 + `CORRELATION_TOLERANCE` or a non-finite value, `AbstractModel.divergence`) are rejected
    like inaccurate ones, with half the step; the next steps are capped at 0.9 of it, the cap
    relaxing by 1% per accepted step. Such a step is too long for the explicit part of the
    scheme (mean-field Fig. 5, m = 1024, rtol 1e-3: h = 3 put C(t + h, t) at 1 + 1e-3); the
    solve ends as `RESULTS.diverged` only when no step above `dt_min` stays inside, or when an
    accepted row's train error has grown 1000-fold.

    **Landing on t_max**: the step tried is the largest one <= the controller's that divides
    the rest of the way to t_max into whole steps (`_landing_step`), so that no last step is
    clipped to a fraction of the others: a step change perturbs the discrete history, and the
    train error near interpolation shows it.

    **Bounded history** (Kim-Latz decimation): at most `history` times are stored for the
    two-time functions. When the history is full, every other point of its older half (t = 0
    kept) is dropped, freeing a quarter of it; the memory integrals then use the trapezoidal
    weights of the remaining (non-uniform) times. The integrals over the past keep what the
    finer grid had resolved: the integrals of the responses over merged intervals keep the
    value of the finest grid they ever had, times the kernel's mean over the interval, or its
    value at the diagonal end on the interval next to the diagonal
    (`AbstractModel.interval_corrections`: the responses fall from their jumps within ~1/m,
    which a merged interval's trapezoid misses; `dmft_jax._volterra.Merged`; the DMFT first
    moves the exponentially fitted corrections of the intervals next to the diagonals into
    them, `DMFT.fold_fits`), the masses of
    R_A move to the kept neighbours (`AbstractModel.masses`), and C_A is the quadratic form
    -R_A Sigma_C R_A^T, so the train error does not jump with the grid
    (`dmft_jax._volterra.response_rows`). Measured, lazy Fig. 3, m = 64, rtol 1e-3, t = 8,
    history 128 against one that keeps every step: e_tr 1.4% and e_ts 2e-6 apart (66-fold and
    7e-3 before). The times dropped are the ones where linear interpolation best reproduces
    what later rows integrate (the latest row of each two-time function and the one-time
    values read later), in units of atol + rtol |value| (`decimation_norm="entry"`, the
    default) or atol + rtol max |row| (`"row"`: the norm of the step control; see
    `_interpolation_scores` for what each is good and bad at); when a dropped time's
    interpolation error exceeds
    `max_decimation_error` times the tolerance (default 1), the solve stops with
    `RESULTS.history_too_coarse` rather than go on with a history coarser than asked for. One-time
    observables are recorded at every accepted step (up to `max_steps`), not only at the
    stored times.

    **Cost while the history fills** (`window_from`): a step costs O(L^2) on a history of L
    stored times, so until the history is full the steps run on its leading block of width
    `window_from`, then twice that, ... up to half the history (`windows()`; one compiled
    loop per width; the same steps and values as one loop over the whole buffer).

    **Fields:** `t_max`, `rtol`, `atol`, `dt0` (first step), `dt_min`,
    `max_decimation_error` (traced; `inf` accepts any decimation); `max_steps`, `history`,
    `window_from` (static sizes); `safety`, `factor_min`, `factor_max`, `control_auxiliary`,
    `decimation_norm` ("entry" or "row") (static).
    """

    t_max: Array
    rtol: Array
    atol: Array
    dt0: Array
    dt_min: Array
    max_decimation_error: Array
    max_steps: int = eqx.field(static=True)
    history: int = eqx.field(static=True)
    window_from: int = eqx.field(static=True, default=256)
    safety: float = eqx.field(static=True, default=0.9)
    factor_min: float = eqx.field(static=True, default=0.2)
    factor_max: float = eqx.field(static=True, default=5.0)
    control_auxiliary: bool = eqx.field(static=True, default=False)
    decimation_norm: str = eqx.field(static=True, default="entry")

    def __init__(self, t_max, *, rtol=1e-6, atol=1e-8, dt0=None, dt_min=None,
                 max_decimation_error=1.0, max_steps: int = 100_000, history: int = 1024,
                 window_from: int = 256, safety: float = 0.9, factor_min: float = 0.2,
                 factor_max: float = 5.0, control_auxiliary: bool = False,
                 decimation_norm: str = "entry"):
        for name, value, lower in (("t_max", t_max, 0.0), ("rtol", rtol, 0.0),
                                   ("atol", atol, 0.0)):
            val = _concrete(value)
            if val is not None and (val.ndim != 0 or not np.isfinite(val) or not val > lower):
                raise ValueError(f"{name} must be a finite number > {lower}, got {value!r}")
        val = _concrete(max_decimation_error)
        if val is not None and (val.ndim != 0 or np.isnan(val) or not val > 0):
            raise ValueError("max_decimation_error must be a number > 0 (inf: accept any "
                             f"decimation), got {max_decimation_error!r}")
        if int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps}")
        if int(history) != history or history < 8:
            raise ValueError(f"history must be an integer >= 8 (stored times), got {history}")
        if int(window_from) != window_from or window_from < 8:
            raise ValueError(f"window_from must be an integer >= 8, got {window_from}")
        if not 0 < factor_min < 1 < factor_max or not 0 < safety <= 1:
            raise ValueError("need 0 < factor_min < 1 < factor_max and 0 < safety <= 1")
        dtype = jnp.result_type(float)
        self.t_max = jnp.asarray(t_max, dtype)
        self.rtol, self.atol = jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype)
        self.dt0 = (jnp.minimum(1e-4, self.t_max / 100) if dt0 is None
                    else jnp.asarray(dt0, dtype))
        self.dt_min = (self.t_max * 1e-14 if dt_min is None else jnp.asarray(dt_min, dtype))
        self.max_decimation_error = jnp.asarray(max_decimation_error, dtype)
        self.max_steps, self.history = int(max_steps), int(history)
        self.window_from = int(window_from)
        self.safety, self.factor_min, self.factor_max = safety, factor_min, factor_max
        self.control_auxiliary = bool(control_auxiliary)
        if decimation_norm not in ("entry", "row"):
            raise ValueError(f'decimation_norm must be "entry" or "row", got {decimation_norm!r}')
        self.decimation_norm = decimation_norm

    def windows(self) -> list[int]:
        """Widths of the leading blocks the solve runs on before the history fills up:
        window_from, 2 window_from, ... up to history / 2 (none if history < 2 window_from:
        each width is one more compiled loop, ~6 s for the symmetric DMFT on the 2-core CPU)."""
        out, width = [], self.window_from
        while 2 * width <= self.history:
            out.append(width)
            width *= 2
        return out

    def valid(self) -> Array:
        return ((self.t_max > 0) & (self.rtol > 0) & (self.atol >= 0) & (self.dt0 > 0)
                & jnp.isfinite(self.t_max) & (self.dt_min >= 0)
                & (self.max_decimation_error > 0))

    def decimation(self, model: "AbstractModel", state: dict, ts: Array):
        """Which stored times to keep when the history is full: `(keep, error)`.

        A quarter of the stored times is dropped. Candidates are every other time between
        t_0 and the most recent quarter (so that no two neighbours go); among them the ones
        whose removal is least visible are dropped: for each candidate t_k the error of
        reading the stored functions at t_k by linear interpolation from t_{k-1} and
        t_{k+1} (`_interpolation_scores`), in units of atol + rtol |value| or, with
        `decimation_norm="row"`, atol + rtol max |row|. `error` is the largest such score
        among the dropped times
        (reported in `stats["decimation_error"]`; above 1 the bounded history is coarser
        than the tolerance).
        """
        size = self.history
        drop = size // 4
        idx = jnp.arange(size)
        score = _interpolation_scores(model, state, ts, self.rtol, self.atol,
                                      row_norm=self.decimation_norm == "row")
        candidate = (idx % 2 == 1) & (idx < size - size // 4 - 1)
        score = jnp.where(candidate, score, jnp.inf)
        order = jnp.argsort(score)
        dropped = jnp.zeros((size,), bool).at[order[:drop]].set(True)
        keep = jnp.nonzero(~dropped, size=size - drop)[0]
        return keep, jnp.max(score[order[:drop]])


def _interpolation_scores(model, state: dict, ts: Array, rtol, atol,
                          row_norm: bool = False) -> Array:
    """For each stored time t_k (0 < k < L - 1): the largest error, in units of
    atol + rtol |x| (or, `row_norm`, atol + rtol max |x|), of linear interpolation at t_k
    from t_{k-1}, t_{k+1}, over what later rows will integrate: the one-time buffers the model
    reads at past times, and the latest complete row X(t_n, .) of every two-time buffer (the
    rows to come are like it). The past
    of the two-time functions itself survives decimation exactly in the integrals
    (`AbstractModel.interval_corrections`, `AbstractModel.masses`); its near-diagonal
    structure (a response falls from its jump within ~1/m) would only pollute the score.

    Entry-wise, a small but structured tail (a response at old times, which the resolvent rows
    of R_A solve against) keeps its shape; near interpolation in the second regime that is
    what holds: lazy Fig. 3, m = 1024, rtol 1e-3, 256 stored times, `fit_ends=True`: to
    t = 1e4 at score 0.43 with |e_tr| < 1.2e-9 after t = 100; row-wise the same solve scored
    0.135 and diverged at t = 3700 (e_tr 7.6e-8 there). Row-wise (max |x| over each leaf,
    a row or a one-time buffer, the norm of the step control's `error_norm`), the tail is not
    held to atol; through a slow third regime that is what lets the history last: lazy, pure
    noise, tau = 2.5, m = 64, rtol 1e-3, atol 1e-5: entry-wise the score passed 1 at t = 31
    on 256 stored times and t = 220 on 512 (the tail R ~ 0.03 at lags 7-28 held the spacing
    near 0.6), row-wise 512 stored times reach t = 1000 at score 0.31 with e_tr falling to
    1.1e-9 (`benchmarks/third_regime.py`). Neither is right everywhere: with the allowance at
    inf, entry-wise drifted there (e_tr 7e-7 -> 3.4e-4 on 256 stored times), row-wise in
    Fig. 3 at m = 256 on 112 and 128 stored times (scores 2.0, 1.4; e_tr back to ~2e-6).
    Choosing the dropped times by one norm and judging them by the other was worse than
    either (entry-wise choice, row-wise judgement, the tau = 2.5 case: score 0.92, diverged
    at t = 875).
    """
    size = ts.shape[0]
    idx = jnp.arange(size)
    prev, nxt = jnp.clip(idx - 1, 0, size - 1), jnp.clip(idx + 1, 0, size - 1)
    gap = ts[nxt] - ts[prev]
    w = jnp.where(gap > 0, (ts - ts[prev]) / jnp.where(gap > 0, gap, 1.0), 0.5)

    def along(x):
        err = jnp.abs(x - ((1 - w) * x[..., prev] + w * x[..., nxt]))
        if row_norm:
            return jnp.max(err.reshape(-1, size), axis=0) / (atol + rtol * jnp.max(jnp.abs(x)))
        return jnp.max((err / (atol + rtol * jnp.abs(x))).reshape(-1, size), axis=0)

    score = jnp.zeros((size,), ts.dtype)
    skip = model.masses() | model.unread_history()
    for key, k in model.time_axes().items():
        if key in skip:
            continue
        # The decimation runs when row L - 1 has its advancing values but not yet its
        # auxiliaries: the latest complete row of an auxiliary is L - 2.
        last = size - 1 if key in model.advancing() else size - 2
        for x in jtu.tree_leaves(state[key]):
            score = jnp.maximum(score, along(x if k == 1 else x[..., last, :]))
    return score


def _concrete(x):
    try:
        return np.asarray(x, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


# ------------------------------------------------------------------------------ fixed grids
def _fixed(model: AbstractModel, grid: TimeGrid, stepper: AbstractStepper, progress, label,
           chunks):
    state = model.init(grid.size)
    ts = grid.ts
    every = max(1, grid.steps // 10)
    report = _Progress(label, grid.steps) if progress else None

    def body(n, s, ts):
        if report is not None:
            jax.lax.cond(n % every == 0, lambda: jax.debug.callback(report.fixed, n),
                         lambda: None)
        return stepper.step(model, n, s, ts).state

    if chunks is None:
        chunks = model.default_chunks(grid.steps)
    for lo, hi in chunk_bounds(grid.steps, chunks):
        if hi + 1 >= grid.size:
            state = jax.lax.fori_loop(lo, hi, lambda n, s: body(n, s, ts), state)
        else:
            small_ts = ts[:hi + 1]
            small = jax.lax.fori_loop(lo, hi, lambda n, s, t=small_ts: body(n, s, t),
                                      model.window(state, hi + 1))
            state = model.unwindow(state, small)
    state, _ = model.row(grid.steps, state, stepper.quadrature.weights(ts, grid.steps))
    return state


# ------------------------------------------------------------------------------ adaptive
class _Carry(eqx.Module):
    state: dict
    ts: Array           # stored times (history,)
    n: Array            # index of the last stored row
    h: Array            # next step size to try
    h_cap: Array        # bound on the next steps from the last step that left the domain
    records: dict       # one-time observables at accepted steps (max_steps + 1, ...)
    accepted: Array
    rejected: Array
    decimations: Array
    decimation_error: Array
    result: Any


def _check_adaptive(stepper: AbstractStepper) -> None:
    if stepper.error_order() is None:
        raise ValueError(f"{type(stepper).__name__} has no error estimate: adaptive stepping "
                         "needs a stepper such as Trapezoid()")


def adaptive_init(model: AbstractModel, ctrl: Adaptive, stepper: AbstractStepper) -> _Carry:
    """The state of an adaptive solve before its first step (see `adaptive_advance`)."""
    _check_adaptive(stepper)
    size, steps = ctrl.history, ctrl.max_steps
    state = model.init(size)
    if size <= steps:                    # the history can fill up: decimation may happen
        corrections = model.interval_corrections()
        state = dict(state, **{ck: (jtu.tree_map(jnp.zeros_like, state[key]),) * 2
                               for ck, key in corrections.items()})
    dtype = jnp.result_type(*[x.dtype for x in jtu.tree_leaves(state)])
    ts = jnp.zeros((size,), dtype)
    probe = model.row(0, state, stepper.quadrature.weights(ts, 0))[0]
    rec0 = dict(model.records(0, probe), t=jnp.zeros((), dtype))
    records = jtu.tree_map(lambda x: jnp.zeros((steps + 1,) + jnp.shape(x), dtype), rec0)
    ok_input = model.valid() & ctrl.valid()
    return _Carry(state=state, ts=ts, n=jnp.asarray(0), h=jnp.asarray(ctrl.dt0, dtype),
                  h_cap=jnp.asarray(jnp.inf, dtype),
                  records=records, accepted=jnp.asarray(0), rejected=jnp.asarray(0),
                  decimations=jnp.asarray(0), decimation_error=jnp.zeros((), dtype),
                  result=RESULTS.where(ok_input, RESULTS.successful, RESULTS.invalid_input))


def adaptive_done(ctrl: Adaptive, carry: _Carry) -> Array:
    """True once the solve reached t_max or stopped with a failure."""
    t_max = jax.lax.stop_gradient(ctrl.t_max)
    return (carry.ts[carry.n] >= t_max) | (carry.result != RESULTS.successful)


def adaptive_advance(model: AbstractModel, ctrl: Adaptive, stepper: AbstractStepper,
                     carry: _Carry, attempts: int | None = None, progress: bool = False,
                     label: str = "dmft") -> _Carry:
    """Run the adaptive loop from `carry` for at most `attempts` attempted steps (None: until
    t_max or a failure). Running it in segments gives the same result as one call: the
    segments only decide where the loop pauses, never the steps."""
    size, steps = ctrl.history, ctrl.max_steps
    exponent = -1.0 / (stepper.error_order() + 1.0)
    report = _Progress(label) if progress else None
    t_max = jax.lax.stop_gradient(ctrl.t_max)
    stop = None if attempts is None else carry.accepted + carry.rejected + attempts

    def cond(c: _Carry):
        more = ~adaptive_done(ctrl, c)
        return more if stop is None else more & (c.accepted + c.rejected < stop)

    def decimate(c: _Carry) -> _Carry:
        keep, error = ctrl.decimation(model, c.state, c.ts)
        state = model.select_times(c.state, keep, c.ts)
        ts = jnp.pad(c.ts[keep], (0, size - keep.shape[0]))
        # The stored history is only as good as its coarsest drop: beyond the allowance the
        # solve stops (the decimated state is still returned, for inspection).
        result = RESULTS.where(error > ctrl.max_decimation_error, RESULTS.history_too_coarse,
                               c.result)
        return eqx.tree_at(lambda x: (x.state, x.ts, x.n, x.decimations, x.decimation_error,
                                      x.result), c,
                           (state, ts, jnp.asarray(keep.shape[0] - 1), c.decimations + 1,
                            jnp.maximum(c.decimation_error, error), result))

    def body(c: _Carry) -> _Carry:
        n, t = c.n, c.ts[c.n]
        h = jax.lax.stop_gradient(_landing_step(c.h, t_max - t))
        ts = c.ts.at[n + 1].set(t + h)
        out = stepper.step(model, n, c.state, ts)
        # Row n (accepted earlier, auxiliaries now written) is recorded at index `accepted`;
        # rewriting it on a retry stores the same values.
        rec = dict(model.records(n, out.state), t=t)
        records = jtu.tree_map(lambda buf, x: buf.at[c.accepted].set(x), c.records, rec)
        diverged = model.divergence(n, out.state)
        # A new row outside the equations' domain (a correlation beyond 1 + the divergence
        # rule's tolerance, a non-finite value) is a step too long for the explicit part of
        # the scheme (measured: mean-field Fig. 5, m = 1024, rtol 1e-3, h = 3 at t = 164 put
        # C(t + h, t) at 1 + 1e-3): it is rejected like an inaccurate one; only when no step
        # above dt_min avoids it is it a divergence.
        outside = model.divergence(n + 1, out.state)
        err = error_norm(out.error, out.new, out.new, ctrl.rtol, ctrl.atol)
        err = jnp.where(outside, jnp.inf, err)
        if ctrl.control_auxiliary and out.aux is not None:
            aux_err, aux_value = out.aux
            err = jnp.maximum(err, jnp.abs(aux_err) / (ctrl.atol + ctrl.rtol * jnp.abs(aux_value)))
            err = jnp.where(jnp.isfinite(err), err, jnp.inf)
        err = jax.lax.stop_gradient(err)
        accept = (err <= 1.0) & ~diverged
        factor = jnp.clip(ctrl.safety * jnp.maximum(err, 1e-10) ** exponent,
                          ctrl.factor_min, ctrl.factor_max)
        factor = jnp.where(jnp.isfinite(err), factor, ctrl.factor_min)
        factor = jnp.where(outside, 0.5, factor)      # the bound, not the error, set it
        h_next = h * jnp.where(accept, factor, jnp.minimum(factor, 0.9))
        # The step that left the domain caps the next ones at 0.9 of it, the cap relaxing by
        # 1% per accepted step (without it the controller grew the step back into the bound:
        # mean-field m = 256, rtol 1e-3, t = 400: 312 rejections for 619 steps).
        h_cap = jnp.where(outside, jnp.minimum(c.h_cap, h),
                          jnp.where(accept, 1.01 * c.h_cap, c.h_cap))
        h_next = jax.lax.stop_gradient(jnp.minimum(h_next, 0.9 * h_cap))
        h_cap = jax.lax.stop_gradient(h_cap)
        # A rejected step leaves nothing behind (O(L) in place): its retry starts from the
        # state the attempt found.
        state = _undo_step(model, n, out.state, keep=accept)
        j = c.accepted + jnp.where(accept, 1, 0)
        result = RESULTS.where(diverged, RESULTS.diverged, c.result)
        stuck = ~accept & ~diverged & (h_next < ctrl.dt_min)
        result = RESULTS.where(stuck, RESULTS.where(outside, RESULTS.diverged,
                                                    RESULTS.step_too_small), result)
        result = RESULTS.where(accept & (j >= steps) & (t + h < t_max),
                               RESULTS.max_steps_reached, result)
        if report is not None:
            every = max(1, min(steps // 50, 200))
            jax.lax.cond(accept & (j % every == 0),
                         lambda: jax.debug.callback(report.adaptive, t + h, t_max, h, j,
                                                    c.rejected, n + 2),
                         lambda: None)
        return _Carry(state=state, ts=jnp.where(accept, ts, c.ts),
                      n=jnp.where(accept, n + 1, n), h=h_next, h_cap=h_cap, records=records,
                      accepted=j,
                      rejected=c.rejected + jnp.where(accept, 0, 1),
                      decimations=c.decimations, decimation_error=c.decimation_error,
                      result=result)

    # While the history has room, the steps run on its leading block only (a step costs
    # O(width^2)): one loop per window width, each left when the next row would not fit.
    for width in ctrl.windows():
        def windowed(c: _Carry, width=width) -> _Carry:
            small = eqx.tree_at(lambda x: (x.state, x.ts), c,
                                (model.window(c.state, width), c.ts[:width]))
            small = jax.lax.while_loop(lambda x: cond(x) & (x.n + 1 < width), body, small)
            return eqx.tree_at(lambda x: (x.state, x.ts), small,
                               (model.unwindow(c.state, small.state),
                                c.ts.at[:width].set(small.ts)))
        carry = jax.lax.cond(carry.n + 1 < width, windowed, lambda x: x, carry)

    # On the whole history: steps until it is full, then one decimation. The decimation's
    # `cond` sits outside the step loop: a `cond` that carries the history through every
    # step makes XLA:CPU copy it each time (measured: 3x the cost of a step at L = 512).
    def fill_then_decimate(c: _Carry) -> _Carry:
        c = jax.lax.while_loop(lambda x: cond(x) & (x.n + 1 < size), body, c)
        return jax.lax.cond((c.n + 1 >= size) & ~adaptive_done(ctrl, c), decimate,
                            lambda x: x, c)
    return jax.lax.while_loop(cond, fill_then_decimate, carry)


def adaptive_finish(model: AbstractModel, ctrl: Adaptive, stepper: AbstractStepper,
                    carry: _Carry, throw: bool = True):
    """The solution of a finished (or stopped) adaptive solve: the auxiliaries of the last
    row, the records padded past the last accepted step, `result` and `stats`."""
    state, _ = model.row(carry.n, carry.state, stepper.quadrature.weights(carry.ts, carry.n))
    rec = dict(model.records(carry.n, state), t=carry.ts[carry.n])
    records = jtu.tree_map(lambda buf, x: buf.at[carry.accepted].set(x), carry.records, rec)
    records = _pad_records(records, carry.accepted)
    sol = model.solution(state, carry.ts, records)
    stats = dict(accepted=carry.accepted, rejected=carry.rejected, stored=carry.n + 1,
                 decimations=carry.decimations, decimation_error=carry.decimation_error)
    return _finish(sol, carry.result, stats, throw)


def _finish(sol, result, stats, throw: bool):
    sol = eqx.tree_at(lambda s: (s.result, s.stats), sol, (result, stats),
                      is_leaf=lambda x: x is None)
    if throw:
        sol = result.error_if(sol, result != RESULTS.successful)
    return sol


def _pad_records(records: dict, last) -> dict:
    """Entries past the last accepted step: t = +inf, values repeat the last row (so that
    interpolation and plots read them as "after the end")."""
    def pad(key, buf):
        idx = jnp.arange(buf.shape[0]).reshape((-1,) + (1,) * (buf.ndim - 1))
        fill = jnp.full_like(buf, jnp.inf) if key == "t" else jnp.broadcast_to(buf[last], buf.shape)
        return jnp.where(idx <= last, buf, fill)
    return {key: pad(key, buf) for key, buf in records.items()}


def _landing_step(h, rest):
    """The step to try when `rest` is left to t_max and the controller proposes `h`: the
    largest step <= h that divides the rest into whole steps, rest / ceil(rest / h). The solve
    then lands on t_max without a last step clipped to a fraction of h, and the step never
    changes by more than the controller's own change plus h / k (k the steps left).

    Why: a change of step perturbs the discrete two-time history by O(h^2) (the responses'
    near-diagonal structure is not resolved at the lazy steps), and the train error near
    interpolation, a small difference of O(0.1) quadratures, shows it; the offset decays only
    as e_tr does. Measured (lazy Fig. 3, m = 64, rtol 1e-3): a last step clipped to 0.4 h, 0.8 h
    and 0.2 h (t_max = 20, 20.02, 20.04) gave e_tr(t_max) = 1.25e-4, 8.7e-5, 8.5e-5 where the
    steps before read 1.3e-6; with this rule 1.34e-6, 1.33e-6, 1.32e-6. Dividing only the last
    256 steps left a 1/256 change at their start, which moved e_tr to 2.9e-6 at t = 51.7 (the
    Richardson reference: 1e-12). On a fixed trapezoid grid (h = 0.05) one 10% step change at
    t = 10 moves e_tr by +5e-5 (30%)."""
    # The 1e-6 lets rest / h round a hair above a whole number (then the step exceeds h by at
    # most 1e-6 / k relative) rather than add a sliver step at the end.
    k = jnp.maximum(jnp.ceil(rest / h - 1e-6), 1.0)
    return rest / k


def _undo_step(model: AbstractModel, n, state: dict, keep) -> dict:
    """What step n wrote, multiplied by `keep` (undone when False): the advancing buffers at
    index n + 1 and the auxiliaries of row n. Both were zero before the step (the previous step
    cleared the auxiliaries of its provisional row n), so a rejected step leaves the state it
    found, and its retry cannot read the attempt's outputs (row n's C_A column was one)."""
    out = dict(state)
    adv = model.advancing()
    for key, k in model.time_axes().items():
        idx = n + 1 if key in adv else n
        out[key] = jtu.tree_map(lambda x, k=k, idx=idx: scale_index(x, k, idx, keep), state[key])
    return out


# ------------------------------------------------------------------------------ entry points
def integrate(model: AbstractModel, times, stepper: AbstractStepper | None = None, *,
              progress: bool = False, label: str = "dmft", chunks: int | None = None,
              throw: bool = True):
    """Solve `model` on `times` (a `TimeGrid` or an `Adaptive` controller) with `stepper`
    (default: `Euler()` on a grid, `Trapezoid()` adaptively); returns `model.solution(...)`.

    Fixed grids: each chunk of steps is a `lax.fori_loop` with static bounds (a `scan`, so
    reverse mode works). Causality means that the steps n < L - 1 only read and write the
    leading L x L block of the history, so a chunk ending at step L - 1 runs on that block
    alone: the work of N steps drops from ~N^3 to ~0.4 N^3 with 8 chunks.

    `progress=True` prints lines on stderr (a host callback gated by `lax.cond`). `throw=True`
    raises (through `eqx.error_if`, also under `jit`) when the outcome is not successful; under
    `vmap` use `throw=False` and read `sol.result`.
    """
    if isinstance(times, TimeGrid):
        if stepper is None:
            stepper = Map() if getattr(model, "discrete", False) else Euler()
        state = model.run_fixed(lambda mdl: _fixed(mdl, times, stepper, progress, label, chunks))
        sol = model.solution(state, times.ts)
        result = RESULTS.where(model.valid() & times.valid(), RESULTS.successful,
                               RESULTS.invalid_input)
        result = RESULTS.where(sol.diverged & (result == RESULTS.successful), RESULTS.diverged,
                               result)
        stats = dict(accepted=jnp.asarray(times.steps), rejected=jnp.asarray(0),
                     stored=jnp.asarray(times.size), decimations=jnp.asarray(0),
                     decimation_error=jnp.zeros(()))
    elif isinstance(times, Adaptive):
        stepper = Trapezoid() if stepper is None else stepper
        carry = adaptive_init(model, times, stepper)
        carry = adaptive_advance(model, times, stepper, carry, progress=progress, label=label)
        return adaptive_finish(model, times, stepper, carry, throw)
    else:
        raise ValueError(f"times must be a TimeGrid or an Adaptive controller, got "
                         f"{type(times).__name__}")
    return _finish(sol, result, stats, throw)


def solve(model: AbstractModel, times, stepper: AbstractStepper | None = None, *,
          progress: bool = False, label: str = "dmft", chunks: int | None = None,
          throw: bool = True):
    """`integrate`, compiled with `eqx.filter_jit`: arrays (physics, times, tolerances) are
    traced, sizes and flags static, so new parameter values reuse the compilation. `throw`
    is applied to the compiled solve's result, not inside it: a solve with `throw=False` and
    the same one raising share one compilation (under an outer `jit` the check is traced into
    that program, as with `integrate`)."""
    sol = _solve_compiled(model, times, stepper, progress=progress, label=label, chunks=chunks)
    if throw:
        # traced (under an outer jit): thread the check through the solution, so that it runs
        # before the solution is used; concrete: it raises here, on the result code alone
        bad = sol.result != RESULTS.successful
        if sol.result.is_traced():
            sol = sol.result.error_if(sol, bad)
        else:
            sol.result.error_if(sol.result, bad)
    return sol


@eqx.filter_jit
def _solve_compiled(model: AbstractModel, times, stepper: AbstractStepper | None, *,
                    progress: bool, label: str, chunks: int | None):
    return integrate(model, times, stepper, progress=progress, label=label, chunks=chunks,
                     throw=False)


def first_bad_index(bad: jax.Array) -> jax.Array:
    """Index of the first True in a boolean time series, or -1 if none."""
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1)
