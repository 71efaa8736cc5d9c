"""The one time-stepping loop that every DMFT variant plugs into.

A *model* says what is solved: given the history up to row n it computes that row's
auxiliary quantities (response functions, memory kernels, ...), and returns the current
"front" (the values that advance: one-time quantities and row n of the two-time functions)
with its time derivative. A *stepper* says how a front advances (forward Euler, spec
section 6 and [D.8]). `integrate` owns the loop: row after row, causally, with the history
kept in preallocated buffers that are written in place (O(N^2) memory for N steps).
"""

from __future__ import annotations

import abc
import sys
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._grid import TimeGrid


class AbstractModel(eqx.Module):
    """The equations of one DMFT variant, as the causal update of one time row."""

    @abc.abstractmethod
    def init(self, grid: TimeGrid) -> Any:
        """The history buffers, with row 0 (the initial condition) written."""

    @abc.abstractmethod
    def row(self, n, state, grid: TimeGrid) -> tuple[Any, Any, Any]:
        """Complete row n of the history and return `(state, front, rate)`.

        `state` has the auxiliaries of row n written (they depend on rows <= n only);
        `front` is the pytree of values at t_n that advance, `rate` its time derivative.
        """

    @abc.abstractmethod
    def write(self, n, state, front) -> Any:
        """Write the advanced front as row n of the history."""

    @abc.abstractmethod
    def solution(self, state, grid: TimeGrid) -> Any:
        """The typed result built from the completed history."""

    @abc.abstractmethod
    def time_axes(self) -> dict[str, int]:
        """For each entry of the (dict) state, how many trailing axes of its arrays are time."""

    def window(self, state: dict, size: int) -> dict:
        """The leading `size` x `size` time block of every buffer (a copy)."""
        def cut(x, k):
            return x[(Ellipsis,) + (slice(0, size),) * k]
        return {key: jtu.tree_map(lambda x: cut(x, k), state[key])
                for key, k in self.time_axes().items()}

    def unwindow(self, state: dict, small: dict) -> dict:
        """Write a window back into the full buffers."""
        def put(x, y, k):
            return x.at[(Ellipsis,) + (slice(0, y.shape[-1]),) * k].set(y)
        return {key: jtu.tree_map(lambda x, y: put(x, y, k), state[key], small[key])
                for key, k in self.time_axes().items()}


class Euler(eqx.Module):
    """Forward Euler, y_{n+1} = y_n + dt f(t_n, history): the scheme of spec section 6.

    Its global error is O(dt) [D.8].
    """

    order: int = eqx.field(static=True, default=1)

    def step(self, model: AbstractModel, n, state, grid: TimeGrid):
        state, front, rate = model.row(n, state, grid)
        front = jtu.tree_map(lambda y, f: y + grid.dt * f, front, rate)
        return model.write(n + 1, state, front)


class _Progress:
    """Host-side progress lines on stderr (called from inside the compiled loop)."""

    def __init__(self, steps: int, label: str):
        self.steps, self.label, self.start = steps, label, None

    def __call__(self, n):
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


def _progress_every(steps: int) -> int:
    return max(1, steps // 10)


def chunk_bounds(steps: int, chunks: int | None = None) -> list[tuple[int, int]]:
    """Split the steps 0..steps-1 into `chunks` consecutive ranges of (nearly) equal length.

    Default: one chunk below 256 steps, else 8.
    """
    if chunks is None:
        chunks = 1 if steps < 256 else 8
    chunks = max(1, min(chunks, steps))
    edges = [round(j * steps / chunks) for j in range(chunks + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def integrate(model: AbstractModel, grid: TimeGrid, stepper: Euler = Euler(),
              progress: bool = False, label: str = "dmft", chunks: int | None = None):
    """Solve `model` on `grid` with `stepper`; returns `model.solution(...)`.

    Each chunk of steps is a `lax.fori_loop` with static bounds (a `scan`, so reverse mode
    works). Causality means that the steps n < L - 1 only read and write the leading L x L
    block of the history, so a chunk ending at step L - 1 runs on that block alone: the work
    of N steps drops from ~N^3 to ~0.4 N^3 with 8 chunks (each chunk compiles separately).
    With `progress=True` a line is printed every tenth of the run (a host callback gated by
    `lax.cond`, negligible on the other steps).
    """
    state = model.init(grid)
    every = _progress_every(grid.steps)
    report = _Progress(grid.steps, label) if progress else None

    def body(n, s):
        if report is not None:
            jax.lax.cond(n % every == 0, lambda: jax.debug.callback(report, n), lambda: None)
        return stepper.step(model, n, s, grid)

    for lo, hi in chunk_bounds(grid.steps, chunks):
        if hi + 1 >= grid.size:
            state = jax.lax.fori_loop(lo, hi, body, state)
        else:
            small = jax.lax.fori_loop(lo, hi, body, model.window(state, hi + 1))
            state = model.unwindow(state, small)
    state, _, _ = model.row(grid.steps, state, grid)
    return model.solution(state, grid)


@eqx.filter_jit
def solve(model: AbstractModel, grid: TimeGrid, stepper: Euler = Euler(),
          progress: bool = False, label: str = "dmft", chunks: int | None = None):
    """`integrate`, compiled with `eqx.filter_jit`: arrays (physics, dt) are traced, sizes and
    flags static, so new parameter values reuse the compilation."""
    return integrate(model, grid, stepper, progress, label, chunks)


def first_bad_index(bad: jax.Array) -> jax.Array:
    """Index of the first True in a boolean time series, or -1 if none."""
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1)
