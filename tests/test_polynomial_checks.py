"""`dj.Polynomial` is checked like the other covariance inputs (issue 12): a Polynomial used as
h must have finite coefficients >= 0 with h(1) > 0; a Polynomial used as phihat may have
negative coefficients but not non-finite ones. Concrete values only: traced coefficients
(jit, vmap, grad) pass through."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dmft_jax as dj
from dmft_jax._covariance import covariance


@pytest.mark.parametrize("coeffs,words", [
    ([0.0, -0.5, 1.0], ">= 0"),
    ([0.0, 0.0, 0.0], r"h\(1\)"),
])
def test_polynomial_as_h_is_checked(coeffs, words):
    with pytest.raises(ValueError, match=words):
        covariance(dj.Polynomial(coeffs))
    with pytest.raises(ValueError, match=words):
        dj.symmetric_dmft(dj.Polynomial(coeffs), None, tau=0.3, alpha=0.3, m=4, a0=1.0)


def test_polynomial_coefficients_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        dj.Polynomial([0.0, np.nan])
    with pytest.raises(ValueError, match="finite"):
        dj.Polynomial([0.0, 1.0, np.inf])


def test_negative_phihat_and_traced_coefficients_pass():
    phihat = dj.Polynomial([0.0, -0.4, 0.2])  # a cross-covariance may be negative
    assert float(phihat(1.0)) == pytest.approx(-0.2)
    grad = jax.grad(lambda c: covariance(dj.Polynomial(c))(0.5))(jnp.array([0.0, 0.9, 0.5]))
    np.testing.assert_allclose(grad, [1.0, 0.5, 0.25])
