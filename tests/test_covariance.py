"""Tests of the covariance kernels h, phihat (spec section 2, [A.5], [A.7])."""

import jax

jax.config.update("jax_enable_x64", True)

import math  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import integrate, stats  # noqa: E402

from dmft_jax import _covariance as cov  # noqa: E402

INTERIOR = np.array([-0.95, -0.6, -0.2, 0.0, 0.3, 0.7, 0.95])
NAMES = ["relu", "erf", "tanh", "identity"]


def _kernels():
    return {
        "relu": cov.ReLU(),
        "erf": cov.Erf(),
        "tanh": cov.covariance("tanh"),
        "cubic": cov.covariance("cubic"),
    }


@pytest.fixture(scope="module")
def kernels():
    return _kernels()


def _gauss_expect(fn):
    """E fn(G) by adaptive quadrature, split at the kink of the ReLU."""
    f = lambda x: float(fn(x)) * stats.norm.pdf(x)  # noqa: E731
    return integrate.quad(f, -np.inf, 0.0)[0] + integrate.quad(f, 0.0, np.inf)[0]


def _relu_h_reference(q):
    """E[relu_c(X) relu_c(Y)] with the inner Gaussian integral in closed form (1-D quad)."""
    r = math.sqrt(1 - q * q)

    def inner(x):  # x * E_Z (q x + r Z)_+ * pdf(x)
        a = q * x
        return x * (a * stats.norm.cdf(a / r) + r * stats.norm.pdf(a / r)) * stats.norm.pdf(x)

    return integrate.quad(inner, 0.0, np.inf, epsabs=1e-13)[0] - 1 / (2 * math.pi)


def _monte_carlo(sigma1, sigma2, q, n=400_000, seed=0):
    rng = np.random.default_rng(seed)
    x, z = rng.standard_normal((2, n))
    y = q * x + math.sqrt(1 - q * q) * z
    return float(np.mean(np.asarray(sigma1(jnp.asarray(x))) * np.asarray(sigma2(jnp.asarray(y)))))


# --- Hermite tools -------------------------------------------------------------------------


def test_gauss_hermite_is_standard_gaussian():
    x, w = cov.gauss_hermite(20)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)
    assert (w * x**2).sum() == pytest.approx(1.0, abs=1e-13)
    assert (w * x**4).sum() == pytest.approx(3.0, abs=1e-12)


def test_normalized_hermite_orthonormal_and_coefficients():
    x, w = cov.gauss_hermite(30)
    p = np.asarray(cov.normalized_hermite(x, 8))
    np.testing.assert_allclose((p * w[:, None]).T @ p, np.eye(9), atol=1e-12)
    # x^3 = He_3 + 3 He_1 = sqrt(6) p_3 + 3 p_1
    c = cov.hermite_coefficients(lambda t: t**3, 5, nodes=10)
    np.testing.assert_allclose(c, [0, 3, 0, math.sqrt(6), 0, 0], atol=1e-12)


def test_relu_hermite_coefficients():
    exact = cov.relu_hermite_coefficients(40)
    quad = cov.hermite_coefficients(cov.activation("relu"), 6, nodes=300)
    np.testing.assert_allclose(quad, exact[:7], atol=2e-3)
    for q in (-0.5, 0.5):  # h = sum f_k^2 q^k converges fast inside (-1, 1)
        assert float(cov.Polynomial(exact**2)(q)) == pytest.approx(float(cov.ReLU()(q)), abs=1e-8)


# --- activations ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", NAMES + ["cubic", [0.0, 0.2, 0.3]])
def test_activations_are_centered(spec):
    sigma = cov.activation(spec)
    assert _gauss_expect(sigma) == pytest.approx(0.0, abs=1e-10)


def test_hermite_activation_realizes_cubic():
    sigma = cov.activation_from_h_coeffs(cov.PRESETS["cubic"])
    x = jnp.linspace(-3, 3, 13)
    np.testing.assert_allclose(sigma(x), math.sqrt(0.9) * x + (x**3 - 3 * x) / 6, atol=1e-13)
    q = jnp.asarray(INTERIOR)
    h = 0.9 * q + q**3 / 6
    np.testing.assert_allclose(cov.Quadrature(sigma)(q), h, atol=1e-12)
    for qq in (-0.5, 0.4, 0.9):
        mc = _monte_carlo(sigma, sigma, qq)
        assert mc == pytest.approx(0.9 * qq + qq**3 / 6, abs=0.02)


def test_activation_rejects_bad_specs():
    with pytest.raises(ValueError, match="unknown activation"):
        cov.activation("swish")
    with pytest.raises(ValueError, match=">= 0"):
        cov.activation_from_h_coeffs([0.0, -1.0, 2.0])


# --- closed forms --------------------------------------------------------------------------


def test_relu_closed_form_against_references():
    kern = cov.ReLU()
    for q in INTERIOR:
        assert float(kern(q)) == pytest.approx(_relu_h_reference(q), abs=1e-10)
    assert float(kern(1.0)) == pytest.approx(0.5 - 1 / (2 * math.pi), abs=1e-15)
    # 2-D Gauss-Hermite converges only algebraically for the kink (engineering notes)
    np.testing.assert_allclose(kern(INTERIOR), cov.Quadrature("relu")(INTERIOR), atol=3e-3)
    sigma = cov.activation("relu")
    for q in (-0.5, 0.3, 0.9):
        assert _monte_carlo(sigma, sigma, q, seed=1) == pytest.approx(float(kern(q)), abs=5e-3)


def test_erf_closed_form_against_references():
    kern, quad = cov.Erf(), cov.Quadrature("erf")
    q = np.append(INTERIOR, [-1.0, 1.0])
    for method in ("__call__", "d1", "d2"):
        np.testing.assert_allclose(getattr(kern, method)(q), getattr(quad, method)(q), atol=1e-12)
    sigma = cov.activation("erf")
    for qq in (-0.5, 0.3, 0.9):
        assert _monte_carlo(sigma, sigma, qq, seed=2) == pytest.approx(float(kern(qq)), abs=5e-3)


# --- derivatives ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["relu", "erf", "tanh", "cubic"])
def test_derivatives_interior(kernels, name):
    kern = kernels[name]
    q = jnp.asarray(np.append(INTERIOR, 0.999999))
    eps = jnp.minimum(1e-6, (1 - jnp.abs(q)) / 20)  # stay inside [-1, 1]
    fd1 = (kern(q + eps) - kern(q - eps)) / (2 * eps)
    fd2 = (kern.d1(q + eps) - kern.d1(q - eps)) / (2 * eps)
    np.testing.assert_allclose(kern.d1(q), fd1, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(kern.d2(q), fd2, rtol=2e-3 if name == "relu" else 1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(kern))(q), kern.d1(q), rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(jax.grad(kern.d1))(q), kern.d2(q), rtol=1e-12)


@pytest.mark.parametrize("name", ["erf", "tanh", "cubic"])
@pytest.mark.parametrize("end", [-1.0, 1.0])
def test_derivatives_at_the_ends(kernels, name, end):
    kern = kernels[name]
    e = -end * 1e-4  # one-sided, second order: (3 f(1) - 4 f(1-e) + f(1-2e)) / (2e)

    def one_sided(f):
        return float(3 * f(end) - 4 * f(end + e) + f(end + 2 * e)) / (-2 * e)

    assert float(kern.d1(end)) == pytest.approx(one_sided(kern), rel=1e-6)
    assert float(kern.d2(end)) == pytest.approx(one_sided(kern.d1), rel=1e-6)
    assert float(jax.grad(kern)(end)) == pytest.approx(float(kern.d1(end)), rel=1e-12)
    assert float(jax.grad(kern.d1)(end)) == pytest.approx(float(kern.d2(end)), rel=1e-12)


def test_relu_finite_below_one_and_singular_at_one():
    kern = cov.ReLU()
    q = jnp.concatenate([jnp.linspace(-1 + 1e-12, 1 - 1e-12, 101), jnp.array([1 - 1e-15])])
    for fn in (kern, kern.d1, kern.d2, jax.vmap(jax.grad(kern)), jax.vmap(jax.grad(kern.d1)),
               jax.vmap(jax.grad(kern.d2))):
        assert np.all(np.isfinite(fn(q)))
    assert np.all(np.isposinf(kern.d2(jnp.array([-1.0, 1.0]))))
    assert float(jax.grad(kern)(1.0)) == 0.5  # one-sided h'(1), not NaN
    assert float(kern.d1(-1.0)) == 0.0
    assert np.all(np.isfinite(kern(jnp.array([-1.0, 1.0, 1 + 1e-12]))))  # clipped
    # a gradient through h inside a larger computation stays finite
    loss = lambda x: jnp.sum(kern(jnp.tanh(x)) ** 2)  # noqa: E731
    assert np.all(np.isfinite(jax.grad(loss)(jnp.linspace(-5.0, 5.0, 11))))


# --- factories -----------------------------------------------------------------------------


def test_covariance_factory():
    q = jnp.asarray(INTERIOR)
    np.testing.assert_allclose(cov.covariance("identity")(q), q)
    np.testing.assert_allclose(cov.covariance([0, 0.9, 0.5])(q), 0.9 * q + 0.5 * q**2)
    np.testing.assert_allclose(cov.covariance("fig8")(q), 0.3 * q + 0.5 * q**2)
    np.testing.assert_allclose(cov.covariance("validation")(q), 0.1 * q + 0.5 * q**2)
    assert isinstance(cov.covariance("relu"), cov.ReLU)
    assert float(cov.covariance("tanh")(0.0)) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("bad, match", [([0.0, -0.1, 1.0], ">= 0"), ([0.0, 0.0], r"h\(1\)"),
                                        ([], "non-empty"), ("softplus", "unknown")])
def test_covariance_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        cov.covariance(bad)


def test_target_same_k2_matches_autodiff():
    tgt = cov.target("same", "erf", k=2)
    h = cov.Erf()
    assert tgt.k == 2 and float(tgt.norm2) == pytest.approx(2 * float(h(1.0)))
    v = jnp.array([[0.3, -0.4], [0.0, 0.9], [0.6, 0.7]])
    np.testing.assert_allclose(tgt.phihat(v), h(v[:, 0]) + h(v[:, 1]), rtol=1e-14)
    np.testing.assert_allclose(tgt.grad_phihat(v), jax.vmap(jax.grad(tgt.phihat))(v), rtol=1e-12)


def test_target_rows_and_default_norm2():
    c_h = [0.0, 0.9, 0.5, 1 / 6]
    tgt = cov.target([[0.0, 0.6, 0.2], [0.0, 0.0, 0.0, 0.1]], c_h)
    assert tgt.k == 2
    expected = 0.6**2 / 0.9 + 0.2**2 / 0.5 + 0.1**2 / (1 / 6)
    assert float(tgt.norm2) == pytest.approx(expected, rel=1e-13)
    v = jnp.array([[0.2, 0.5], [-0.3, 0.1]])
    np.testing.assert_allclose(tgt.grad_phihat(v), jax.vmap(jax.grad(tgt.phihat))(v), rtol=1e-12)
    # phihat = h is realized by phi = sigma: norm2 = h(1), per direction
    same = cov.target(c_h, c_h, k=3)
    assert float(same.norm2) == pytest.approx(3 * sum(c_h), rel=1e-13)
    assert cov.target("none", "relu").k == 1 and float(cov.target("none", "relu").norm2) == 0.0


def test_target_rejects_unrealizable_phihat():
    with pytest.raises(ValueError, match="c_2"):
        cov.target([0.0, 0.5, 0.3], "cubic")
    with pytest.raises(ValueError, match="c_2"):  # tanh is odd: its even coefficients vanish
        cov.target([0.0, 0.5, 0.3], "tanh")
    tgt = cov.target([0.0, 0.5, 0.3], "cubic", norm2=2.0)
    assert float(tgt.norm2) == 2.0
    with pytest.raises(ValueError, match="k = 3"):
        cov.target([[0.0, 1.0], [0.0, 0.5]], "cubic", k=3)


def test_target_named_cross_covariances():
    q = jnp.asarray(INTERIOR)
    # tanh target, erf activation: Quadrature vs the Hermite series sum s_p f_p q^p
    tgt = cov.target("tanh", "erf")
    s = cov.hermite_coefficients(cov.activation("erf"), 60)
    f = cov.hermite_coefficients(cov.activation("tanh"), 60)
    np.testing.assert_allclose(tgt.phihat(q[:, None]), cov.Polynomial(s * f)(q), atol=1e-6)
    assert float(tgt.norm2) == pytest.approx(float(cov.covariance("tanh")(1.0)), rel=1e-12)
    # relu target, polynomial activation: exact finite Hermite series
    sigma = cov.activation("cubic")
    tgt = cov.target("relu", "cubic", k=2)
    ref = cov.Quadrature(sigma, "relu")(q)
    np.testing.assert_allclose(tgt.kernels[0](q), ref, atol=3e-3)
    assert float(tgt.norm2) == pytest.approx(2 * (0.5 - 1 / (2 * math.pi)), rel=1e-13)
    assert _monte_carlo(sigma, cov.activation("relu"), 0.6, seed=3) == pytest.approx(
        float(tgt.kernels[0](0.6)), abs=0.01)


# --- transformations -----------------------------------------------------------------------


def test_vmap_and_grad_over_polynomial_coefficients():
    coeffs = jnp.array([[0.0, 0.9, 0.5], [0.0, 0.3, 0.5], [0.1, 0.2, 0.0], [0.0, 0.0, 1.0]])
    q = jnp.asarray(INTERIOR)
    for method in ("__call__", "d1", "d2"):
        batched = jax.vmap(lambda c: getattr(cov.covariance(c), method)(q))(coeffs)
        loop = jnp.stack([getattr(cov.Polynomial(c), method)(q) for c in coeffs])
        np.testing.assert_allclose(batched, loop, rtol=1e-14)
    grad = jax.grad(lambda c: cov.Polynomial(c)(0.5))(coeffs[0])
    np.testing.assert_allclose(grad, 0.5 ** jnp.arange(3))


def test_quadrature_is_a_differentiable_pytree(monkeypatch):
    s = jnp.array([0.0, 0.8, 0.3, 0.2])
    kern = cov.Quadrature(cov.hermite_activation(s))
    # d/ds_p of h(q) = sum s_p^2 q^p is 2 s_p q^p, through the custom-JVP parameter path
    grad = jax.grad(lambda s_: cov.Quadrature(cov.hermite_activation(s_))(0.5))(s)
    np.testing.assert_allclose(grad, 2 * s * 0.5 ** jnp.arange(4), atol=1e-12)
    q = jnp.linspace(-1.0, 1.0, 60).reshape(6, 10)
    full = jax.jit(lambda k, x: k(x))(kern, q)
    np.testing.assert_allclose(full, cov.Polynomial(s**2)(q), atol=1e-12)
    monkeypatch.setattr(cov, "_CHUNK_ELEMENTS", 5000)  # force the chunked (lax.map) path
    np.testing.assert_allclose(kern(q), full, atol=1e-14)
