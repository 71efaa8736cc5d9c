"""Fixed time grids: any increasing times t_0 = 0 < t_1 < ... < t_N (spec section 6).

A `TimeGrid` says *when* a fixed-grid solve steps; *how* is the stepper's business
(`dmft_jax._stepper`) and the quadrature weights of the memory integrals on these times are
the stepper's too. The uniform grid t_n = n dt is `TimeGrid(dt, steps)`; any other increasing
grid is `TimeGrid(ts=...)`. Adaptive solves choose their times themselves
(`dmft_jax.Adaptive`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike


def _concrete(x):
    try:
        return np.asarray(x, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


class TimeGrid(eqx.Module):
    """`steps + 1` increasing times `ts` starting at 0.

    `steps` is static (it fixes every buffer's shape); `ts` is a traced array, so solves on
    different grids of the same length share one compilation and the times can be
    differentiated (e.g. the uniform step `dt`).

    **Arguments:** `TimeGrid(dt, steps)` for t_n = n dt, or `TimeGrid(ts=...)` for any strictly
    increasing times with ts[0] = 0. Concrete values are checked here (ValueError); traced ones
    by the solver (`RESULTS.invalid_input`).
    """

    ts: Array
    steps: int = eqx.field(static=True)

    def __init__(self, dt: ArrayLike | None = None, steps: int | None = None, *,
                 ts: ArrayLike | None = None):
        if ts is not None:
            if dt is not None or steps is not None:
                raise ValueError("give either (dt, steps) or ts, not both")
            self.ts = jnp.asarray(ts, dtype=jnp.result_type(float))
            if self.ts.ndim != 1 or self.ts.shape[0] < 2:
                raise ValueError(f"ts must be a 1-d array of at least 2 times, got shape "
                                 f"{self.ts.shape}")
            self.steps = int(self.ts.shape[0] - 1)
            val = _concrete(ts)
            if val is not None:
                if not np.all(np.isfinite(val)):
                    raise ValueError("ts has non-finite entries")
                if val[0] != 0:
                    raise ValueError(f"ts must start at 0, got ts[0] = {val[0]}")
                if not np.all(np.diff(val) > 0):
                    raise ValueError("ts must be strictly increasing")
            return
        if dt is None or steps is None:
            raise ValueError("give (dt, steps) or ts")
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"the number of steps must be an integer >= 1, got {steps}")
        val = _concrete(dt)
        if val is not None and (val.ndim != 0 or not np.isfinite(val) or not val > 0):
            raise ValueError(f"the step dt must be a finite number > 0, got {dt}")
        dt = jnp.asarray(dt, dtype=jnp.result_type(float))
        self.steps = int(steps)
        self.ts = dt * jnp.arange(self.steps + 1, dtype=dt.dtype)

    @classmethod
    def from_t_max(cls, t_max: float, steps: int) -> "TimeGrid":
        """The uniform grid of `steps` steps ending at `t_max`."""
        return cls(t_max / steps, steps)

    @property
    def size(self) -> int:
        """Number of grid points, steps + 1."""
        return self.steps + 1

    @property
    def dt(self) -> Array:
        """The first step t_1 - t_0 (the step of a uniform grid)."""
        return self.ts[1] - self.ts[0]

    @property
    def t_max(self) -> Array:
        return self.ts[-1]

    def valid(self) -> Array:
        """True if the (possibly traced) times are finite, start at 0 and increase strictly."""
        ts = self.ts
        return jnp.all(jnp.isfinite(ts)) & (ts[0] == 0) & jnp.all(jnp.diff(ts) > 0)

    def scaled(self, factor: ArrayLike) -> "TimeGrid":
        """The grid with every time multiplied by `factor` (d/d dt of a uniform grid)."""
        return eqx.tree_at(lambda g: g.ts, self, self.ts * factor)
