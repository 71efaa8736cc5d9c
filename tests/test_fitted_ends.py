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


def _rule(f, h, h2, rate):
    k0, k1, k2 = (float(k) for k in fitted_end(jnp.asarray(h), jnp.asarray(h2),
                                               jnp.asarray(rate)))
    return 0.5 * h * (f(0.0) + f(h)) + k0 * f(0.0) + k1 * f(h) + k2 * f(h + h2)


@pytest.mark.parametrize("rate", [0.0, 1e-3, 0.7, 30.0, 2000.0])
@pytest.mark.parametrize("h, h2", [(0.05, 0.05), (0.06, 0.02), (0.01, 0.09)])
def test_fitted_end_is_exact_on_its_basis(rate, h, h2):
    def f(u):
        return 0.3 - 1.1 * u + 1.7 * np.exp(-rate * u)
    exact = 0.3 * h - 0.55 * h**2 + 1.7 * (h if rate == 0 else -np.expm1(-rate * h) / rate)
    assert _rule(f, h, h2, rate) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def test_fitted_end_weights_sum_to_zero_and_tend_to_the_trapezoid_error():
    h, h2 = 0.04, 0.03
    for rate in (0.0, 1e-6, 5.0, 500.0):
        k = fitted_end(jnp.asarray(h), jnp.asarray(h2), jnp.asarray(rate))
        assert abs(float(sum(k))) < 1e-15
    # rate -> 0: the correction of a quadratic u^2 is the trapezoid's error -h^3 / 6
    got = _rule(lambda u: u**2, h, h2, 0.0) - h**3 / 3
    assert abs(got) < 1e-15
    # no interval (h2 = 0): no correction
    assert all(float(k) == 0.0 for k in fitted_end(jnp.asarray(h), jnp.asarray(0.0),
                                                   jnp.asarray(3.0)))


def test_fitted_end_has_finite_gradients_at_rate_zero():
    g = jax.grad(lambda r: fitted_end(jnp.asarray(0.05), jnp.asarray(0.04), r)[0])
    assert np.isfinite(float(g(jnp.asarray(0.0))))


def test_lazy_steps_longer_than_the_fall_keep_the_tolerance():
    """Lazy Fig. 3 setting at m = 256 (rate ~ 72: the responses fall within 0.014) to t = 0.5:
    at rtol 1e-3 the steps grow to ~0.06. With the plain trapezoid rho, e_ts and e_tr were
    2.3%, 1.5% and 2.8% off a fine solve (measured); fitted, 0.5%, 0.05% and 0.9% from the
    rtol 1e-5 solve."""
    h = [0.0, 0.9, 0.5]
    model = dj.symmetric_dmft(h, dj.target("same", h), tau=0.3, alpha=0.3, m=256, gamma0=1.0)
    out = {}
    for rtol in (1e-3, 1e-5):
        sol = dj.solve(model, dj.Adaptive(0.5, rtol=rtol, atol=rtol / 100, history=256,
                                          max_steps=250))
        n = int(sol.stats["accepted"])
        out[rtol] = (sol, n)
    coarse, n = out[1e-3]
    fine, m = out[1e-5]
    assert float(np.max(np.diff(np.asarray(coarse.t)[:n + 1]))) > 0.04
    for key, bound in (("rho", 1e-2), ("e_ts", 2e-3), ("e_tr", 1.5e-2)):
        a, b = float(getattr(coarse, key)[n]), float(getattr(fine, key)[m])
        assert abs(a - b) <= bound * abs(b), (key, a, b)
