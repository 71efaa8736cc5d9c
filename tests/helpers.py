"""Small shared helpers for the tests."""

import numpy as np

from dmft_jax._covariance import covariance, target


def fig4(tau=0.3):
    """h = phihat = 0.9 q + q^3/6 (spec section 9, Fig. 4)."""
    c = [0.0, 0.9, 0.0, 1.0 / 6.0]
    return covariance(c), target("same", c), tau


def loglog_slope(x, y):
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])
