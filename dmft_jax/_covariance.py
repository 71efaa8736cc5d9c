"""Covariance functions of the activation and the target (spec section 2).

A *kernel* here is a scalar function of a correlation q in [-1, 1] together with its first two
derivatives, evaluated elementwise on arrays:

    h(q)  = E[sigma(G1) sigma(Gq)]                                               [A.5]
    phihat restricted to one index direction: q -> E[sigma(Gq) phi_j(G1)]          [A.7]

The DMFT equations need h, h', h'' (memory kernels [C.18]) and phihat, grad phihat on R^k.
Kernels are `eqx.Module`s whose numerical parameters are traced arrays, so that `jax.vmap` and
`jax.grad` over e.g. the Taylor coefficients work without recompiling.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike
from numpy.polynomial.hermite_e import hermegauss


class AbstractKernel(eqx.Module):
    """A scalar function of a correlation q in [-1, 1] with its first two derivatives.

    Each method acts elementwise on an array of any shape.
    """

    @abc.abstractmethod
    def __call__(self, q: ArrayLike) -> Array:
        """The value k(q)."""

    @abc.abstractmethod
    def d1(self, q: ArrayLike) -> Array:
        """The first derivative k'(q)."""

    @abc.abstractmethod
    def d2(self, q: ArrayLike) -> Array:
        """The second derivative k''(q)."""


class Polynomial(AbstractKernel):
    """k(q) = sum_p c_p q^p, Taylor coefficients constant term first (spec section 2).

    With c_p = s_p f_p this is the covariance of an activation and a target with normalized
    Hermite coefficients s_p, f_p; with c_p = s_p^2 it is h of the activation realizing them.
    """

    coeffs: Array

    def __init__(self, coeffs: ArrayLike):
        self.coeffs = jnp.asarray(coeffs, dtype=jnp.result_type(float))
        if self.coeffs.ndim != 1 or self.coeffs.shape[0] < 1:
            raise ValueError(
                f"Polynomial needs a 1-d array of Taylor coefficients, got shape {self.coeffs.shape}"
            )

    def __check_init__(self):
        # Concrete values only: under jit/vmap the coefficients are tracers (checked when the
        # concrete call is made). Signs are not checked here: a cross-covariance phihat may
        # have negative coefficients; `covariance` checks those of an h.
        vals = _concrete(self.coeffs)
        if vals is not None and not np.all(np.isfinite(vals)):
            raise ValueError(f"Polynomial coefficients must be finite, got {vals.tolist()}")

    def _horner(self, coeffs: Array, q: ArrayLike) -> Array:
        q = jnp.asarray(q)
        out = jnp.zeros_like(q, dtype=jnp.result_type(q, coeffs))
        for c in coeffs[::-1]:
            out = out * q + c
        return out

    def _derivative_coeffs(self, coeffs: Array) -> Array:
        if coeffs.shape[0] == 1:
            return jnp.zeros_like(coeffs)
        return coeffs[1:] * jnp.arange(1, coeffs.shape[0], dtype=coeffs.dtype)

    def __call__(self, q: ArrayLike) -> Array:
        return self._horner(self.coeffs, q)

    def d1(self, q: ArrayLike) -> Array:
        return self._horner(self._derivative_coeffs(self.coeffs), q)

    def d2(self, q: ArrayLike) -> Array:
        return self._horner(self._derivative_coeffs(self._derivative_coeffs(self.coeffs)), q)


class Target(eqx.Module):
    """The target phi of a k-index model, through phihat and ||phi||^2 (spec [A.7]).

    The target is phi(z) = sum_j phi_j(z_j) over the k index directions; then
    phihat(v) = sum_j khat_j(v_j) with khat_j(q) = E[sigma(Gq) phi_j(G1)], because the
    preactivation <v, G> + sqrt(1 - |v|^2) G0 has correlation v_j with G_j.
    Pure noise is `Target.pure_noise()`: phihat = 0, ||phi||^2 = 0 (k = 1, v stays 0).
    """

    kernels: tuple[AbstractKernel, ...]
    norm2: Array

    def __init__(self, kernels, norm2: ArrayLike):
        if isinstance(kernels, AbstractKernel):
            kernels = (kernels,)
        self.kernels = tuple(kernels)
        if len(self.kernels) < 1:
            raise ValueError("Target needs at least one index direction (k >= 1)")
        self.norm2 = jnp.asarray(norm2, dtype=jnp.result_type(float))

    @property
    def k(self) -> int:
        """Number of index directions."""
        return len(self.kernels)

    @classmethod
    def pure_noise(cls) -> "Target":
        return cls(Polynomial(jnp.zeros(1)), 0.0)

    def phihat(self, v: ArrayLike) -> Array:
        """phihat(v) for v of shape (..., k)."""
        v = jnp.asarray(v)
        return sum(kern(v[..., j]) for j, kern in enumerate(self.kernels))

    def grad_phihat(self, v: ArrayLike) -> Array:
        """grad phihat(v), shape (..., k)."""
        v = jnp.asarray(v)
        return jnp.stack([kern.d1(v[..., j]) for j, kern in enumerate(self.kernels)], axis=-1)


# ---------------------------------------------------------------------------------------------
# Hermite tools (spec section 2)
# ---------------------------------------------------------------------------------------------

#: Gauss-Hermite nodes per axis for 1-D projections (`hermite_coefficients`) and for the 2-D
#: quadrature in `Quadrature`. 100 nodes give ~1e-16 for erf and ~1e-12 for tanh (engineering
#: notes); only kinks (ReLU) converge slowly, and those have closed forms.
DEFAULT_NODES = 100

#: Points of the 2-D product rule whose weight is below this are dropped: their total weight is
#: < 1e-18, far below rounding, and it shrinks the 100 x 100 grid to ~2800 points.
_PRUNE_WEIGHT = 1e-22

#: Largest (number of q values) x (grid points) evaluated in one vectorized batch (~32 MB in
#: float64); larger q arrays are processed in chunks by `lax.map` to bound memory.
_CHUNK_ELEMENTS = 1 << 22


def _float_dtype():
    # The ambient float dtype: float64 if the caller enabled x64, float32 otherwise.
    return jnp.result_type(float)


@functools.lru_cache(maxsize=None)
def gauss_hermite(nodes: int = DEFAULT_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x_i and weights w_i with sum_i w_i f(x_i) ~ E f(G), G ~ N(0, 1).

    `numpy.polynomial.hermite_e.hermegauss` integrates against exp(-x^2/2); dividing the weights
    by their sum (= sqrt(2 pi)) turns this into the standard Gaussian expectation. Exact for
    polynomials of degree <= 2 * nodes - 1. Static numpy float64 arrays (read-only, cached).
    """
    x, w = hermegauss(int(nodes))
    w = w / w.sum()
    x.flags.writeable = False
    w.flags.writeable = False
    return x, w


def _hermite_stack(x, degree: int, xp):
    # Three-term recurrence for p_k = He_k / sqrt(k!): He_{k+1} = x He_k - k He_{k-1} becomes
    # p_{k+1} = (x p_k - sqrt(k) p_{k-1}) / sqrt(k+1); stable, unlike evaluating monomials.
    cols = [xp.ones_like(x), x]
    for k in range(1, degree):
        cols.append((x * cols[k] - math.sqrt(k) * cols[k - 1]) / math.sqrt(k + 1))
    return xp.stack(cols[: degree + 1], axis=-1)


def normalized_hermite(x: ArrayLike, degree: int) -> Array:
    """He_k(x) / sqrt(k!) for k = 0..degree, stacked on a new last axis: shape (..., degree+1).

    These are orthonormal under the standard Gaussian, E[p_j(G) p_k(G)] = delta_jk, which is
    what makes h(q) = sum_k s_k^2 q^k (spec section 2).
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(_float_dtype())
    return _hermite_stack(x, int(degree), jnp)


def hermite_coefficients(fn: Callable, degree: int, nodes: int = DEFAULT_NODES) -> Array:
    """Normalized Hermite coefficients c_k = E[fn(G) He_k(G)] / sqrt(k!), k = 0..degree.

    Projection by 1-D Gauss-Hermite quadrature (exact for polynomial fn of degree
    <= 2 * nodes - 1 - degree). The nodes and the basis are static numpy float64; fn is called on
    a jnp array, so coefficients traced inside fn (e.g. a `HermiteActivation`) stay traced.
    """
    x, w = gauss_hermite(nodes)
    basis = _hermite_stack(x, int(degree), np) * w[:, None]
    dtype = _float_dtype()
    vals = jnp.asarray(fn(jnp.asarray(x, dtype=dtype)))
    return vals @ jnp.asarray(basis, dtype=dtype)


def relu_hermite_coefficients(degree: int) -> np.ndarray:
    """Exact normalized Hermite coefficients of the centered ReLU x_+ - 1/sqrt(2 pi).

    By Gaussian integration by parts E[f He_n] = E[f^(n)], and (x_+)'' = delta_0, so for n >= 2
    E[x_+ He_n(G)] = phi(0) He_{n-2}(0) with He_{2j}(0) = (-1)^j (2j-1)!!. The coefficient 0 is
    0 (centered) and coefficient 1 is 1/2. Quadrature would only reach ~1e-3 here (the kink).
    """
    out = np.zeros(int(degree) + 1)
    if degree >= 1:
        out[1] = 0.5
    he0 = 1.0  # He_{n-2}(0) for n = 2, 4, 6, ...
    for n in range(2, int(degree) + 1, 2):
        out[n] = he0 / math.sqrt(2 * math.pi) / math.sqrt(math.factorial(n))
        he0 *= -(n - 1)
    return out


# ---------------------------------------------------------------------------------------------
# Activations sigma (centered: E sigma(G) = 0, spec section 1)
# ---------------------------------------------------------------------------------------------

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _relu(x):
    # E[G_+] = 1/sqrt(2 pi); subtracting it centers the activation as spec section 1 assumes.
    return jnp.maximum(x, 0.0) - _INV_SQRT_2PI


def _erf(x):
    return jax.scipy.special.erf(x)  # odd, hence centered


def _tanh(x):
    return jnp.tanh(x)  # odd, hence centered


def _identity(x):
    return x


_NAMED_ACTIVATIONS = {"relu": _relu, "erf": _erf, "tanh": _tanh, "identity": _identity}


class Activation(eqx.Module):
    """A fixed elementwise function sigma, wrapped as a Module so kernels holding it are pytrees
    of arrays only (the function is a static field), which keeps `jax.jit`/`jax.vmap` happy."""

    fn: Callable = eqx.field(static=True)
    name: str = eqx.field(static=True, default="")

    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(_float_dtype())
        return self.fn(x)


class HermiteActivation(eqx.Module):
    """sigma(x) = sum_k s_k He_k(x) / sqrt(k!) (spec section 2), s traced.

    Its covariance is exactly h(q) = sum_k s_k^2 q^k; E sigma(G) = s_0 (0 for a centered one).
    """

    coeffs: Array

    def __init__(self, coeffs: ArrayLike):
        self.coeffs = jnp.asarray(coeffs, dtype=_float_dtype())
        if self.coeffs.ndim != 1 or self.coeffs.shape[0] < 1:
            raise ValueError(f"Hermite coefficients must be a non-empty 1-d array, got shape "
                             f"{self.coeffs.shape}")

    def __call__(self, x: ArrayLike) -> Array:
        return normalized_hermite(x, self.coeffs.shape[0] - 1) @ self.coeffs


def hermite_activation(s: ArrayLike) -> HermiteActivation:
    """The activation sigma = sum_k s_k He_k / sqrt(k!) with normalized Hermite coefficients s."""
    return HermiteActivation(s)


def _safe_sqrt(c: Array) -> Array:
    # "Double where": sqrt has an infinite derivative at 0; taking it of a safe value keeps
    # gradients with respect to vanishing coefficients at 0 instead of NaN.
    pos = c > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, c, 1.0)), 0.0)


def activation_from_h_coeffs(c: ArrayLike) -> HermiteActivation:
    """The activation realizing h(q) = sum_k c_k q^k: s_k = sqrt(c_k) (spec section 2).

    Example: c = (0, 0.9, 0, 1/6) gives sigma(x) = sqrt(0.9) x + (x^3 - 3x)/6. The c_k must be
    >= 0 and h(1) > 0 (checked when c is concrete).
    """
    return HermiteActivation(_safe_sqrt(_check_h_coeffs(c)))


def activation(spec) -> eqx.Module:
    """The activation sigma as a jnp-callable Module.

    spec: "relu" (x_+ - 1/sqrt(2 pi)), "erf", "tanh", "identity", a `PRESETS` name or a sequence
    of Taylor coefficients of h (-> `activation_from_h_coeffs`), or any callable (wrapped).
    """
    if isinstance(spec, str):
        name = spec.lower()
        if name in _NAMED_ACTIVATIONS:
            return Activation(_NAMED_ACTIVATIONS[name], name)
        if name in PRESETS:
            return activation_from_h_coeffs(PRESETS[name])
        raise ValueError(f"unknown activation {spec!r}; known names: "
                         f"{sorted(_NAMED_ACTIVATIONS) + sorted(PRESETS)}")
    if isinstance(spec, eqx.Module) and callable(spec):
        return spec
    if callable(spec):
        return Activation(spec, getattr(spec, "__name__", ""))
    return activation_from_h_coeffs(spec)


# ---------------------------------------------------------------------------------------------
# Kernels with closed forms or quadrature
# ---------------------------------------------------------------------------------------------


def _as_float(q: ArrayLike) -> Array:
    q = jnp.asarray(q)
    return q if jnp.issubdtype(q.dtype, jnp.floating) else q.astype(_float_dtype())


def _clip(q: Array) -> Array:
    # Correlations live in [-1, 1]; rounding in the solver can step slightly outside, where
    # sqrt(1 - q^2) / arcsin would give NaN. Only used inside the custom-JVP raw functions,
    # because jnp.clip's derivative at the boundary is 1/2, which would halve h'(1).
    return jnp.clip(q, -1.0, 1.0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _linked(raw, deriv, kern, q):
    """raw(kern, q), whose derivative in q is declared to be deriv(kern, q).

    Autodiff of closed forms such as sqrt(1 - q^2) + q arccos(q) gives inf - inf = NaN at |q| = 1
    although the derivative is finite there; declaring it makes jax.grad(k)(q) == k.d1(q)
    everywhere on [-1, 1] (one-sided at the ends). Derivatives with respect to the kernel's own
    parameters (e.g. Hermite coefficients) still come from autodiff of raw.
    """
    return raw(kern, q)


@_linked.defjvp
def _linked_jvp(raw, deriv, primals, tangents):
    kern, q = primals
    dkern, dq = tangents
    value, dvalue = jax.jvp(lambda k: raw(k, q), (kern,), (dkern,))
    return value, dvalue + deriv(kern, q) * dq


class _LinkedKernel(AbstractKernel):
    """Kernel from raw h, h', h'' (`_h0`, `_h1`, `_h2`), chained so that autodiff of the value
    gives d1 and autodiff of d1 gives d2 (see `_linked`)."""

    @abc.abstractmethod
    def _h0(self, q: Array) -> Array: ...

    @abc.abstractmethod
    def _h1(self, q: Array) -> Array: ...

    @abc.abstractmethod
    def _h2(self, q: Array) -> Array: ...

    def __call__(self, q: ArrayLike) -> Array:
        return _linked(type(self)._h0, type(self).d1, self, _as_float(q))

    def d1(self, q: ArrayLike) -> Array:
        return _linked(type(self)._h1, type(self).d2, self, _as_float(q))

    def d2(self, q: ArrayLike) -> Array:
        return self._h2(_as_float(q))


class ReLU(_LinkedKernel):
    """h of the centered ReLU x_+ - 1/sqrt(2 pi): the arc-cosine kernel minus the mean^2 [A.5].

        h(q)   = (sqrt(1-q^2) + (pi - arccos q) q) / (2 pi) - 1/(2 pi)
        h'(q)  = 1/4 + arcsin(q) / (2 pi)
        h''(q) = 1 / (2 pi sqrt(1 - q^2))

    h'' is singular at |q| = 1 and d2 returns +inf exactly there: the DMFT multiplies h''(C) by
    the response R, and on the diagonal where C_d = 1 the response R(t, t) = 0, so the solver
    masks that entry. Below 1 everything (values and gradients) is finite: q is clipped to
    [-1, 1] and h'' uses a "double where" so its own gradient is not NaN.
    """

    def _h0(self, q):
        q = _clip(q)
        root = jnp.sqrt((1.0 - q) * (1.0 + q))  # (1-q)(1+q): no cancellation near |q| = 1
        return (root + (jnp.pi - jnp.arccos(q)) * q) / (2 * jnp.pi) - 1.0 / (2 * jnp.pi)

    def _h1(self, q):
        return 0.25 + jnp.arcsin(_clip(q)) / (2 * jnp.pi)

    def _h2(self, q):
        q = _clip(q)
        inside = jnp.abs(q) < 1.0
        safe = jnp.where(inside, q, 0.0)  # double where: no inf/NaN reaches the gradient
        value = 1.0 / (2 * jnp.pi * jnp.sqrt((1.0 - safe) * (1.0 + safe)))
        return jnp.where(inside, value, jnp.inf)


class Erf(_LinkedKernel):
    """h of sigma = erf(x) (odd, so centered) [A.5]: smooth on [-1, 1].

        h(q) = (2/pi) arcsin(2q/3),  h'(q) = 4 / (pi sqrt(9 - 4q^2)),
        h''(q) = 16 q / (pi (9 - 4q^2)^(3/2))
    """

    def _h0(self, q):
        return (2.0 / jnp.pi) * jnp.arcsin(2.0 * _clip(q) / 3.0)

    def _h1(self, q):
        q = _clip(q)
        return 4.0 / (jnp.pi * jnp.sqrt(9.0 - 4.0 * q * q))

    def _h2(self, q):
        q = _clip(q)
        return 16.0 * q / (jnp.pi * (9.0 - 4.0 * q * q) ** 1.5)


def _derivative(fn: Callable) -> Callable:
    # Elementwise derivative of an elementwise function: the gradient of the sum.
    return lambda x: jax.grad(lambda t: jnp.sum(fn(t)))(x)


@functools.lru_cache(maxsize=None)
def _grid(nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Product Gauss-Hermite rule for (X, Z) iid N(0, 1), with negligible points pruned.
    x, w = gauss_hermite(nodes)
    xx, zz = np.meshgrid(x, x, indexing="ij")
    ww = np.outer(w, w)
    keep = ww > _PRUNE_WEIGHT
    return xx[keep], zz[keep], ww[keep] / ww[keep].sum()


def _expect_pair(f1: Callable, f2: Callable, q: Array, nodes: int) -> Array:
    """E[f1(X) f2(Y)] with X, Y standard Gaussians of correlation q, elementwise in q.

    Y = q X + sqrt(1 - q^2) Z with Z independent; a 2-D Gauss-Hermite rule in (X, Z). At |q| = 1
    this is the 1-D rule for E[f1(X) f2(+-X)], so it stays accurate there.
    """
    dtype = q.dtype
    x, z, w = (jnp.asarray(a, dtype=dtype) for a in _grid(nodes))
    wf1 = w * f1(x)
    qc = _clip(q)
    inside = jnp.abs(qc) < 1.0
    rad = jnp.where(inside, (1.0 - qc) * (1.0 + qc), 1.0)  # double where: finite gradient
    r = jnp.where(inside, jnp.sqrt(rad), 0.0)

    def one(qr):
        return f2(qr[0] * x + qr[1] * z) @ wf1

    pairs = jnp.stack([qc.reshape(-1), r.reshape(-1)], axis=-1)
    if pairs.shape[0] * x.shape[0] <= _CHUNK_ELEMENTS:
        out = jax.vmap(one)(pairs)
    else:  # bound memory for large q arrays
        out = jax.lax.map(one, pairs, batch_size=max(1, _CHUNK_ELEMENTS // x.shape[0]))
    return out.reshape(q.shape)


def _mean(fn: Callable, nodes: int, dtype) -> Array:
    x, w = gauss_hermite(nodes)
    return jnp.asarray(w, dtype=dtype) @ fn(jnp.asarray(x, dtype=dtype))


class Quadrature(_LinkedKernel):
    """Cross-covariance k(q) = Cov[sigma1(X), sigma2(Y)], corr(X, Y) = q, by Gauss-Hermite.

    Used for h of activations without a closed form (tanh, [A.5]) and for phihat restricted to
    one direction when phi differs from sigma ([A.7]). The means are subtracted, so an uncentered
    function is centered as spec section 1 assumes (a no-op for the named activations).
    Derivatives use the Hermite/Price identity d^n/dq^n E[f(X) g(Y)] = E[f^(n)(X) g^(n)(Y)],
    with f^(n) from jax.grad; this needs sigma1, sigma2 n times differentiable (a ReLU has a
    delta as second derivative, so d2 is wrong for it: use `ReLU`). Accurate for smooth
    functions (tanh ~1e-12 at 100 nodes) including |q| = 1; algebraic convergence for kinks.
    Cost: ~2800 function evaluations per q at 100 nodes.
    """

    sigma1: eqx.Module
    sigma2: eqx.Module
    nodes: int = eqx.field(static=True)

    def __init__(self, sigma1: Callable, sigma2: Callable | None = None,
                 nodes: int = DEFAULT_NODES):
        self.sigma1 = activation(sigma1)
        self.sigma2 = self.sigma1 if sigma2 is None else activation(sigma2)
        self.nodes = int(nodes)

    def _h0(self, q):
        dtype = q.dtype
        means = _mean(self.sigma1, self.nodes, dtype) * _mean(self.sigma2, self.nodes, dtype)
        return _expect_pair(self.sigma1, self.sigma2, q, self.nodes) - means

    def _h1(self, q):
        return _expect_pair(_derivative(self.sigma1), _derivative(self.sigma2), q, self.nodes)

    def _h2(self, q):
        d2s1 = _derivative(_derivative(self.sigma1))
        d2s2 = _derivative(_derivative(self.sigma2))
        return _expect_pair(d2s1, d2s2, q, self.nodes)


# ---------------------------------------------------------------------------------------------
# Presets and factories
# ---------------------------------------------------------------------------------------------

#: Taylor coefficients (constant term first) of the covariances in the paper's figures
#: (spec sections 2 and 9).
PRESETS: dict[str, list[float]] = {
    "cubic": [0.0, 0.9, 0.0, 1.0 / 6.0],  # h = 0.9q + q^3/6 (figs 2, 4, 5, 18-31)
    "quadratic": [0.0, 0.9, 0.5],  # h = 0.9q + q^2/2 (figs 3, 11-17)
    "fig8": [0.0, 0.3, 0.5],  # h = 0.3q + q^2/2 (figs 8-10, 32-33)
    "validation": [0.0, 0.1, 0.5],  # h = q/10 + q^2/2 (Gaussian-model validation)
}


def _concrete(x) -> np.ndarray | None:
    # Factories validate concrete inputs; inside jax.vmap/jit the values are tracers and the
    # checks are skipped (they ran, or would run, on the concrete call).
    try:
        return np.asarray(x, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_h_coeffs(c: ArrayLike) -> Array:
    """Validate Taylor coefficients of a covariance h: 1-d, finite, >= 0, h(1) > 0."""
    arr = jnp.asarray(c, dtype=_float_dtype())
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"covariance Taylor coefficients must be a non-empty 1-d sequence, got "
                         f"shape {arr.shape}")
    vals = _concrete(c)
    if vals is None:
        return arr
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"covariance Taylor coefficients must be finite, got {vals.tolist()}")
    if np.any(vals < 0):
        p = int(np.argmax(vals < 0))
        raise ValueError(f"covariance Taylor coefficients must be >= 0 (c_p = s_p^2 is a squared "
                         f"Hermite coefficient of sigma); got c_{p} = {vals[p]} in {vals.tolist()}")
    if not vals.sum() > 0:
        raise ValueError(f"h(1) = sum_p c_p = E sigma(G)^2 must be > 0 (else sigma = 0); got "
                         f"{vals.sum()} from {vals.tolist()}")
    return arr


def covariance(spec) -> AbstractKernel:
    """The covariance h(q) = E[sigma(G1) sigma(Gq)] [A.5] as a kernel.

    spec: "relu" -> `ReLU` (closed form), "erf" -> `Erf`, "tanh" -> `Quadrature`,
    "identity" -> Polynomial([0, 1]), a `PRESETS` name or a sequence of Taylor coefficients
    (>= 0 with h(1) > 0, else ValueError) -> `Polynomial`, an activation Module/callable
    (-> exact Polynomial for a `HermiteActivation`, else `Quadrature`), or a kernel (returned;
    a `Polynomial`'s concrete coefficients are checked like a sequence's).
    """
    if isinstance(spec, Polynomial):
        _check_h_coeffs(spec.coeffs)  # as an h: >= 0, h(1) > 0 (concrete values)
        return spec
    if isinstance(spec, AbstractKernel):
        return spec
    if isinstance(spec, str):
        name = spec.lower()
        closed = {"relu": ReLU, "erf": Erf}
        if name in closed:
            return closed[name]()
        if name == "tanh":
            return Quadrature(activation("tanh"))
        if name == "identity":
            return Polynomial(jnp.array([0.0, 1.0]))
        if name in PRESETS:
            return Polynomial(_check_h_coeffs(PRESETS[name]))
        raise ValueError(f"unknown covariance {spec!r}; known names: "
                         f"{['erf', 'identity', 'relu', 'tanh'] + sorted(PRESETS)}")
    if isinstance(spec, HermiteActivation):
        return Polynomial(spec.coeffs**2)
    if callable(spec):
        return Quadrature(spec)
    return Polynomial(_check_h_coeffs(spec))


def _poly_hermite(spec) -> Array | None:
    """Normalized Hermite coefficients s of sigma when it is a polynomial given by h's Taylor
    coefficients (a sequence, a preset, "identity"); None for the other named activations."""
    if isinstance(spec, str):
        name = spec.lower()
        if name == "identity":
            return jnp.array([0.0, 1.0], dtype=_float_dtype())
        return _safe_sqrt(_check_h_coeffs(PRESETS[name])) if name in PRESETS else None
    if isinstance(spec, HermiteActivation):
        return spec.coeffs
    if callable(spec):
        return None
    return _safe_sqrt(_check_h_coeffs(spec))


def _hermite_of(spec, degree: int) -> Array:
    """Normalized Hermite coefficients 0..degree of the centered activation named by spec."""
    s = _poly_hermite(spec)
    if s is not None:
        return jnp.zeros(degree + 1, s.dtype).at[: min(degree + 1, s.shape[0])].set(
            s[: degree + 1])
    if isinstance(spec, str) and spec.lower() == "relu":
        return jnp.asarray(relu_hermite_coefficients(degree), dtype=_float_dtype())
    coeffs = hermite_coefficients(activation(spec), degree)
    return coeffs.at[0].set(0.0)  # centered (spec section 1): drop the mean


def _cross_kernel(name: str, activation_spec) -> AbstractKernel:
    """khat(q) = E[sigma(Gq) phi(G1)] for phi the centered activation `name` [A.7]."""
    if isinstance(activation_spec, str) and activation_spec.lower() == name:
        return covariance(name)  # phi = sigma: phihat = h
    s = _poly_hermite(activation_spec)
    if s is not None:  # sigma polynomial: the series sum s_p f_p q^p is finite, hence exact
        return Polynomial(s * _hermite_of(name, s.shape[0] - 1))
    f = _poly_hermite(name)
    if f is not None:  # phi polynomial: same, with the roles exchanged
        return Polynomial(f * _hermite_of(activation_spec, f.shape[0] - 1))
    return Quadrature(activation(activation_spec), activation(name))


def _coefficient_rows(spec, k: int) -> list:
    first = spec[0] if isinstance(spec, (list, tuple)) and len(spec) else None
    if first is not None and np.ndim(first) >= 1:
        rows = list(spec)
    elif np.ndim(spec) == 2:
        rows = [spec[j] for j in range(jnp.shape(spec)[0])]
    else:
        return [jnp.asarray(spec, dtype=_float_dtype())] * k
    if k not in (1, len(rows)):
        raise ValueError(f"target got {len(rows)} coefficient rows but k = {k}")
    return [jnp.asarray(r, dtype=_float_dtype()) for r in rows]


def _min_norm2(row: Array, activation_spec, explicit: bool) -> Array:
    """||phi_j||^2 of the phi_j realizing phihat_j = sum_p c_p q^p: f_p = c_p / s_p [A.7].

    Sum of c_p^2 / c_h_p over p with c_h_p = s_p^2 > 0. A nonzero c_p where c_h_p = 0 cannot be
    realized by any phi: ValueError unless the caller gave norm2 explicitly.
    """
    degree = row.shape[0] - 1
    c_h = _hermite_of(activation_spec, degree) ** 2
    support = c_h > 1e-12 * jnp.max(c_h)  # named activations: quadrature zeros are ~1e-17
    vals, supp = _concrete(row), _concrete(support)
    if not explicit and vals is not None and supp is not None:
        bad = (vals != 0) & ~supp.astype(bool)
        if np.any(bad):
            p = int(np.argmax(bad))
            raise ValueError(f"phihat has Taylor coefficient c_{p} = {vals[p]} != 0 where h's is "
                             f"0: no target phi realizes it (f_p = c_p / s_p); pass norm2 "
                             f"explicitly")
    return jnp.sum(jnp.where(support, row**2 / jnp.where(support, c_h, 1.0), 0.0))


def target(spec, activation_spec, k: int = 1, norm2: ArrayLike | None = None) -> Target:
    """The target phi(z) = sum_j phi_j(z_j) through phihat and ||phi||^2 [A.7].

    spec:
    - "same": phi_j = sigma, so phihat_j = h and ||phi||^2 = k h(1);
    - "none": pure noise (`Target.pure_noise()` for k = 1; k zero directions otherwise);
    - a name ("relu", "erf", "tanh", "identity", a preset): phi_j is that centered function;
      phihat_j is h's closed form if it equals the activation, an exact Polynomial if either is
      a polynomial, else a `Quadrature` cross-covariance; ||phi||^2 = k E phi_1(G)^2;
    - Taylor coefficients of phihat_j (constant first), copied to k directions, or a list of k
      rows (one per direction). ||phi||^2 defaults to the sum over directions of
      sum_p c_p^2 / c_h_p (the phi with Hermite coefficients f_p = c_p / s_p); ValueError if
      some c_p != 0 where h's c_h_p = 0.
    activation_spec: as for `covariance`/`activation`. norm2: if given, the total ||phi||^2
    (over all directions), overriding the default.
    """
    if isinstance(spec, str) and spec.lower() in ("none", "same"):
        if spec.lower() == "none":
            return Target.pure_noise() if k == 1 else Target((Polynomial(jnp.zeros(1)),) * k, 0.0)
        kern = covariance(activation_spec)
        return Target((kern,) * k, k * kern(1.0) if norm2 is None else norm2)
    if isinstance(spec, str):
        kern = _cross_kernel(spec.lower(), activation_spec)
        return Target((kern,) * k, k * covariance(spec)(1.0) if norm2 is None else norm2)
    rows = _coefficient_rows(spec, k)
    kernels = tuple(Polynomial(r) for r in rows)
    default = sum(_min_norm2(r, activation_spec, norm2 is not None) for r in rows)
    return Target(kernels, default if norm2 is None else norm2)
