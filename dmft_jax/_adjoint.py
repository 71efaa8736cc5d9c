"""Exact derivatives of DMFT observables with respect to hyperparameters.

Two ways through the N steps of `integrate`, both with O(N^2) memory:

* **forward mode** (`mode="forward"`): `jax.jvp` through the ordinary loop, one compiled
  pass per scalar parameter entry, run one after another (a `vmap` over the tangents, i.e.
  `jax.jacfwd`, was several times slower per tangent on CPU); best for a few parameters.
* **reverse mode** (`mode="reverse"`): `adjoint_final_state`, a `jax.custom_vjp` whose backward
  pass walks the steps in reverse. It never stores per-step copies of the history: every entry
  of every buffer is written exactly once (the auxiliaries R_A, C_A, nu, rho of row n by
  `model.row(n)`, the advancing quantities a, v, C, R of row n+1 by `model.write(n+1)`; C and
  C_A also get their column), so the state *before* step n is the final history with the
  entries written by steps >= n masked to zero (`state_before`). The backward pass peels
  those entries off the final history one step at a time (`unwrite`, O(L) work per step),
  and applies `jax.vjp` of one Euler step to each rebuilt state, accumulating the parameter
  cotangents. The final `model.row(N)` is step N of that loop (its writes of row N + 1 fall
  outside the buffers and are dropped).
  A function built on it is reverse-mode differentiable only (`custom_vjp` has no JVP rule):
  use `mode="forward"` for `jvp`.

Measured cost on a 2-core CPU (benchmarks/results/grad_cost.md, N = 512-1024, float64):
reverse ~11-14x a solve whatever the number of parameters; forward ~5-6x a solve per
parameter. XLA inserts full copies of the history buffers in the JVP and VJP loop bodies
(none in the solve's body), so these constants are not intrinsic.

Reverse-mode memory: with B two-time buffers of L x L = (N+1)^2 words (B = 6 for the
symmetric DMFT: C_d, C_o, R_d, R_o, R_A, C_A; B = 2 m^2 + 2 for the general one), the live
arrays are the final history (B L^2, the only residual of the forward pass), its cotangent
(B L^2), the state before the current step (B L^2, peeled in place) and the temporaries of
one step's VJP (a few L^2 per buffer): c B L^2 words with c a small constant, i.e. O(N^2); plain
`jax.grad` through the loop stores every step's carry, ~B L^3 words (O(N^3)). The causal
chunking of `integrate` is mirrored: chunk [lo, hi) of the backward pass runs on the leading
(hi+1) x (hi+1) block.

Hyperparameters are addressed by name (`wrt`), each a perturbation added to the model:

=============  ==============================================================================
name           derivative with respect to
=============  ==============================================================================
`a0`           a_i(0) (shape (): symmetric; (m,): general, one entry per neuron)
`gamma0`       gamma0 = a0 / sqrt(m) (lazy scale; d/d gamma0 = sqrt(m) d/d a0)
`tau`          the label-noise level tau
`alpha`        alpha = n / (m d) (alpha_bar = alpha m moves with it)
`alpha_bar`    alpha_bar = n / d
`h`, `h<p>`    the Taylor coefficients of h (all of them, or c_p; p past the end is a zero
               coefficient), target (phihat, ||phi||^2) held fixed
`phihat`,      the Taylor coefficients of phihat (all, or c_p; shape (k,) for k > 1, one per
`phihat<p>`    index direction), h and ||phi||^2 held fixed
`norm2`        ||phi||^2
`dt`           the time step at a fixed number of steps N (so t_N = N dt moves too)
=============  ==============================================================================
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._covariance import Polynomial
from ._grid import TimeGrid
from ._integrate import (
    AbstractModel,
    Adaptive,
    _fixed,
    _pad_records,
    adaptive_finish,
    adaptive_init,
    adaptive_advance,
    chunk_bounds,
)
from ._results import RESULTS
from ._stepper import AbstractStepper, Euler, Map, Trapezoid

MODES = ("forward", "reverse")


# ------------------------------------------------------------------------- the final history
def final_state(model: AbstractModel, grid: TimeGrid, stepper: AbstractStepper,
                chunks: int | None = None) -> dict:
    """The completed history of a fixed-grid solve (rows 0..N, auxiliaries of row N included)."""
    return _fixed(model, grid, stepper, False, "", chunks)


def state_before(model: AbstractModel, state: dict, n) -> dict:
    """The history as it was before step n, rebuilt from the final history `state`.

    Step n writes row n of the auxiliaries and row n + 1 of the advancing quantities (and the
    matching columns of symmetric buffers), and no entry is written by two steps with different
    values. So before step n the advancing buffers hold their final values at time indices
    <= n, the auxiliaries at indices < n, and zeros (their initial value) elsewhere. With
    n = N this is the state before the final `model.row(N)`.
    """
    out, advancing = dict(state), model.advancing()
    for key, k in model.time_axes().items():
        limit = n + 1 if key in advancing else n

        def mask(x, k=k, limit=limit):
            keep = jnp.ones((), bool)
            for axis in range(x.ndim - k, x.ndim):
                idx = jnp.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - 1 - axis))
                keep = keep & (idx < limit)
            return jnp.where(keep, x, jnp.zeros_like(x))

        out[key] = jtu.tree_map(mask, state[key])
    return out


def unwrite(model: AbstractModel, state: dict, n) -> dict:
    """The state before step n from the state after it: zero what step n wrote.

    That is index n + 1 of the advancing buffers and index n of the auxiliaries, along every
    time axis (a row and, for two-time buffers, a column: the column's entries past the row
    were written by later steps and are already zero). O(L) per buffer, in place in a loop.
    """
    out, advancing = dict(state), model.advancing()
    for key, k in model.time_axes().items():
        idx = n + 1 if key in advancing else n

        def clear(x, k=k, idx=idx):
            for axis in range(x.ndim - k, x.ndim):
                where = (slice(None),) * axis + (idx,)
                x = x.at[where].set(jnp.zeros((), x.dtype))
            return x

        out[key] = jtu.tree_map(clear, state[key])
    return out


def _tree_add(x, y):
    return jtu.tree_map(jnp.add, x, y)


def _backward(params, static, final: dict, bar: dict, chunks):
    """Cotangent of the (inexact-array) parameters given the cotangent `bar` of the history.

    The carry holds the state before the current step, peeled off the final history one
    step at a time (`unwrite`), and the cotangents of the state and of the parameters. The
    stepper (part of `static`/`params`) is the one of the forward pass: it must keep the
    write-once invariant of `dmft_jax._stepper`.
    """
    model, grid, stepper = eqx.combine(params, static)
    steps = grid.steps

    def step(p, n, s):
        mod, grd, stp = eqx.combine(p, static)
        return stp.step(mod, n, s, grd.ts[:_time_length(mod, s)]).state

    def body(n, carry):
        acc, b, s = carry
        s = unwrite(model, s, n)
        _, pull = jax.vjp(lambda p, s: step(p, n, s), params, s)
        dp, b = pull(b)
        return _tree_add(acc, dp), b, s

    # The final `model.row(N)` wrote the auxiliaries of row N only.
    def last_row(p, s):
        mod, grd, stp = eqx.combine(p, static)
        return mod.row(steps, s, stp.quadrature.weights(grd.ts, steps))[0]

    state = model.clear_aux(steps, final)
    _, pull = jax.vjp(last_row, params, state)
    p_bar, bar = pull(bar)
    for lo, hi in reversed(chunk_bounds(steps, chunks)):
        full = hi + 1 >= grid.size
        top = hi - 1
        carry = (p_bar, bar, state) if full else (p_bar, model.window(bar, hi + 1),
                                                  model.window(state, hi + 1))
        p_bar, b, s = jax.lax.fori_loop(0, top - lo + 1, lambda j, c, top=top: body(top - j, c),
                                        carry)
        bar, state = (b, s) if full else (model.unwindow(bar, b), model.unwindow(state, s))

    def init(p):
        mod, grd, _ = eqx.combine(p, static)
        return mod.init(grd.size)

    _, pull_init = jax.vjp(init, params)
    return _tree_add(p_bar, pull_init(bar)[0])


def _time_length(model: AbstractModel, state: dict) -> int:
    """Number of stored times of a (possibly windowed) history."""
    key = next(iter(model.time_axes()))
    return jtu.tree_leaves(state[key])[0].shape[-1]


def adjoint_final_state(model: AbstractModel, grid: TimeGrid, stepper: AbstractStepper,
                        chunks: int | None = None) -> dict:
    """`final_state` whose reverse-mode derivative is the O(N^2)-memory adjoint loop.

    Differentiable (reverse mode only) in every inexact array of `model` and `grid`.
    """
    params, static = eqx.partition((model, grid, stepper), eqx.is_inexact_array)

    @jax.custom_vjp
    def run(p):
        return final_state(*eqx.combine(p, static), chunks=chunks)

    def fwd(p):
        out = final_state(*eqx.combine(p, static), chunks=chunks)
        return out, (p, out)

    def bwd(res, bar):
        p, out = res
        return (_backward(p, static, out, bar, chunks),)

    run.defvjp(fwd, bwd)
    return run(params)


def differentiable_solve(model: AbstractModel, times, mode: str = "reverse",
                         chunks: int | None = None, stepper: AbstractStepper | None = None):
    """The solution of `model` on `times`, differentiable in `mode`.

    Fixed grid (`TimeGrid`, default stepper `Euler()`): `mode="reverse"` is built on
    `adjoint_final_state` (O(N^2)-memory `jax.grad`/`vjp`, no JVP); `mode="forward"` is the
    plain loop (for `jax.jvp`/`jacfwd`; O(N^3) memory under grad).

    Adaptive (`Adaptive`, default stepper `Trapezoid()`): the step sizes are the controller's
    decisions and are not differentiated (as in diffrax). Forward mode differentiates the
    adaptive loop itself (with its bounded history). Reverse mode solves adaptively once,
    without gradients, then replays the accepted steps as a fixed grid of `max_steps + 1`
    times (padded with empty steps) through the O(N^2)-memory adjoint: the same discrete
    solution as long as the history was never decimated (`history > accepted steps`),
    which is checked (a decimated solve raises; use forward mode there).
    """
    _check_mode(mode)
    if isinstance(times, Adaptive):
        stepper = Trapezoid() if stepper is None else stepper
        if mode == "forward":
            carry = adaptive_advance(model, times, stepper, adaptive_init(model, times, stepper))
            return adaptive_finish(model, times, stepper, carry)
        return _replayed(model, times, stepper, 1 if chunks is None else chunks)
    if stepper is None:
        stepper = Map() if getattr(model, "discrete", False) else Euler()
    if mode == "forward":
        return model.solution(final_state(model, times, stepper, chunks), times.ts)
    return model.solution(adjoint_final_state(model, times, stepper, chunks), times.ts)


def _replayed(model: AbstractModel, ctrl: Adaptive, stepper: AbstractStepper, chunks):
    """Reverse mode through an adaptive solve: the accepted steps replayed on a fixed grid."""
    frozen = jax.lax.stop_gradient
    carry = adaptive_advance(model, ctrl, stepper, adaptive_init(model, ctrl, stepper))
    count = carry.accepted
    t = frozen(carry.records["t"].at[count].set(carry.ts[carry.n]))
    idx = jnp.arange(t.shape[0])
    ts = jnp.where(idx <= count, t, t[count])               # empty steps after the end
    # A fixed grid on these times (repeated times are empty steps: not a valid TimeGrid for
    # users, fine for the loop, which only reads differences).
    grid = eqx.tree_at(lambda g: g.ts, TimeGrid(1.0, ts.shape[0] - 1), ts)
    state = adjoint_final_state(model, grid, stepper, chunks)
    sol = _pad_solution(model.solution(state, ts), count)
    result = RESULTS.where((carry.result == RESULTS.successful) & (carry.decimations > 0),
                           RESULTS.history_decimated, carry.result)
    stats = dict(accepted=count, rejected=carry.rejected, stored=count + 1,
                 decimations=carry.decimations, decimation_error=carry.decimation_error)
    sol = eqx.tree_at(lambda s: (s.result, s.stats), sol, (result, stats),
                      is_leaf=lambda x: x is None)
    return result.error_if(sol, result != RESULTS.successful)


def _pad_solution(sol, count):
    """A replayed solution's one-time series with t = +inf past step `count` (like an
    adaptive solve's records)."""
    names = [f.name for f in dataclasses.fields(sol)
             if f.name not in ("t_stored", "algebra", "result", "stats")]
    one_time = {name: getattr(sol, name) for name in names
                if jnp.ndim(getattr(sol, name)) >= 1
                and jnp.shape(getattr(sol, name))[0] == sol.t.shape[0]
                and name not in ("C", "R", "C_A", "R_A", "C_d", "C_o", "R_d", "R_o")}
    padded = _pad_records(one_time, count)
    return eqx.tree_at(lambda s: [getattr(s, k) for k in padded], sol, list(padded.values()))


# ------------------------------------------------------------------------------ parameters
def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")


def _polynomial(kernel, what: str) -> Polynomial:
    if not isinstance(kernel, Polynomial):
        raise ValueError(f"{what} coefficients need a polynomial kernel (Taylor coefficients), "
                         f"got {type(kernel).__name__}")
    return kernel


def _padded(coeffs, size: int):
    return coeffs if coeffs.shape[0] >= size else jnp.pad(coeffs, (0, size - coeffs.shape[0]))


def _set_h(model, grid, delta, p):
    coeffs = _polynomial(model.h, "h").coeffs
    coeffs = _padded(coeffs, 1 if p is None else p + 1)
    coeffs = coeffs + delta if p is None else coeffs.at[p].add(delta)
    return eqx.tree_at(lambda mod: mod.h.coeffs, model, coeffs), grid


def _set_phihat(model, grid, delta, p):
    kernels = [_polynomial(kern, "phihat") for kern in model.target.kernels]
    size = max(kern.coeffs.shape[0] for kern in kernels) if p is None else p + 1
    new = []
    for j, kern in enumerate(kernels):
        d = delta[j] if model.k > 1 else delta
        c = _padded(kern.coeffs, size)
        new.append(Polynomial(c + d if p is None else c.at[p].add(d)))
    return eqx.tree_at(lambda mod: mod.target.kernels, model, tuple(new)), grid


def _shape_of(model, grid, name: str, p):
    if name in ("a0", "gamma0"):
        return jnp.shape(model.a0)
    if name == "h":
        shape = _polynomial(model.h, "h").coeffs.shape
        return shape if p is None else ()
    if name == "phihat":
        kernels = [_polynomial(kern, "phihat") for kern in model.target.kernels]
        n = max(kern.coeffs.shape[0] for kern in kernels)
        if p is None:
            return (model.k, n) if model.k > 1 else (n,)
        return (model.k,) if model.k > 1 else ()
    return ()


def _perturb(model, grid, name: str, p, delta):
    """(model, grid) with the parameter `name` (coefficient p) moved by `delta`."""
    sqrt_m = jnp.sqrt(jnp.asarray(model.m, jnp.result_type(delta)))
    add = {
        "a0": lambda: (eqx.tree_at(lambda mod: mod.a0, model, model.a0 + delta), grid),
        "gamma0": lambda: (eqx.tree_at(lambda mod: mod.a0, model, model.a0 + sqrt_m * delta),
                           grid),
        "tau": lambda: (eqx.tree_at(lambda mod: mod.tau, model, model.tau + delta), grid),
        "alpha_bar": lambda: (eqx.tree_at(lambda mod: mod.alpha_bar, model,
                                          model.alpha_bar + delta), grid),
        "alpha": lambda: (eqx.tree_at(lambda mod: mod.alpha_bar, model,
                                      model.alpha_bar + model.m * delta), grid),
        "norm2": lambda: (eqx.tree_at(lambda mod: mod.target.norm2, model,
                                      model.target.norm2 + delta), grid),
        "dt": lambda: (model, grid.scaled(1.0 + delta / grid.dt)),
        "h": lambda: _set_h(model, grid, delta, p),
        "phihat": lambda: _set_phihat(model, grid, delta, p),
    }
    return add[name]()


_NAME = re.compile(r"^(a0|gamma0|tau|alpha|alpha_bar|norm2|dt|h|phihat)(\d*)$")
#: Accepted spellings for `wrt` (plus h<p>, phihat<p> for a coefficient index p).
WRT_NAMES = ("a0", "gamma0", "tau", "alpha", "alpha_bar", "norm2", "dt", "h", "phihat")


def parse_wrt(wrt: str | Sequence[str]) -> tuple[str, ...]:
    """Validate `wrt` ("a0,tau" or a sequence); ValueError naming the first unknown name."""
    names = tuple(x.strip() for x in (wrt.split(",") if isinstance(wrt, str) else wrt)
                  if x.strip())
    if not names:
        raise ValueError("wrt is empty: name at least one parameter")
    for name in names:
        match = _NAME.match(name)
        if match is None or (match.group(2) and match.group(1) not in ("h", "phihat")):
            raise ValueError(f"unknown parameter {name!r} (known: {', '.join(WRT_NAMES)}, "
                             "h<p>, phihat<p> for the Taylor coefficient of q^p)")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated parameter in {list(names)}")
    return names


def _split(name: str):
    match = _NAME.match(name)
    return match.group(1), (int(match.group(2)) if match.group(2) else None)


def zero_perturbations(model, grid, wrt: Sequence[str]) -> dict:
    """Zero perturbation arrays, one per name in `wrt`, shaped like the parameter."""
    dtype = jnp.result_type(float, model.tau)
    out = {}
    for name in parse_wrt(wrt):
        if name == "dt" and not isinstance(grid, TimeGrid):
            raise ValueError("dt is a parameter of fixed grids only: an adaptive solve "
                             "chooses its steps")
        base, p = _split(name)
        out[name] = jnp.zeros(_shape_of(model, grid, base, p), dtype)
    return out


def perturbed(model, grid, deltas: dict):
    """(model, grid) with each named parameter moved by deltas[name] (see the module table)."""
    for name, delta in deltas.items():
        base, p = _split(name)
        model, grid = _perturb(model, grid, base, p, delta)
    return model, grid


def parameter_values(model, grid, wrt: Sequence[str]) -> dict:
    """The current values of the named parameters (e.g. for reporting or gradient steps)."""
    values = {}
    for name in parse_wrt(wrt):
        base, p = _split(name)
        if base in ("a0", "tau", "alpha_bar", "alpha", "dt"):
            values[name] = {"a0": model.a0, "tau": model.tau, "alpha_bar": model.alpha_bar,
                            "alpha": model.alpha, "dt": grid.dt}[base]
        elif base == "gamma0":
            values[name] = model.a0 / jnp.sqrt(model.m)
        elif base == "norm2":
            values[name] = model.target.norm2
        elif base == "h":
            c = _padded(_polynomial(model.h, "h").coeffs, 0 if p is None else p + 1)
            values[name] = c if p is None else c[p]
        else:
            cs = [_padded(_polynomial(kern, "phihat").coeffs, 0 if p is None else p + 1)
                  for kern in model.target.kernels]
            vals = jnp.stack([c if p is None else c[p] for c in cs])
            values[name] = vals if model.k > 1 else vals[0]
    return values


# ----------------------------------------------------------------------------- entry points
def objective(observable: Callable, model, grid, wrt, mode: str = "reverse",
              chunks: int | None = None, stepper=None) -> tuple[Callable, dict]:
    """`(f, zeros)`: f(deltas) = observable(solution with the named parameters moved by
    deltas), differentiable in `mode`, and the zero perturbations (f(zeros) is the base value).

    Finite differences of the solver itself are f evaluated at small deltas.
    """
    _check_mode(mode)
    zeros = zero_perturbations(model, grid, wrt)

    def f(deltas):
        mod, grd = perturbed(model, grid, deltas)
        return observable(differentiable_solve(mod, grd, mode, chunks, stepper))

    return f, zeros


def _with_value(f):
    def g(d):
        y = f(d)
        return y, y
    return g


@eqx.filter_jit
def value_and_jvp(observable: Callable, model, grid, wrt, tangent: dict,
                  chunks: int | None = None, stepper=None):
    """The observable and its directional derivative along `tangent` (forward mode).

    `tangent` maps each name of `wrt` to an array shaped like the parameter (e.g. the
    `zero_perturbations` with one entry set to 1). O(N^2) memory (about 2.4x a solve's
    temporaries). The observable may be array-valued.
    """
    f, zeros = objective(observable, model, grid, wrt, "forward", chunks, stepper)
    return jax.jvp(f, (zeros,), (tangent,))


@eqx.filter_jit
def _reverse(observable, model, grid, wrt, chunks, jacobian, stepper=None):
    f, zeros = objective(observable, model, grid, wrt, "reverse", chunks, stepper)
    if jacobian:
        jac, value = jax.jacrev(_with_value(f), has_aux=True)(zeros)
        return value, jac
    return jax.value_and_grad(f)(zeros)


def _forward(observable, model, grid, wrt, chunks, stepper=None):
    """(value, {name: d value / d name}) by one `value_and_jvp` per parameter entry.

    The tangents run one after another through a single compiled program: a `vmap` over
    them (`jax.jacfwd`) costs several times more per tangent on CPU.
    """
    zeros = zero_perturbations(model, grid, wrt)
    value, out = None, {}
    for name, zero in zeros.items():
        columns = []
        for idx in np.ndindex(zero.shape):
            tangent = dict(zeros)
            tangent[name] = zero.at[idx].set(1.0)
            value, d = value_and_jvp(observable, model, grid, wrt, tangent, chunks, stepper)
            columns.append(d)
        stacked = jnp.stack(columns, axis=-1)
        out[name] = stacked.reshape(stacked.shape[:-1] + zero.shape)
    return value, out


def value_and_grad(observable: Callable, model, grid, wrt="a0",
                   mode: str = "reverse", chunks: int | None = None, stepper=None):
    """Value and gradient of a scalar observable of the DMFT solution.

    **Arguments:**

    - `observable`: Solution -> scalar (e.g. `dmft_jax._observables.e_ts`, or
      `jax.tree_util.Partial(e_ts, time=T)`).
    - `model`, `grid`: the DMFT (symmetric or general) and its times: a `TimeGrid`, or an
      `Adaptive` controller (step sizes not differentiated; see `differentiable_solve`).
    - `wrt`: parameter names, "a0,tau" or a tuple (table in the module docstring).
    - `mode`: "reverse" (adjoint loop, one pass whatever the number of parameters) or
      "forward" (one `value_and_jvp` pass per scalar parameter entry); both O(N^2) memory
      (temporaries ~2.8x and ~2.4x a solve's). Reverse pays off from ~3 parameters on.
    - `chunks`: causal chunking of the loop (as `integrate`).
    - `stepper`: default `Euler()` on a grid, `Trapezoid()` adaptively.

    **Returns:** `(value, grads)` with grads[name] shaped like the parameter.

    The passes are compiled with `eqx.filter_jit` (arrays traced; the observable, `wrt` and
    `chunks` static): new parameter values reuse the compilation. `lower(...)` gives the
    program, e.g. for `memory_analysis()`.
    """
    names = parse_wrt(wrt)
    _check_mode(mode)
    if mode == "reverse":
        return _reverse(observable, model, grid, names, chunks, False, stepper)
    return _forward(observable, model, grid, names, chunks, stepper)


def jacobian(observable: Callable, model, grid, wrt="a0", mode: str = "forward",
             chunks: int | None = None, stepper=None):
    """Value and Jacobian of an array-valued observable (arguments as `value_and_grad`).

    **Returns:** `(value, jac)` with jac[name] of shape value.shape + parameter shape. Reverse
    mode runs one adjoint pass per output entry (vmapped), forward mode one pass per
    parameter entry: pick the smaller.
    """
    names = parse_wrt(wrt)
    _check_mode(mode)
    if mode == "reverse":
        return _reverse(observable, model, grid, names, chunks, True, stepper)
    return _forward(observable, model, grid, names, chunks, stepper)


def lower(observable: Callable, model, grid, wrt="a0", mode: str = "reverse",
          chunks: int | None = None, jacobian: bool = False, stepper=None):
    """The lowered program behind `value_and_grad` / `jacobian` (`.compile()` it to inspect
    `memory_analysis()` or time compilation apart; calling the function afterwards reuses
    the compilation). Forward mode: the single-tangent `value_and_jvp` program."""
    names = parse_wrt(wrt)
    _check_mode(mode)
    if mode == "reverse":
        return _reverse.lower(observable, model, grid, names, chunks, jacobian, stepper)
    tangent = zero_perturbations(model, grid, names)
    return value_and_jvp.lower(observable, model, grid, names, tangent, chunks, stepper)
