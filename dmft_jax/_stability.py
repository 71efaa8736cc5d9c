"""Where gradient descent with a finite step becomes unstable: two markers of a train-error series.

Both apply to the discrete-time DMFT (`DiscreteGD`), to networks trained by full-batch GD
(`dmft_jax.train`) and to the Gaussian-model simulator (`dmft_jax.simulate`), read on the GD
iterates k = 0, 1, ... (docs/discrete_gd.md, benchmarks/results/discrete_gd.md section 5):

- the **edge of stability** (`edge_of_stability_step`): the first step k >= 1 at which the train
  error rises, e_tr(k) > e_tr(k - 1) (1 + `RISE_RTOL`) + `RISE_ATOL`. Gradient descent below
  the edge decreases e_tr monotonically; once lr times the sharpness passes 2, e_tr starts to
  oscillate. The d = infinity theory and finite systems agree on this step (within one step,
  d = 100 ... 400, every step size measured).
- **divergence** (`divergence_step`): the first row that breaks the one divergence rule of
  `dmft_jax._results` (a non-finite value, a correlation beyond 1, e_tr grown 1000-fold).
  Beyond the edge of stability the GD map is chaotic (perturbations grow by a factor ~e per
  step at lr d/n >= 12 in the judged setting), so a system of finite d follows the d = infinity
  trajectory only for ~ln(d)/2 steps: a divergence that the theory predicts later than that is
  not what a finite system does at that step (it may diverge later or not at all).

Both return -1 where the event does not happen, and work under `jit`/`vmap` (time is axis 0).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

#: e_tr(k) > e_tr(k-1) (1 + RISE_RTOL) + RISE_ATOL is a rise (float32 rounding stays below).
RISE_RTOL = 1e-6
RISE_ATOL = 1e-12


def first_index(flags: ArrayLike) -> Array:
    """Index of the first True along axis 0 of a boolean series (-1 if none); batch axes after
    the time axis are kept."""
    flags = jnp.asarray(flags, bool)
    return jnp.where(jnp.any(flags, axis=0), jnp.argmax(flags, axis=0), -1)


def edge_of_stability_step(e_tr: ArrayLike) -> Array:
    """The first step k >= 1 at which the train error rises (the edge of stability of GD), -1 if
    it never does. `e_tr` (T, ...): time on axis 0, one entry per GD step. A non-finite value
    counts as a rise."""
    e = jnp.asarray(e_tr)
    prev, cur = e[:-1], e[1:]
    rise = ~(cur <= prev * (1.0 + RISE_RTOL) + RISE_ATOL)
    k = first_index(rise)
    return jnp.where(k >= 0, k + 1, -1)


def divergence_step(sol) -> Array:
    """The first step (row) of a DMFT `Solution` that breaks the divergence rule, -1 if none
    (`sol.divergence_time` is its time)."""
    return first_index(sol.bad_rows)
