"""Interpolation threshold of gradient flow by the relaxation-time method (spec section 7).

On the interpolating side of the threshold the train error relaxes to 0; the relaxation time

    t_rel(x) = inf{t : e_tr(t) < tol tau^2},   tol = 1e-7,

diverges as the scanned parameter x approaches the threshold x*:

    t_rel ~ c |x* - x|^(-nu).

`threshold` scans x (vmapped: one compilation for the whole scan), measures t_rel and fits the
divergence. Which theory is solved depends on the parameter and on m:

===============  ===========================================  =================================
parameter        m = infinity                                 finite m (frozen a, spec sec. 5)
===============  ===========================================  =================================
"gamma0"         lz2 at fixed alpha (`Lz2`): gamma*_GF(alpha)  SymmDMFT, a0 = gamma0 sqrt(m)
"alpha"          lz2 at fixed gamma0: alpha*_GF(gamma0)        SymmDMFT, a0 = gamma0 sqrt(m)
                                                               (or a0 = a)
"alpha_bar"      H.2 at fixed a (`H2`): alpha_bar*_GF(inf)     SymmDMFT, a0 = a: alpha_bar*_GF(m)
===============  ===========================================  =================================

Times (hence t_rel) are those of the solved model: the DMFT time for lz2 and SymmDMFT, the
DMFT time divided by m for H.2. The second layer is frozen (the threshold of spec section 7 is
defined with a frozen second layer). With a k-index target the lz2 runs use tau' [F.73], so the
fitted gamma0 threshold is gamma*_GF(alpha, phi, tau) = tau' gamma*_GF(alpha) [F.74] directly;
`kindex_threshold` applies that scaling to a pure-noise, tau = 1 threshold.

The threshold depends on the step dt at O(dt) (forward Euler); t_rel only exists where the run
relaxes within its horizon `dt * steps`: points that do not are reported as "unrelaxed" and left
out of the fit. Without a scan (`values=None`) `auto_scan` finds one on the interpolating side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ._covariance import Target, covariance
from ._dmft import symmetric_dmft
from ._grid import TimeGrid
from ._integrate import integrate
from ._reduced import h2_model, lz2_model, tau_prime

#: e_tr < RELAXATION_TOL * tau^2 counts as relaxed (spec section 7).
RELAXATION_TOL = 1e-7

PARAMETERS = ("gamma0", "alpha", "alpha_bar")


# ------------------------------------------------------------------------- relaxation time
def relaxation_time(t: ArrayLike, e_tr: ArrayLike, level: ArrayLike) -> Array:
    """inf{t : e_tr(t) < level}, interpolated linearly in log e_tr between grid points.

    Returns +inf if e_tr never drops below `level`, NaN if it first becomes non-finite or
    negative beyond -level (a diverged or too coarse solve: e_tr >= 0 in the continuum).
    Works under `jax.vmap` (t, e_tr of shape (N+1,)).
    """
    t, e_tr = jnp.asarray(t), jnp.asarray(e_tr)
    bad = ~jnp.isfinite(e_tr) | (e_tr < -level)
    below = (e_tr < level) & ~bad
    i = jnp.argmax(below)
    j = jnp.maximum(i - 1, 0)
    tiny = jnp.finfo(e_tr.dtype).tiny
    log_e = jnp.log(jnp.maximum(jnp.where(bad, 1.0, e_tr), tiny))
    step = log_e[i] - log_e[j]
    frac = jnp.where((i > 0) & (step < 0), (jnp.log(level) - log_e[j]) / jnp.where(step < 0, step, -1.0), 0.0)
    t_rel = t[j] + jnp.clip(frac, 0.0, 1.0) * (t[i] - t[j])
    diverged_first = jnp.any(bad & (jnp.arange(t.shape[0]) < jnp.where(jnp.any(below), i, t.shape[0])))
    return jnp.where(diverged_first, jnp.nan, jnp.where(jnp.any(below), t_rel, jnp.inf))


# ------------------------------------------------------------------------------- the fit
def _profile(delta: float, x: np.ndarray, y: np.ndarray, edge: float, side: int):
    """Least squares of y = log t_rel against log|x* - x| at fixed x* = edge + side * delta."""
    d = np.log(side * (edge + side * delta - x))
    design = np.stack([np.ones_like(d), -d], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return float(resid @ resid), coef


def _fit_once(x: np.ndarray, y: np.ndarray, side: int, grid_points: int):
    edge = float(x.max() if side > 0 else x.min())
    span = float(np.ptp(x)) or abs(edge) or 1.0
    deltas = span * np.logspace(-5, 2, grid_points)
    sse = np.array([_profile(dl, x, y, edge, side)[0] for dl in deltas])
    k = int(np.argmin(sse))
    lo, hi = np.log(deltas[max(k - 1, 0)]), np.log(deltas[min(k + 1, len(deltas) - 1)])
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):                              # golden section on log(delta)
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if _profile(math.exp(a), x, y, edge, side)[0] < _profile(math.exp(b), x, y, edge, side)[0]:
            hi = b
        else:
            lo = a
    delta = math.exp(0.5 * (lo + hi))
    sse_min, (log_c, nu) = _profile(delta, x, y, edge, side)
    return edge + side * delta, float(nu), float(log_c), sse_min


def fit_divergence(x: Sequence[float], t_rel: Sequence[float], *, side: int | None = None,
                   errors: str = "covariance", grid_points: int = 400) -> dict:
    """Fit t_rel ~ c |x* - x|^(-nu) (numpy only).

    For each trial x* (a log-spaced grid of distances beyond the data, refined by golden
    section) log t_rel = log c - nu log|x* - x| is a linear least-squares problem; x* minimizes
    the residual. **Arguments:** `x`, `t_rel` the points (non-finite t_rel are dropped);
    `side` +1 if x* lies above the data (t_rel grows with x), -1 if below (default: from the
    trend); `errors` "covariance" (Gauss-Newton covariance s^2 (J^T J)^-1 of (x*, log c, nu) at
    the optimum, s^2 = SSE / (n - 3)) or "jackknife" (leave-one-out). **Returns:** dict with
    threshold, threshold_err, exponent, exponent_err, amplitude (c), residual (rms of log t),
    side. Errors are NaN when there are too few points (n <= 3, or n <= 4 for jackknife).
    """
    x, t = np.asarray(x, float), np.asarray(t_rel, float)
    keep = np.isfinite(t) & (t > 0) & np.isfinite(x)
    x, y = x[keep], np.log(t[keep])
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"need at least 3 relaxed points to fit a divergence, got {n}")
    if side is None:
        side = 1 if np.polyfit(x, y, 1)[0] > 0 else -1
    x_star, nu, log_c, sse = _fit_once(x, y, side, grid_points)
    if errors == "covariance":
        err_x, err_nu = _covariance_errors(x, y, x_star, nu, sse)
    elif errors == "jackknife":
        err_x, err_nu = _jackknife_errors(x, y, side, grid_points)
    else:
        raise ValueError(f"errors must be 'covariance' or 'jackknife', got {errors!r}")
    return dict(threshold=x_star, threshold_err=err_x, exponent=nu, exponent_err=err_nu,
                amplitude=math.exp(log_c), residual=math.sqrt(sse / n), side=side)


def _covariance_errors(x, y, x_star, nu, sse):
    n = x.shape[0]
    if n <= 3:
        return math.nan, math.nan
    dist = x_star - x
    # residual y - log c + nu log|x* - x|; Jacobian in (x*, log c, nu)
    jac = np.stack([nu / dist, -np.ones_like(x), np.log(np.abs(dist))], axis=1)
    cov = sse / (n - 3) * np.linalg.pinv(jac.T @ jac)
    return float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[2, 2]))


def _jackknife_errors(x, y, side, grid_points):
    n = x.shape[0]
    if n <= 4:
        return math.nan, math.nan
    fits = np.array([_fit_once(np.delete(x, i), np.delete(y, i), side, grid_points)[:2]
                     for i in range(n)])
    spread = np.sqrt((n - 1) / n * np.sum((fits - fits.mean(axis=0)) ** 2, axis=0))
    return float(spread[0]), float(spread[1])


# ------------------------------------------------------------------------------- the scans
def _build_lz2(parameter: str, x, fixed: dict):
    p = dict(fixed, **{parameter: x})
    return lz2_model(p["h"], p["target"], tau=p["tau"], alpha=p["alpha"], gamma0=p["gamma0"])


def _build_h2(parameter: str, x, fixed: dict):
    del parameter
    return h2_model(fixed["h"], tau=fixed["tau"], alpha_bar=x, a=fixed["a"])


def _build_dmft(parameter: str, x, fixed: dict):
    p = dict(fixed, **{parameter: x})
    m = p["m"]
    if parameter == "alpha_bar":
        p["alpha"] = x / m
    scale = dict(a0=p["a"]) if p.get("gamma0") is None else dict(gamma0=p["gamma0"])
    return symmetric_dmft(p["h"], p["target"], tau=p["tau"], alpha=p["alpha"], m=m,
                          freeze_a=True, **scale)


@eqx.filter_jit
def _scan(build: Callable, parameter: str, xs: Array, fixed: dict, grid: TimeGrid,
          chunks: int | None):
    """e_tr(t) of the model built at each x of `xs`, vmapped: one compilation per shape."""
    def one(x):
        return integrate(build(parameter, x, fixed), grid, chunks=chunks, throw=False).e_tr
    return jax.vmap(one)(xs)


def relaxation_scan(h, target: Target | None = None, *, parameter: str, values: ArrayLike,
                    tau=1.0, m: int | float | None = None, alpha=None, gamma0=None, a=None,
                    dt, steps: int, tol: float = RELAXATION_TOL, batch: int | None = None,
                    chunks: int | None = None):
    """Train-error relaxation over a scan of `parameter` (see the module table).

    **Arguments:** `h`, `target` (None: pure noise), `tau`; `parameter` one of "gamma0",
    "alpha", "alpha_bar" with its `values`; `m` the width (None or inf: the m = infinity
    theory); the fixed parameters the scan needs (`alpha` for a gamma0 scan, `gamma0` or `a`
    for an alpha scan, `a` for an alpha_bar scan); `dt`, `steps` the grid of the solved model;
    `batch` solve this many values per vmapped call (the last batch is padded; default all).
    **Returns:** (t, e_tr, t_rel) with t (steps+1,), e_tr (len(values), steps+1),
    t_rel (len(values),) = inf{t : e_tr < tol tau^2} (inf if never, NaN if diverged).
    """
    if parameter not in PARAMETERS:
        raise ValueError(f"parameter must be one of {PARAMETERS}, got {parameter!r}")
    xs = np.atleast_1d(np.asarray(values, dtype=float))
    if xs.ndim != 1 or xs.size < 1:
        raise ValueError("values must be a non-empty 1-d sequence")
    build, fixed = _scan_setup(h, target, parameter, tau, m, alpha, gamma0, a)
    grid = TimeGrid(dt, steps)
    dtype = jnp.result_type(float)
    size = batch or xs.size
    out = []
    for lo in range(0, xs.size, size):
        part = xs[lo:lo + size]
        padded = np.concatenate([part, np.full(size - part.size, part[-1])])
        out.append(np.asarray(_scan(build, parameter, jnp.asarray(padded, dtype), fixed, grid,
                                    chunks))[:part.size])
    e_tr = np.concatenate(out, axis=0)
    level = tol * float(tau) ** 2
    t = np.asarray(grid.ts)
    t_rel = np.asarray(jax.vmap(lambda e: relaxation_time(t, e, level))(jnp.asarray(e_tr)))
    return t, e_tr, t_rel


def _scan_setup(h, target, parameter, tau, m, alpha, gamma0, a):
    infinite = m is None or (isinstance(m, float) and math.isinf(m))
    dtype = jnp.result_type(float)

    def arr(v):
        return None if v is None else jnp.asarray(v, dtype)

    fixed = dict(h=covariance(h), target=target, tau=arr(tau), alpha=arr(alpha),
                 gamma0=arr(gamma0), a=arr(a))
    needs = {"gamma0": ("alpha",), "alpha": ("gamma0",) if infinite else (), "alpha_bar": ("a",)}
    missing = [k for k in needs[parameter] if fixed[k] is None]
    if parameter == "alpha" and not infinite and gamma0 is None and a is None:
        missing = ["gamma0 or a"]
    if missing:
        raise ValueError(f"a scan of {parameter} needs {', '.join(missing)}")
    fixed[parameter] = None
    if infinite:
        if parameter == "alpha_bar":
            if target is not None:
                raise ValueError("the H.2 theory (alpha_bar at m = infinity) is for pure noise")
            return _build_h2, fixed
        return _build_lz2, fixed
    if int(m) != m or m < 1:
        raise ValueError(f"m must be a positive integer or infinity, got {m}")
    fixed["m"] = int(m)             # a Python int: static under filter_jit, like Symmetric(m)
    return _build_dmft, fixed


#: Where the automatic scan starts looking for the threshold, per parameter.
AUTO_START = {"gamma0": 1.0, "alpha": 0.5, "alpha_bar": 1.0}


def interpolating_side(parameter: str) -> int:
    """+1 if runs relax below the threshold (alpha, alpha_bar: fewer samples per parameter
    interpolate), -1 if above (gamma0: a larger second layer interpolates)."""
    return -1 if parameter == "gamma0" else 1


def auto_scan(h, target: Target | None = None, *, parameter: str, num: int = 8, tau=1.0,
              m: int | float | None = None, alpha=None, gamma0=None, a=None, dt, steps: int,
              tol: float = RELAXATION_TOL, start: float | None = None,
              levels: tuple[float, float] = (1 / 8, 0.8),
              report: Callable[[str], None] | None = None) -> dict:
    """A scan on the interpolating side of the threshold whose points relax, found without a
    range (`dmft-jax threshold` without --range).

    A solve over fewer steps at the same dt is the start of the longer one (the scheme is
    causal), so its relaxation times are exact up to its horizon: the search runs at
    T/8 (steps // 8, ~1/500 of the cost of a full solve) and T/2 before one stage at the
    horizon T = dt * steps. Each stage solves `num` values at once:

    1. **Bracket** (horizon T/8): values x0 4^u, u evenly in [-1, 1] (x0 = `start` or
       `AUTO_START`), moved by factors of 4-16 until some relax and some do not (between an
       unrelaxed value and diverged ones, evenly between them: `_next_bracket`); the bracket
       is the last relaxed value and the first one beyond it that did not relax.
    2. **Refine** (T/8): `num` values evenly inside the bracket.
    3. **Approach** (T/2) and **scan** (T): a fit t_rel = c |x* - x|^(-nu) of the relaxed
       values seen so far (nu = 2 through the two nearest the bracket when the fit is not
       usable) places `num` values where t_rel is expected between `levels[0]` and
       `levels[1]` times the stage's horizon, geometrically spaced, never beyond the
       bracket of that horizon nor past half way to a value whose solve diverged.

    **Returns** a dict: `values` (sorted: every relaxed value seen, at any stage, with
    t_rel >= levels[0] T), `t_rel` (theirs), `unrelaxed` (values of the last stage that
    did not relax within T), `diverged` (solves that diverged, at any stage), `bracket`
    ([last relaxed, first not relaxed] over the longest horizon at which both were seen: T/8
    when the later stages relaxed everywhere), `solves` (the number of solves, all stages).
    ValueError if no bracket is found within 8 moves.
    """
    side = interpolating_side(parameter)
    steps = int(steps)
    stages = [max(1, steps // 8), max(1, steps // 2), steps]
    seen: dict[float, tuple[float, int]] = {}       # x -> (t_rel, steps of its longest solve)

    def run(xs, stage, n):
        xs = np.asarray(xs, dtype=float)
        # causal chunks from 1000 steps (measured: H.2, 1000 steps, 2 values: 13.4 s with
        # compilation instead of 16.3 s)
        _, _, t_rel = relaxation_scan(h, target, parameter=parameter, values=xs, tau=tau, m=m,
                                      alpha=alpha, gamma0=gamma0, a=a, dt=dt, steps=n,
                                      tol=tol, batch=num, chunks=8 if n >= 1000 else None)
        for x, tr in zip(xs.tolist(), np.asarray(t_rel, float).tolist()):
            if x not in seen or seen[x][1] < n:
                seen[x] = (tr, n)
        if report is not None:
            report(f"{stage}: {parameter} = {xs.min():.6g} .. {xs.max():.6g}, "
                   f"{int(np.isfinite(t_rel).sum())} of {xs.size} relaxed within "
                   f"t = {float(dt) * n:g}")
        return t_rel

    def known(n):
        """{x: t_rel} as seen by a solve of n steps (inf: did not relax within n steps;
        values only solved over fewer steps, without relaxing, are unknown and left out)."""
        horizon = float(dt) * n
        out = {}
        for x, (tr, k) in seen.items():
            if np.isfinite(tr) and tr <= horizon * (1 + 1e-12):
                out[x] = tr
            elif np.isnan(tr) or k >= n:
                out[x] = tr if np.isnan(tr) else math.inf
        return out

    x0 = float(AUTO_START[parameter] if start is None else start)
    if not x0 > 0:
        raise ValueError(f"the automatic scan needs a start > 0, got {x0}")
    xs, level = x0 * 4.0 ** np.linspace(-1.0, 1.0, num), 0
    for _ in range(8):
        run(xs, "bracket", stages[level])
        found = _bracket(known(stages[level]), side)
        if found is not None:
            break
        xs, squeezed = _next_bracket(known(stages[level]), side, num)
        if squeezed and level < len(stages) - 1:
            # nothing relaxes before the solves diverge: look again over a longer horizon
            level += 1
    else:
        raise ValueError(f"no {parameter} relaxed and another did not within "
                         f"t = {float(dt) * stages[level]:g} after 8 brackets: give --range, "
                         "or change --dt/--steps")
    run(np.linspace(*sorted(found), num + 2)[1:-1], "refine", stages[level])
    found = _bracket(known(stages[level]), side) or found
    last = None
    for name, n in [("approach", stages[1]), ("scan", stages[2])][max(0, level - 1):]:
        horizon = float(dt) * n
        values = np.unique(_placed(known(n), found, side, horizon, levels, num))
        last = (values, run(values, name, n))
        found = _bracket(known(n), side) or found
    values, t = last
    horizon = float(dt) * steps
    final = known(steps)
    xs = np.array(sorted(x for x, tr in final.items()
                         if np.isfinite(tr) and tr >= levels[0] * horizon * (1 - 1e-12)))
    return dict(values=xs, t_rel=np.array([final[x] for x in xs]),
                unrelaxed=sorted(values[np.isinf(t)].tolist()),
                diverged=sorted(x for x, (tr, _) in seen.items() if np.isnan(tr)),
                bracket=[float(found[0]), float(found[1])], solves=len(seen))


def _bracket(known: dict, side: int):
    """(last relaxed, first not relaxed beyond it) among `known` {x: t_rel} (diverged solves,
    NaN, say neither), or None."""
    pts = [(side * x, tr) for x, tr in known.items() if not np.isnan(tr)]
    relaxed = [u for u, tr in pts if np.isfinite(tr)]
    if not relaxed:
        return None
    u_r = min(relaxed)
    beyond = [u for u, tr in pts if np.isinf(tr) and u > u_r]
    if not beyond:
        return None
    u_u = min(beyond)
    u_r = max(u for u in relaxed if u < u_u)
    return side * u_r, side * u_u


def _next_bracket(known: dict, side: int, num: int):
    """(values, squeezed): the next values of `auto_scan`'s first stage when no bracket was
    found: by factors of 4-16 towards the interpolating side if nothing relaxed, away from it
    if everything did; if nothing relaxed but solves diverged on the interpolating side of
    every unrelaxed value (an explicit step too large there), evenly between the two
    (`squeezed`)."""
    xs = np.array(sorted(known))
    t = np.array([known[x] for x in xs])
    u = side * xs
    relaxed, unrelaxed, diverged = np.isfinite(t), np.isinf(t), np.isnan(t)
    if relaxed.any():                                  # all relaxed that did not diverge
        return side * u[relaxed].max() * 4.0 ** (side * np.linspace(0.5, 2.0, num)), False
    if unrelaxed.any():
        low = u[unrelaxed].min()
        below = diverged & (u < low)
        if below.any():
            # (the unrelaxed end included: over a longer horizon it may relax)
            return side * np.linspace(u[below].max(), low, num + 1)[1:], True
        return side * low * 4.0 ** (-side * np.linspace(0.5, 2.0, num)), False
    raise ValueError("every solve of the automatic scan diverged: reduce --dt")


def _placed(seen: dict, found, side: int, horizon: float, levels, num: int) -> np.ndarray:
    """The values of `auto_scan`'s last two stages (see there); `seen` {x: t_rel} as known
    at this stage's horizon."""
    x_r, x_u = found
    pts = sorted(((x, tr) for x, tr in seen.items() if np.isfinite(tr) and tr > 0),
                 key=lambda p: -side * p[0])                  # nearest the threshold first
    top = side * pts[0][0]
    x_star, nu, c = None, 2.0, None
    if len(pts) >= 3:
        try:
            near = pts[:2 * num]
            fit = fit_divergence([p[0] for p in near], [p[1] for p in near], side=side)
            x_star, nu, c = fit["threshold"], fit["exponent"], fit["amplitude"]
        except (ValueError, np.linalg.LinAlgError):
            x_star = None
    if x_star is None or not (0.5 < nu < 10) or not side * x_star > top:
        # two points and nu = 2: sqrt(t1 / t2) = (x* - x2) / (x* - x1)
        nu, x_star = 2.0, None
        if len(pts) >= 2:
            (x1, t1), (x2, t2) = pts[0], pts[1]
            r = math.sqrt(t1 / t2)
            x_star = (r * x1 - x2) / (r - 1.0) if r > 1.0 else None
        if x_star is None or not side * x_star > top:
            x_star = x_u
        c = pts[0][1] * abs(x_star - pts[0][0]) ** nu
    dist = (c / (horizon * np.geomspace(levels[0], levels[1], num))) ** (1.0 / nu)
    u = side * x_star - dist
    # not beyond a value known not to relax within this horizon, and not beyond half way to a
    # value whose solve diverged (an explicit step too large there, and near it the solves
    # are inaccurate): spread evenly over the allowed part instead
    if np.isinf(seen.get(x_u, 0.0)):
        u = np.where(u < side * x_u, u, 0.5 * (side * x_r + side * x_u))
    bad = [side * x for x, tr in seen.items() if np.isnan(tr) and side * x < side * x_r]
    if bad:
        wall = 0.5 * (max(bad) + side * x_r)
        inside = np.linspace(wall, side * x_r, num + 1)[1:]
        u = np.where(u > wall, u, inside[np.argsort(np.argsort(u))])
    return side * u


def threshold(h, target: Target | None = None, *, parameter: str,
              values: ArrayLike | None = None, tau=1.0, m: int | float | None = None,
              alpha=None, gamma0=None, a=None, dt, steps: int, tol: float = RELAXATION_TOL,
              errors: str = "covariance", batch: int | None = None, chunks: int | None = None,
              num: int = 8, report: Callable[[str], None] | None = None) -> dict:
    """The interpolation threshold by the relaxation-time method (spec section 7).

    Arguments as in `relaxation_scan` (the scan is vmapped over `values`) plus `errors` for
    `fit_divergence`. With `values=None` the scan is found automatically (`auto_scan`, `num`
    values per stage, progress lines through `report`): the fit then uses every relaxed value
    seen with t_rel >= T / 8 (T = dt * steps), and the result also has `bracket`, `solves`
    and `diverged`. **Returns** a JSON-ready dict: parameter, threshold, threshold_err,
    exponent, exponent_err, points ([x, t_rel] of the relaxed runs), and amplitude, unrelaxed
    (the values that did not relax within dt * steps), model ("lz2", "H.2" or "dmft"), m (None
    for infinity), tau_prime (the effective noise of the lz2 runs [F.73]), range (first and
    last value, or "auto"), late_threshold and
    late_exponent (the fit of the points with t_rel >= a third of the largest: a difference
    from threshold, exponent shows that the scan is not yet asymptotic). Fit entries that
    are not available (fewer than 3 relaxed points; errors with too few points) are None, so
    that `json.dumps` of the dict is strict JSON.
    """
    extra = {}
    if values is None:
        scan = auto_scan(h, target, parameter=parameter, num=num, tau=tau, m=m, alpha=alpha,
                         gamma0=gamma0, a=a, dt=dt, steps=steps, tol=tol, report=report)
        xs, t_rel = scan["values"], scan["t_rel"]
        unrelaxed = scan["unrelaxed"]
        extra = dict(range="auto", bracket=scan["bracket"], solves=scan["solves"],
                     diverged=scan["diverged"])
    else:
        _, _, t_rel = relaxation_scan(h, target, parameter=parameter, values=values, tau=tau,
                                      m=m, alpha=alpha, gamma0=gamma0, a=a, dt=dt, steps=steps,
                                      tol=tol, batch=batch, chunks=chunks)
        xs = np.atleast_1d(np.asarray(values, dtype=float))
        unrelaxed = [float(x) for x in xs[~np.isfinite(t_rel)]]
        extra = dict(range=[float(xs[0]), float(xs[-1])])
    ok = np.isfinite(t_rel)
    infinite = m is None or (isinstance(m, float) and math.isinf(m))
    fit = dict(threshold=None, threshold_err=None, exponent=None, exponent_err=None,
               amplitude=None)
    if ok.sum() >= 3:
        fit = fit_divergence(xs[ok], t_rel[ok], side=interpolating_side(parameter),
                             errors=errors)
        fit.pop("side"), fit.pop("residual")
    late = late_fit(xs, t_rel, parameter)
    model = ("H.2" if parameter == "alpha_bar" else "lz2") if infinite else "dmft"
    tp = float(tau_prime(h, target, tau)) if model == "lz2" else float(tau)
    return dict(parameter=parameter, **{k: _json_float(v) for k, v in fit.items()},
                points=[[float(x), float(tr)] for x, tr in zip(xs[ok], t_rel[ok])],
                unrelaxed=unrelaxed, model=model, m=None if infinite else int(m),
                tau_prime=tp, **late, **extra)


def late_fit(xs, t_rel, parameter: str) -> dict:
    """{late_threshold, late_exponent}: the divergence fit of the relaxed points with t_rel
    >= a third of the largest (None where there are fewer than 3 of them, or no others).
    Where it differs from the fit of all points, the scan is not yet in the asymptotic regime
    and the fit's quoted errors understate that."""
    xs, t_rel = np.asarray(xs, float), np.asarray(t_rel, float)
    ok = np.isfinite(t_rel)
    out = dict(late_threshold=None, late_exponent=None)
    if not ok.any():
        return out
    slow = ok & (t_rel >= np.max(t_rel[ok]) / 3)
    if 3 <= slow.sum() < ok.sum():
        f = fit_divergence(xs[slow], t_rel[slow], side=interpolating_side(parameter))
        out = dict(late_threshold=_json_float(f["threshold"]),
                   late_exponent=_json_float(f["exponent"]))
    return out


def _json_float(v) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def kindex_threshold(gamma_star: ArrayLike, h, target: Target | None, *, tau) -> Array:
    """gamma*_GF(alpha, phi, tau) = tau' gamma*_GF(alpha) [F.74].

    `gamma_star` is the pure-noise threshold at tau = 1 (e.g. `threshold(h, parameter="gamma0",
    tau=1.0, ...)["threshold"]`). The scaling is exact for the lz2 theory: its solution at
    (tau, gamma0) is that at (1, gamma0 / tau) with time tau^2 t and errors tau^2 e_tr, and a
    target enters only through tau' [F.73].
    """
    return tau_prime(h, target, tau) * jnp.asarray(gamma_star)
