"""Interpolation threshold by the relaxation-time method (spec section 7)."""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dmft_jax._covariance import target as make_target  # noqa: E402
from dmft_jax._grid import TimeGrid  # noqa: E402
from dmft_jax._integrate import solve  # noqa: E402
from dmft_jax._reduced import lz2_model, tau_prime  # noqa: E402
from dmft_jax._threshold import (  # noqa: E402
    fit_divergence, kindex_threshold, relaxation_scan, relaxation_time, threshold)

FIG8 = [0.0, 0.3, 0.5]          # h = 0.3q + q^2/2, figures 8-10 and 32-33


def test_relaxation_time_interpolates_and_flags():
    t = np.linspace(0, 20, 41)
    assert abs(float(relaxation_time(t, np.exp(-t), 1e-7)) - 7 * math.log(10)) < 1e-12
    assert float(relaxation_time(t, 0.1 + 0 * t, 1e-7)) == math.inf
    assert math.isnan(float(relaxation_time(t, np.where(t == 1, -1e-3, np.exp(-t)), 1e-7)))
    bad = np.where(t > 3, np.nan, np.exp(-t))
    assert math.isnan(float(relaxation_time(t, bad, 1e-7)))


@pytest.mark.parametrize("side", [-1, 1])
def test_fit_recovers_synthetic_divergence(side):
    """t_rel = c |x* - x|^(-nu) with 1% log-normal noise: x*, nu within 3 sigma, both error
    estimates sensible."""
    x_star, nu, c = 1.3, 1.5, 2.0
    x = x_star - side * np.linspace(0.05, 0.8, 10)
    rng = np.random.default_rng(1)
    t_rel = c * np.abs(x_star - x) ** (-nu) * np.exp(0.01 * rng.normal(size=x.size))
    for errors in ("covariance", "jackknife"):
        fit = fit_divergence(x, t_rel, errors=errors)
        print(f"\nside {side:+d} {errors}: x* = {fit['threshold']:.5f} +- {fit['threshold_err']:.5f},"
              f" nu = {fit['exponent']:.4f} +- {fit['exponent_err']:.4f}")
        assert fit["side"] == side
        assert 0 < fit["threshold_err"] < 0.02 and 0 < fit["exponent_err"] < 0.1
        assert abs(fit["threshold"] - x_star) < 3 * fit["threshold_err"] + 1e-3
        assert abs(fit["exponent"] - nu) < 3 * fit["exponent_err"] + 1e-2
    exact = fit_divergence(x, c * np.abs(x_star - x) ** (-nu))
    assert abs(exact["threshold"] - x_star) < 1e-6 and abs(exact["exponent"] - nu) < 1e-5
    assert abs(exact["amplitude"] - c) < 1e-4
    with pytest.raises(ValueError):
        fit_divergence(x[:2], t_rel[:2])


def test_lz2_threshold_small_run():
    """gamma*_GF(alpha = 0.5) at m = infinity from a short vmapped lz2 scan (tau = 1)."""
    values = [1.8, 2.0, 2.2, 2.4, 2.6]
    out = threshold(FIG8, parameter="gamma0", values=values, alpha=0.5, dt=0.1, steps=220)
    print("\nsmall lz2 threshold run:", json.dumps(out))
    json.loads(json.dumps(out, allow_nan=False))                 # strict JSON
    assert set(out) >= {"parameter", "threshold", "threshold_err", "exponent", "exponent_err",
                        "points"}
    assert out["parameter"] == "gamma0" and out["model"] == "lz2" and out["m"] is None
    assert len(out["points"]) == len(values) and not out["unrelaxed"]
    t_rel = [p[1] for p in out["points"]]
    assert all(b < a for a, b in zip(t_rel, t_rel[1:]))         # faster away from threshold
    assert 0.5 < out["threshold"] < 1.8 and out["exponent"] > 0
    # the vmapped scan is the single solve
    t, e_tr, _ = relaxation_scan(FIG8, parameter="gamma0", values=[2.0], alpha=0.5, dt=0.1,
                                 steps=220, batch=5)
    one = solve(lz2_model(FIG8, tau=1.0, alpha=0.5, gamma0=2.0), TimeGrid(0.1, 220))
    assert np.max(np.abs(e_tr[0] - np.asarray(one.e_tr))) < 1e-13


def test_finite_m_alpha_bar_scan_relaxes_below_threshold():
    """Frozen-a SymmDMFT (m = 4, a = 1): small alpha_bar interpolates, t_rel grows with it."""
    t, e_tr, t_rel = relaxation_scan(FIG8, parameter="alpha_bar", values=[0.1, 0.2, 0.3, 1.5],
                                     a=1.0, m=4, dt=0.5, steps=100, batch=2)
    print("\nm = 4, alpha_bar = 0.1, 0.2, 0.3, 1.5: t_rel =", t_rel)
    assert np.all(np.isfinite(t_rel[:3])) and np.all(np.diff(t_rel[:3]) > 0)
    assert t_rel[3] == math.inf and e_tr[3, -1] > 1e-3


def test_kindex_threshold_is_tau_prime_scaling():
    """[F.74]: gamma*(alpha, phi, tau) = tau' gamma*(alpha) with tau' of [F.73]."""
    tgt = make_target("same", [0.0, 0.9, 0.5])
    tp = float(tau_prime([0.0, 0.9, 0.5], tgt, 0.3))
    assert abs(tp**2 - (0.09 + 1.4 - 0.9)) < 1e-12
    assert abs(float(kindex_threshold(1.2, [0.0, 0.9, 0.5], tgt, tau=0.3)) - 1.2 * tp) < 1e-12
    assert abs(float(kindex_threshold(1.2, FIG8, None, tau=2.0)) - 2.4) < 1e-12


def test_threshold_rejects_incomplete_input():
    with pytest.raises(ValueError):
        threshold(FIG8, parameter="gamma0", values=[1.0, 2.0], dt=0.1, steps=10)   # no alpha
    with pytest.raises(ValueError):
        threshold(FIG8, parameter="beta", values=[1.0], alpha=0.5, dt=0.1, steps=10)
    with pytest.raises(ValueError):
        threshold(FIG8, make_target("same", FIG8), parameter="alpha_bar", values=[1.0], a=1.0,
                  dt=0.1, steps=10)                                                 # H.2: noise only


@pytest.mark.gpu
def test_lz2_threshold_close_scan():
    """Heavy (~1-3 min on 2 CPU cores): gamma*_GF(alpha = 0.5), h = 0.3q + q^2/2, tau = 1, from
    t_rel up to ~100 (benchmarks/results/reduced.md: 0.94 from gamma0 >= 1.15, 0.90 from
    gamma0 >= 1.05); the fast version is test_lz2_threshold_small_run."""
    out = threshold(FIG8, parameter="gamma0", values=[1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.65, 1.8],
                    alpha=0.5, dt=0.1, steps=1200, batch=4)
    print("\nlz2 threshold, close scan:", json.dumps(out))
    assert not out["unrelaxed"]
    assert 0.85 < out["threshold"] < 0.97 and 1.0 < out["exponent"] < 1.5
