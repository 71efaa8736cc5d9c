"""The residual cutoff (`symmetric_dmft(..., residual_cutoff=T)`): r_A(t, s) = 0 for t - s > T.

An approximation for long solves on a bounded history (see `dmft_jax._dmft.DMFT`): it must do
exactly what it says (the stored r_A vanishes beyond the lag, and nowhere else), change
nothing while the lag exceeds the solve, and approach the exact solve as the lag grows.
"""

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np
import pytest

import dmft_jax as dj

H = [0.0, 0.9, 0.5]          # lazy Fig. 3 setting (spec section 8), m = 64


def _solve(cutoff):
    model = dj.symmetric_dmft(H, dj.target("same", H), tau=0.3, alpha=0.3, m=64, gamma0=1.0,
                              residual_cutoff=cutoff)
    return dj.solve(model, dj.TimeGrid(0.1, 60), dj.Trapezoid())


def test_cutoff_neglects_exactly_the_old_residual_response():
    """Lazy m = 64 to t = 6 (trapezoid h = 0.1), where the residuals still relax slowly
    (e_tr ~ 1e-3): the stored r_A(t, s) is zero for t - s > T and nonzero below it; the
    rows before the first lag beyond T are the exact solve's; the errors of rho and
    e_tr at t = 6 shrink as T grows (1, 2), and a lag beyond t = 6 changes nothing, to
    the last bit."""
    exact, short, longer, beyond = (_solve(c) for c in (None, 1.0, 2.0, 50.0))
    t = np.asarray(exact.t)
    lag = t[:, None] - t[None, :]
    r_a, r_exact = np.asarray(short.R_A), np.asarray(exact.R_A)
    assert np.all(r_a[lag > 1.0 + 1e-9] == 0.0)
    assert np.all(r_a[(lag > 0) & (lag < 1.0 - 1e-9)] != 0.0)
    # the rows before the first lag beyond the cutoff are the exact solve's, to the bit
    first = np.nonzero(t > 1.0 + 1e-9)[0][0]
    assert np.array_equal(r_a[:first], r_exact[:first])
    assert not np.array_equal(r_a[first], r_exact[first])
    for key in ("rho", "e_tr"):
        ref = float(getattr(exact, key)[-1])
        errs = [abs(float(getattr(x, key)[-1]) - ref) for x in (short, longer)]
        assert errs[0] > errs[1] > 0, (key, errs)
    for key in ("e_tr", "e_ts", "rho", "a", "C_t0"):
        assert np.array_equal(np.asarray(getattr(beyond, key)), np.asarray(getattr(exact, key)))


@pytest.mark.parametrize("bad", [0.0, -1.0, np.inf, np.nan])
def test_cutoff_must_be_a_positive_lag(bad):
    with pytest.raises(ValueError, match="residual_cutoff"):
        dj.symmetric_dmft(H, dj.target("same", H), tau=0.3, alpha=0.3, m=64, gamma0=1.0,
                          residual_cutoff=bad)
