"""The time grid t_n = n * dt, n = 0..steps (spec section 6)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


class TimeGrid(eqx.Module):
    """A uniform grid of `steps + 1` times with step `dt`.

    `steps` is static (it fixes every buffer's shape); `dt` is a traced array, so solves at
    different step sizes share one compilation and `dt` can be differentiated.
    """

    dt: Array
    steps: int = eqx.field(static=True)

    def __init__(self, dt: ArrayLike, steps: int):
        if isinstance(dt, (int, float)) and not dt > 0:
            raise ValueError(f"the step dt must be > 0, got {dt}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"the number of steps must be an integer >= 1, got {steps}")
        self.dt = jnp.asarray(dt, dtype=jnp.result_type(float))
        self.steps = int(steps)

    @classmethod
    def from_t_max(cls, t_max: float, steps: int) -> "TimeGrid":
        """The grid of `steps` steps ending at `t_max`."""
        return cls(t_max / steps, steps)

    @property
    def size(self) -> int:
        """Number of grid points, steps + 1."""
        return self.steps + 1

    @property
    def ts(self) -> Array:
        """The times t_n."""
        return self.dt * jnp.arange(self.size, dtype=self.dt.dtype)

    @property
    def t_max(self) -> Array:
        return self.dt * self.steps
