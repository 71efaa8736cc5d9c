"""Outcomes of a solve, readable under `jit` and `vmap` (diffrax's `RESULTS` pattern).

Every solution carries `result`, an item of `RESULTS`. Outside `vmap` the solvers raise on a
failed outcome by default (`throw=True`, through `eqx.error_if`, so it also works under `jit`);
under `vmap` pass `throw=False` and read `sol.result` per batch member.

One divergence rule serves the theory, the networks and the simulations (`diverged_rows`): a
row counts as diverged when a tracked value is non-finite, when a correlation leaves [-1, 1]
by more than `CORRELATION_TOLERANCE`, or when the train error has grown beyond
`DIVERGENCE_FACTOR` times (1 + its initial value).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

#: |C(t, s)| may exceed 1 by at most this much before a solve counts as diverged. The rule
#: detects blow-ups, not inaccuracy: a correlation that converges to 1 (weights that stop
#: moving) sits within the solve's own error of 1 (measured: 1 + 2e-5 in an accurate adaptive
#: lazy solve, m = 256, rtol 1e-4, t = 32, which 1e-6 stopped as diverged); a blow-up passes
#: 1e-3 within a few steps (1.00015 -> 1.0012 in three steps in the same solve at t = 48).
CORRELATION_TOLERANCE = 1e-3

#: e_tr(t) > DIVERGENCE_FACTOR * (1 + e_tr(0)) counts as diverged (theory, networks, simulations).
DIVERGENCE_FACTOR = 1e3


class RESULTS(eqx.Enumeration):
    """Outcome of a solve (`sol.result`)."""

    successful = ""
    diverged = ("the solve diverged: a value became non-finite, a correlation left [-1, 1] or "
                "the train error grew 1000-fold; reduce the step (or the tolerance)")
    max_steps_reached = ("the maximum number of steps was reached before t_max; raise max_steps "
                         "or loosen rtol/atol")
    step_too_small = ("the adaptive step fell below dt_min: the problem is too stiff or "
                      "diverging at this tolerance")
    not_converged = "a fixed-point iteration did not converge within its iteration limit"
    history_decimated = ("reverse mode through an adaptive solve replays its accepted steps, "
                         "which needs the whole history: raise `history` above the number of "
                         "steps, or use forward mode")
    history_too_coarse = ("the bounded history had to drop stored times that linear "
                          "interpolation does not reproduce within the tolerance "
                          "(stats['decimation_error'] > max_decimation_error): raise `history`, "
                          "or accept a coarser history with a larger max_decimation_error")
    invalid_input = ("invalid parameter values (e.g. a negative alpha, tau or step, or a "
                     "non-increasing time grid) were passed inside jit/vmap")


def diverged_rows(e_tr: Array, *values: Array, correlations: Array | None = None) -> Array:
    """Boolean over the leading (time) axis: the one divergence rule of the project.

    `e_tr` (T,) the train error; `values` arrays with leading axis T that must stay finite;
    `correlations` (T, ...) values that must stay in [-1, 1] (up to `CORRELATION_TOLERANCE`).
    """
    bad = ~jnp.isfinite(e_tr)
    bad |= e_tr > DIVERGENCE_FACTOR * (1.0 + jnp.abs(e_tr[0]))
    for x in values:
        x = jnp.reshape(x, (x.shape[0], -1))
        bad |= ~jnp.all(jnp.isfinite(x), axis=1)
    if correlations is not None:
        c = jnp.reshape(correlations, (correlations.shape[0], -1))
        bad |= ~jnp.all(jnp.abs(c) <= 1.0 + CORRELATION_TOLERANCE, axis=1)   # NaN counts too
    return bad
