"""The exponentially fitted diagonal ends of the trapezoid (`dmft_jax._volterra.fitted_end`).

Under lazy initialization the responses fall from their jumps within ~1/rate of the diagonal,
rate ~ alpha m gamma^2 h'(1) (spec section 6); an adaptive step set by accuracy elsewhere is
many times longer. The trapezoid then counts the jump value over half a step; the fitted rule
is exact for c0 + c1 u + c2 exp(-rate u) on the interval next to the diagonal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dmft_jax as dj
from dmft_jax._volterra import fitted_end


def _rule(f, h, rate):
    k = float(fitted_end(jnp.asarray(h), jnp.asarray(rate)))
    return 0.5 * h * (f(0.0) + f(h)) + k * (f(0.0) - f(h))


@pytest.mark.parametrize("rate", [0.0, 1e-5, 0.02, 0.7, 30.0, 2000.0])
@pytest.mark.parametrize("h", [0.001, 0.05, 0.4])
def test_fitted_end_is_exact_on_its_basis(rate, h):
    def f(u):
        return 0.3 + 1.7 * np.exp(-rate * u)
    exact = 0.3 * h + 1.7 * (h if rate == 0 else -np.expm1(-rate * h) / rate)
    assert _rule(f, h, rate) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def test_fitted_end_weights_stay_positive_and_tend_to_the_trapezoid():
    h = 0.05
    for rate in (0.0, 1e-6, 5.0, 500.0, 1e6):
        k = float(fitted_end(jnp.asarray(h), jnp.asarray(rate)))
        assert -0.5 * h < k <= 0.0                  # weights h/2 + k and h/2 - k in (0, h)
    # rate h -> 0: the trapezoid, with the first-order term -rate h^2 / 12
    assert float(fitted_end(jnp.asarray(h), jnp.asarray(0.0))) == 0.0
    k = float(fitted_end(jnp.asarray(h), jnp.asarray(1e-3)))
    assert k == pytest.approx(-1e-3 * h**2 / 12, rel=1e-6)
    # rate h -> infinity: the jump value counts over 1/rate
    k = float(fitted_end(jnp.asarray(h), jnp.asarray(1e4)))
    assert 0.5 * h + k == pytest.approx(1e-4, rel=1e-6)
    # no interval: no correction
    assert float(fitted_end(jnp.asarray(0.0), jnp.asarray(3.0))) == 0.0


def test_fitted_end_is_smooth_in_the_rate():
    """Finite, continuous gradients across the switch to the series at rate h = 1e-3."""
    g = jax.grad(lambda r: fitted_end(jnp.asarray(0.05), r))
    vals = [float(g(jnp.asarray(r))) for r in (0.0, 0.0199, 0.0201)]
    assert all(np.isfinite(vals))
    assert vals[1] == pytest.approx(vals[2], rel=1e-3)
    assert vals[0] == pytest.approx(-0.05**2 / 12, rel=1e-6)


def _lazy_256(fit_ends: bool, rtol: float, history: int = 256):
    """Lazy Fig. 3 setting at m = 256 to t = 0.5, adaptive; returns (solution, accepted)."""
    h = [0.0, 0.9, 0.5]
    model = dj.symmetric_dmft(h, dj.target("same", h), tau=0.3, alpha=0.3, m=256, gamma0=1.0,
                              fit_ends=fit_ends)
    sol = dj.solve(model, dj.Adaptive(0.5, rtol=rtol, atol=rtol / 100, history=history,
                                      max_steps=250, max_decimation_error=np.inf))
    return sol, int(sol.stats["accepted"])


def _final(pair, key):
    sol, n = pair
    return float(getattr(sol, key)[n])


def test_lazy_steps_longer_than_the_fall_keep_the_tolerance():
    """Lazy Fig. 3 setting at m = 256 (rate ~ 72: the responses fall within 0.014) to t = 0.5:
    at rtol 1e-3 the steps grow to ~0.06. With `fit_ends`, rho, e_ts and e_tr stay within a
    few times the tolerance of the fitted rtol 1e-5 solve, also on a decimated history (the
    plain trapezoid is percents off: the test below)."""
    coarse, fine = _lazy_256(True, 1e-3), _lazy_256(True, 1e-5)      # one compilation
    # the same fitted solve on 12 stored times (decimated): a decimation moves the fits of the
    # stored columns and rows into the interval corrections (`DMFT.fold_fits`); a lost fit
    # would move e_ts back towards the plain trapezoid's, 1.5% away
    small = _lazy_256(True, 1e-3, history=12)
    n = coarse[1]
    assert int(small[0].stats["decimations"]) >= 2 and small[1] == n
    assert abs(_final(small, "e_ts") / _final(coarse, "e_ts") - 1) < 2e-4
    assert float(np.max(np.diff(np.asarray(coarse[0].t)[:n + 1]))) > 0.04
    for key, bound in (("rho", 1e-2), ("e_ts", 2e-3), ("e_tr", 2e-2)):
        ref = _final(fine, key)
        assert abs(_final(coarse, key) - ref) <= bound * abs(ref), (key, _final(coarse, key), ref)


def test_lazy_steps_longer_than_the_fall_need_the_fit():
    """The same setting without `fit_ends`: at the same rtol 1e-3 the plain trapezoid is
    percents off the fitted rtol 1e-5 solve (measured: rho, e_ts, e_tr 2.3%, 1.5%, 2.8% against
    a rtol 1e-6 solve)."""
    plain, fine = _lazy_256(False, 1e-3), _lazy_256(True, 1e-5)
    for key, off in (("rho", 1.5e-2), ("e_ts", 1e-2), ("e_tr", 2e-2)):
        ref = _final(fine, key)
        assert abs(_final(plain, key) - ref) >= off * abs(ref), (key, _final(plain, key), ref)


@pytest.mark.gpu  # heavy tier (four compilations, two of the general DMFT: CI time under load)
def test_general_and_symmetric_fit_alike():
    """The fitted ends are one rule in the neuron algebra (m x m matrices, or D I + O (J - I)):
    on a symmetric initialization the general and the symmetric DMFT agree on a trapezoid grid
    with and without the fit (lazy m = 16, h = 0.1, against a fall time 1/rate ~ 0.07)."""
    h = [0.0, 0.9, 0.5]
    m, grid = 16, dj.TimeGrid(0.1, 10)
    out = {}
    for fit in (False, True):
        kw = dict(tau=0.3, alpha=0.5, fit_ends=fit)
        sym = dj.symmetric_dmft(h, dj.target("same", h), m=m, gamma0=1.0, **kw)
        gen = dj.general_dmft(h, dj.target("same", h), a=np.full(m, np.sqrt(m)), C=np.eye(m),
                              **kw)
        out[fit] = [dj.solve(x, grid, dj.Trapezoid()) for x in (sym, gen)]
    for fit in (False, True):
        for key in ("e_tr", "e_ts", "rho"):
            sym, gen = (np.asarray(getattr(x, key)) for x in out[fit])
            np.testing.assert_allclose(gen, sym, rtol=1e-10, atol=1e-13, err_msg=f"{key} {fit}")
    e_tr = [float(out[f][0].e_tr[-1]) for f in (False, True)]
    assert abs(e_tr[1] - e_tr[0]) > 1e-2 * e_tr[0]                 # the fit acts
