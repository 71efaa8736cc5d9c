"""How a causal history advances by one step: quadrature rules and steppers.

A model (`dmft_jax._integrate.AbstractModel`) supplies, for row n of its history, the values
that advance ("front") and their time derivative ("rate"). It never sees a step size: the
integrals over the past that it needs,

    int_0^{t_n} f(s) ds  ~  sum_l w_l f(t_l)  +  jump terms,

use the weights of a `RowWeights`, which the stepper's `Quadrature` builds from the stored
times. Each interval [t_l, t_{l+1}] of length h_l gives `theta_left * h_l` to its left point
and `theta_right * h_l` to its right point:

* Euler (spec section 6): theta = (1, 0), left Riemann sums, the delta of R counted as the
  step R(t_n + dt, t_n) = I after the step, and the responses' diagonal values R(t, t) = 0 at
  the ends of the integrals. O(dt) [D.8].
* Trapezoid: theta = (1/2, 1/2), with the jump values R(t^+, t) = I (and r_A(t^+, t)) at the
  ends of the integrals: second order on any increasing grid. A model whose responses fall
  from their jumps faster than a step resolves (the DMFT under lazy initialization, within
  ~1/(alpha m gamma^2 h'(1))) corrects the interval next to each diagonal end with an
  exponentially fitted rule (`dmft_jax._volterra.fitted_end`, `fit_row_weights`).

Steppers (`AbstractStepper`): `Euler` (forward Euler), `Trapezoid` (a second-order
exponential predictor-corrector whose stiff part, the instantaneous memory term of spec
section 6, is integrated exactly; with an embedded first-order error estimate for adaptive
stepping), and `Map` (the model returns the next row itself: an exact discrete-time
recursion).

Invariant every stepper keeps (the reverse-mode adjoint relies on it): step n writes the
auxiliaries of row n and the advancing quantities of row n + 1, each entry once; anything a
step writes provisionally (a predicted row) is cleared before it returns.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from ._results import RESULTS


# ------------------------------------------------------------------------------ quadrature
class RowWeights(eqx.Module):
    """Quadrature weights for the integrals of row n over the stored times.

    **Fields** (arrays of the history length L unless scalar):

    - `w`: weight of the point value f(t_l) in int_0^{t_n} f (zero for l > n). It is also the
      right interior weight for any sub-range [t_k, t_n] or [0, t_k] whose ends carry zero
      point values (the responses' stored diagonal R(t, t) = 0); their ends enter through:
    - `upper`: weight of the jump value at the upper end s = t_n of int_0^{t_n}
      (e.g. R(t_n, t_n^-) = I);
    - `lower`: `lower[k]` the weight of the jump value at the lower end s = t_k of
      int_{t_k}^{t_n} (e.g. R(t_k^+, t_k) = I);
    - `upper_at`: `upper_at[k]` the weight of the jump value at the upper end s = t_k of
      int_0^{t_k};
    - `h`: the interval lengths h[l] = t_{l+1} - t_l for l < n (zero beyond), for error
      estimates of the quadratures (`dmft_jax._volterra.diagonal_error`);
    - `jumps`: static, True if the jump values enter the front (the value of R(t_n^+, t_n) = I
      is part of row n and advances with the rate); False for Euler, which applies the jump
      after its step.
    """

    w: Array
    upper: Array
    lower: Array
    upper_at: Array
    h: Array
    jumps: bool = eqx.field(static=True)


class Quadrature(eqx.Module):
    """Interval weights (theta_left, theta_right) and whether jump values are used."""

    theta_left: float = eqx.field(static=True)
    theta_right: float = eqx.field(static=True)
    jumps: bool = eqx.field(static=True)

    def weights(self, ts: Array, n) -> RowWeights:
        """The `RowWeights` of row n on the stored times `ts` (entries beyond n ignored)."""
        size = ts.shape[0]
        idx = jnp.arange(size)
        h = jnp.concatenate([jnp.diff(ts), jnp.zeros((1,), ts.dtype)])     # h[l] = t_{l+1} - t_l
        h_prev = jnp.concatenate([jnp.zeros((1,), ts.dtype), h[:-1]])        # h[l - 1]
        h = jnp.where(idx < n, h, 0.0)
        left = self.theta_left * h
        right = jnp.where((idx >= 1) & (idx <= n), self.theta_right * h_prev, 0.0)
        zero = jnp.zeros((), ts.dtype)
        if not self.jumps:
            return RowWeights(w=left + right, upper=zero, lower=jnp.zeros_like(left),
                              upper_at=jnp.zeros_like(left), h=h, jumps=False)
        upper = jnp.where(n >= 1, self.theta_right * h_prev[jnp.minimum(n, size - 1)], 0.0)
        return RowWeights(w=left + right, upper=upper, lower=left, upper_at=right, h=h,
                          jumps=True)


EULER_QUADRATURE = Quadrature(1.0, 0.0, False)
TRAPEZOID_QUADRATURE = Quadrature(0.5, 0.5, True)


# ------------------------------------------------------------------------------ model rows
class Row(NamedTuple):
    """What a model returns for row n.

    `front`: the values at t_n that advance (a pytree, e.g. dict); `rate`: their time
    derivative; `after`: increments applied after an Euler step (the jumps, when the weights
    have `jumps=False`; zeros otherwise); `stiff`: an `AbstractStiff` (the instantaneous
    linear part -K y of the rate, integrated exactly by `Trapezoid`) or None.
    """

    front: Any
    rate: Any
    after: Any
    stiff: Any


class AbstractStiff(eqx.Module):
    """The stiff linear part of a rate: f = -K y + g on some leaves of the front.

    `phi(k, h, tree)` applies phi_k(-h K) (phi_0 = exp, phi_1(z) = (e^z - 1)/z,
    phi_2(z) = (e^z - 1 - z)/z^2) to the stiff leaves and phi_k(0) to the others;
    `times(tree)` is K y on the stiff leaves and 0 on the others; `mean(other)` averages two
    operators (the midpoint rule for a K that changes over the step).
    """

    @abc.abstractmethod
    def phi(self, k: int, h, tree):
        ...

    @abc.abstractmethod
    def times(self, tree):
        ...

    def mean(self, other: "AbstractStiff") -> "AbstractStiff":
        params, static = eqx.partition(self, eqx.is_inexact_array)
        other_params, _ = eqx.partition(other, eqx.is_inexact_array)
        return eqx.combine(jtu.tree_map(lambda x, y: 0.5 * (x + y), params, other_params), static)


def phi_matrices(a: Array) -> tuple[Array, Array, Array]:
    """(phi_0(A), phi_1(A), phi_2(A)) of a small square matrix A, from one exponential of the
    block matrix [[A, I, 0], [0, 0, I], [0, 0, 0]] (Higham): exact, and with correct
    derivatives also where eigenvalues coincide."""
    g = a.shape[0]
    eye, zero = jnp.eye(g, dtype=a.dtype), jnp.zeros((g, g), a.dtype)
    e = jax.scipy.linalg.expm(jnp.block([[a, eye, zero], [zero, zero, eye],
                                         [zero, zero, zero]]))
    return e[:g, :g], e[:g, g:2 * g], e[:g, 2 * g:]


class GroupStiff(AbstractStiff):
    """A stiff part -K y acting on groups of leaves: for each group of `keys`, the leaves
    stacked along a new first axis y = (y_1, ..., y_g) obey dy/dt = -K y + ..., K (g, g).

    Used by the reduced theories (e.g. H.2, where the delta part of M^R_o couples (C_d, C_o)
    and (R_d, R_o)); a scalar theory has 1 x 1 groups.
    """

    keys: tuple
    K: tuple

    def phi(self, k, h, tree):
        out = {key: _PHI_AT_ZERO[k] * y for key, y in tree.items()}
        for keys, mat in zip(self.keys, self.K):
            phis = phi_matrices(-h * mat)
            ys = jnp.stack([tree[key] for key in keys])
            zs = jnp.tensordot(phis[k], ys, axes=1)
            out.update({key: z for key, z in zip(keys, zs)})
        return out

    def times(self, tree):
        out = {key: jnp.zeros_like(y) for key, y in tree.items()}
        for keys, mat in zip(self.keys, self.K):
            zs = jnp.tensordot(mat, jnp.stack([tree[key] for key in keys]), axes=1)
            out.update({key: z for key, z in zip(keys, zs)})
        return out


_SERIES = 1e-3   # |z| below which phi_1, phi_2 use their Taylor series (error < z^4 / 120)


def phi_scalar(k: int, z: Array) -> Array:
    """phi_k(z) elementwise for k = 0, 1, 2, accurate near z = 0 and with finite gradients."""
    if k == 0:
        return jnp.exp(z)
    small = jnp.abs(z) < _SERIES
    zs = jnp.where(small, jnp.ones_like(z), z)          # double where: finite gradients
    if k == 1:
        exact = jnp.expm1(zs) / zs
        series = 1.0 + z / 2.0 + z**2 / 6.0 + z**3 / 24.0
    elif k == 2:
        exact = (jnp.expm1(zs) - zs) / zs**2
        series = 0.5 + z / 6.0 + z**2 / 24.0 + z**3 / 120.0
    else:
        raise ValueError(f"phi_k is implemented for k = 0, 1, 2, got {k}")
    return jnp.where(small, series, exact)


_PHI_AT_ZERO = {0: 1.0, 1: 1.0, 2: 0.5}


def _phi(stiff, k, h, tree):
    if stiff is None:
        return jtu.tree_map(lambda x: _PHI_AT_ZERO[k] * x, tree)
    return stiff.phi(k, h, tree)


def _times(stiff, tree):
    if stiff is None:
        return jtu.tree_map(jnp.zeros_like, tree)
    return stiff.times(tree)


# ------------------------------------------------------------------------------ steppers
def _add(*trees):
    return jtu.tree_map(lambda *x: sum(x[1:], x[0]), *trees)


def _scale(c, tree):
    return jtu.tree_map(lambda x: c * x, tree)


class Step(NamedTuple):
    """Result of one `AbstractStepper.step`: the state with step n written, the new row
    (front of row n + 1), the local error estimate (or None), a `RESULTS` item, and `aux`:
    None or the pair (error, value) of an auxiliary of row n + 1 that the step-size control
    also bounds (`AbstractModel.aux_error`)."""

    state: Any
    new: Any
    error: Any
    result: Any
    aux: Any = None


class AbstractStepper(eqx.Module):
    """How row n + 1 is computed from the history up to row n.

    `quadrature` gives the weights the model's integrals use. `step(model, n, state, ts)`
    advances from ts[n] to ts[n + 1] (both set in `ts`); it writes the auxiliaries of row n and
    the advancing quantities of row n + 1, and nothing else (see the module docstring).
    """

    quadrature: eqx.AbstractVar[Quadrature]

    @abc.abstractmethod
    def order(self) -> int:
        """Global order of accuracy in the step size."""

    @abc.abstractmethod
    def step(self, model, n, state, ts: Array) -> Step:
        ...

    def error_order(self) -> int | None:
        """Order of the embedded error estimate (None: no estimate, fixed grids only)."""
        return None


class Euler(AbstractStepper):
    """Forward Euler, y_{n+1} = y_n + h f(t_n, history): the scheme of spec section 6.

    Left Riemann sums for the memory integrals; the delta of R enters as the jump
    R(t_n + h, t_n) = I applied after the step. Its global error is O(h) [D.8].
    """

    quadrature: Quadrature = EULER_QUADRATURE

    def order(self) -> int:
        return 1

    def step(self, model, n, state, ts):
        h = ts[n + 1] - ts[n]
        state, row = model.row(n, state, self.quadrature.weights(ts, n))
        new = _add(row.front, _scale(h, row.rate), row.after)
        return Step(model.write(n + 1, state, new), new, None, RESULTS.successful)


class Trapezoid(AbstractStepper):
    """Second-order exponential predictor-corrector (ETD2) with trapezoidal quadrature.

    With the rate split as f = -K y + g (K the instantaneous linear part, `Row.stiff`: the
    delta term of M^R with nu in the DMFT, spec section 6; zero for models without one):

        predictor   y*      = y_n + h phi_1(-h K_n) f_n                               (ETD1)
        corrector   y_{n+1} = y_n + h phi_1(-h K) f_n
                              + h phi_2(-h K) [f(y*) - f_n + K (y* - y_n)],  K = (K_n + K*)/2

    This is Heun's trapezoidal method when K = 0 and integrates the stiff linear decay exactly,
    so the step is not bound by 1/K. The memory integrals use trapezoidal weights with the
    jump values R(t^+, t) = I at their ends. `y_{n+1} - y*` estimates the local error of the
    first-order predictor (`error_order` 1) for the step-size controller; with it goes the
    model's estimate of the quadrature error of an auxiliary of row n + 1 (`aux`: the train
    error's C_A(t, t) in the DMFT family), which the predictor-corrector difference cannot see.

    `corrections`: number of corrector passes (1 = PECE).
    """

    quadrature: Quadrature = TRAPEZOID_QUADRATURE
    corrections: int = eqx.field(static=True, default=1)

    def order(self) -> int:
        return 2

    def error_order(self) -> int:
        return 1

    def step(self, model, n, state, ts):
        h = ts[n + 1] - ts[n]
        state, row0 = model.row(n, state, self.quadrature.weights(ts, n))
        y0, f0 = row0.front, row0.rate
        pred = _add(y0, _scale(h, _phi(row0.stiff, 1, h, f0)))
        w1 = self.quadrature.weights(ts, n + 1)
        new, prov = pred, state
        for _ in range(self.corrections):
            prov = model.write(n + 1, prov, new)
            prov, row1 = model.row(n + 1, prov, w1)
            stiff = row0.stiff if row0.stiff is None else row0.stiff.mean(row1.stiff)
            delta = _add(model.mask(n, row1.rate), _scale(-1.0, f0),
                         _times(stiff, _add(new, _scale(-1.0, y0))))
            new = _add(y0, _scale(h, _phi(stiff, 1, h, f0)), _scale(h, _phi(stiff, 2, h, delta)))
        aux = model.aux_error(n + 1, prov)            # before clear_aux removes row n + 1's
        state = model.clear_aux(n + 1, model.write(n + 1, prov, new))
        error = _add(new, _scale(-1.0, pred))
        return Step(state, new, error, RESULTS.successful, aux)


class Map(AbstractStepper):
    """An exact discrete-time recursion: the model's `next(n, state, weights, h)` returns row
    n + 1 itself (no rate, no discretization error); the quadrature weights are the step
    lengths (left sums), so a sum over past steps is sum_l w_l f_l."""

    quadrature: Quadrature = EULER_QUADRATURE

    def order(self) -> int:
        return 0

    def step(self, model, n, state, ts):
        h = ts[n + 1] - ts[n]
        state, new = model.next(n, state, self.quadrature.weights(ts, n), h)
        return Step(model.write(n + 1, state, new), new, None, RESULTS.successful)


def error_norm(error, new, old, rtol, atol) -> Array:
    """max over the leaves of max |error| / (atol + rtol max(|new|, |old|)), the maxima taken
    over each leaf (norm-wise relative error: a two-time row is one vector, so that its small
    entries, e.g. the newest column of a response, are not held to their own relative
    accuracy)."""
    def one(e, y1, y0):
        size = jnp.maximum(jnp.max(jnp.abs(y1), initial=0.0), jnp.max(jnp.abs(y0), initial=0.0))
        return jnp.max(jnp.abs(e), initial=0.0) / (atol + rtol * size)
    parts = jtu.tree_leaves(jtu.tree_map(one, error, new, old))
    out = jnp.max(jnp.stack(parts)) if parts else jnp.zeros(())
    return jnp.where(jnp.isfinite(out), out, jnp.inf)


def stop_gradient_tree(tree):
    return jtu.tree_map(jax.lax.stop_gradient, tree)
