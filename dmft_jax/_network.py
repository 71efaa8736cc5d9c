"""Two-layer networks and k-index data for experiments that match the DMFT (spec sections 1, 2).

A `Problem` bundles what a network experiment and its DMFT must share: the activation sigma,
its covariance h, the target phi (phihat and ||phi||^2 for the theory, the functions phi_j for
the data). Built by `problem(activation_spec, target_spec, k=)` from the same specs as
`covariance` / `target`, so that, e.g., `problem([0, 0.9, 0, 1/6])` trains a network with
sigma = sqrt(0.9) x + (x^3 - 3x)/6 whose covariance is exactly the DMFT's h = 0.9q + q^3/6.

The network is f(x) = (1/m) sum_i a_i sigma(<w_i, x>) [1.1] with rows w_i kept on the unit
sphere or in the unit ball (`project`); data are x ~ N(0, I_d), y = phi(U^T x) + tau eps [2.1].
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike

from ._covariance import (
    AbstractKernel,
    HermiteActivation,
    Target,
    _hermite_of,
    _poly_hermite,
    activation,
    covariance,
    target,
)

#: The two projections of spec section 1: onto the unit sphere, or (as in the paper's SGD runs)
#: onto the unit ball.
PROJECTIONS = ("sphere", "ball")


# ---------------------------------------------------------------------------------- problem
class Problem(eqx.Module):
    """Activation, covariance and target shared by a network experiment and its DMFT.

    **Fields:**

    - `sigma`: the activation (a jnp-callable Module), centered (E sigma(G) = 0).
    - `h`: its covariance h(q) = E[sigma(G1) sigma(Gq)] [A.5] (exact for `sigma`).
    - `target`: phihat and ||phi||^2 [A.7] of the target below.
    - `phi`: the functions phi_j, one per index direction (empty: pure noise).
    - `k`: number of index directions (static; >= 1 also for pure noise).
    - `sigma_hermite` (K+1,), `phi_hermite` (k, K+1): normalized Hermite coefficients of sigma and
      of the phi_j when all are polynomials (else None). With them the population risk is exact
      also for rows inside the unit ball (`population_risk`).
    """

    sigma: eqx.Module
    h: AbstractKernel
    target: Target
    phi: tuple
    k: int = eqx.field(static=True)
    sigma_hermite: Array | None = None
    phi_hermite: Array | None = None

    def phi_of(self, z: Array) -> Array:
        """phi(z) = sum_j phi_j(z_j) for z of shape (..., k); zero for pure noise."""
        if not self.phi:
            return jnp.zeros(z.shape[:-1], z.dtype)
        return sum(fn(z[..., j]) for j, fn in enumerate(self.phi))


def _phi_functions(target_spec, activation_spec, sigma, s, k):
    """The phi_j and, if sigma is a polynomial of degree K (Hermite coefficients s), the
    normalized Hermite coefficients 0..K of the phi_j, shape (k, K+1) (else None): only those
    enter E[sigma(<w, x>) phi_j(<u_j, x>)]."""
    degree = None if s is None else s.shape[0] - 1
    if isinstance(target_spec, str):
        name = target_spec.lower()
        if name == "none":
            return (), (None if s is None else jnp.zeros((k, s.shape[0]), s.dtype))
        if name == "same":
            return (sigma,) * k, (None if s is None else jnp.stack([s] * k))
        f = None if s is None else _hermite_of(name, degree)
        return (activation(name),) * k, (None if f is None else jnp.stack([f] * k))
    # Taylor coefficients c_p of phihat_j: the phi_j with f_p = c_p / s_p (as `target` does).
    fs = []
    for kern in target(target_spec, activation_spec, k=k).kernels:
        c = kern.coeffs
        sc = _hermite_of(activation_spec, c.shape[0] - 1)
        support = sc**2 > 1e-12 * jnp.max(sc**2)
        fs.append(jnp.where(support, c / jnp.where(support, sc, 1.0), 0.0))
    phis = tuple(HermiteActivation(f) for f in fs)
    if s is None:
        return phis, None
    fs = [jnp.pad(f, (0, max(0, degree + 1 - f.shape[0])))[: degree + 1] for f in fs]
    return phis, jnp.stack(fs)


def problem(activation_spec="cubic", target_spec="same", *, k: int = 1) -> Problem:
    """The `Problem` for an activation and a target given as for `covariance` and `target`.

    `activation_spec`: "relu" (the exact centered ReLU; its kernel is the arc-cosine one),
    "erf", "tanh", "identity", a preset name or Taylor coefficients of h (-> the Hermite
    activation realizing h, `activation_from_h_coeffs`), or an activation Module.
    `target_spec`: "same" (phi_j = sigma), "none" (pure noise), a function name, or Taylor
    coefficients of phihat_j (the phi_j with Hermite coefficients f_p = c_p / s_p), exactly as
    in `target`, whose phihat and ||phi||^2 this problem carries.
    """
    sigma = activation(activation_spec)
    s = _poly_hermite(activation_spec)
    h = covariance(activation_spec)  # given Taylor coefficients stay exact (s_p^2 may round)
    tgt = target(target_spec, activation_spec, k=k)
    phi, f = _phi_functions(target_spec, activation_spec, sigma, s, k)
    return Problem(sigma=sigma, h=h, target=tgt, phi=phi, k=int(k), sigma_hermite=s,
                   phi_hermite=f)


# ---------------------------------------------------------------------------------- network
class TwoLayerNetwork(eqx.Module):
    """f(x; a, W) = (1/m) sum_i a_i sigma(<w_i, x>)   [1.1]

    **Fields:** `a` (m,) second layer; `W` (m, d) first layer, one row w_i per neuron;
    `sigma` the activation.
    """

    a: Array
    W: Array
    sigma: eqx.Module

    @property
    def m(self) -> int:
        return self.W.shape[0]

    @property
    def d(self) -> int:
        return self.W.shape[1]

    def __call__(self, x: Array) -> Array:
        """f at one input x of shape (d,)."""
        return jnp.mean(self.a * self.sigma(self.W @ x))

    def predict(self, X: Array) -> Array:
        """f at the rows of X, shape (n, d) -> (n,)."""
        return self.sigma(X @ self.W.T) @ self.a / self.m


def project(W: Array, projection: str = "sphere") -> Array:
    """Each row w_i onto the unit sphere (w / ||w||) or the unit ball (w / max(||w||, 1))."""
    norm = jnp.linalg.norm(W, axis=-1, keepdims=True)
    if projection == "sphere":
        return W / norm
    if projection == "ball":
        return W / jnp.maximum(norm, 1.0)
    raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")


def init_network(key, m: int, d: int, *, a0: ArrayLike, sigma: eqx.Module,
                 projection: str = "sphere", dtype=None) -> TwoLayerNetwork:
    """Symmetric initialization (spec section 1): a_i(0) = a0 for all i, W(0) with iid N(0, 1/d)
    entries then projected (uniform on the sphere, or the paper's unit-ball protocol)."""
    dtype = jnp.result_type(float, a0) if dtype is None else dtype
    return network_from_normals(jr.normal(key, (m, d), dtype), a0=a0, sigma=sigma,
                                projection=projection)


def network_from_normals(z: Array, *, a0: ArrayLike, sigma: eqx.Module,
                         projection: str = "sphere") -> TwoLayerNetwork:
    """`init_network` from an (m, d) array of iid standard normals z."""
    m, d = z.shape
    a = jnp.full((m,), a0, z.dtype)
    return TwoLayerNetwork(a=a, W=project(z / math.sqrt(d), projection), sigma=sigma)


# -------------------------------------------------------------------------------------- data
class Dataset(eqx.Module):
    """A fixed training set of a k-index model [2.1]: y = phi(U^T x) + tau eps.

    **Fields:** `X` (n_max, d) Gaussian inputs; `clean` (n_max,) phi(U^T x); `noise` (n_max,)
    standard normal eps; `U` (d, k) orthonormal index directions; `n` the number of rows in use
    (the first n; an array so that sweeps over alpha share one shape n_max).
    """

    X: Array
    clean: Array
    noise: Array
    U: Array
    n: Array

    def labels(self, tau: ArrayLike) -> Array:
        """y = phi(U^T x) + tau eps for every row."""
        return self.clean + tau * self.noise

    def weights(self) -> Array:
        """1 on the rows in use, 0 on the padding."""
        return (jnp.arange(self.X.shape[0]) < self.n).astype(self.X.dtype)


def _orthonormalize(g: Array) -> Array:
    # Gram-Schmidt on the k columns of a Gaussian matrix: Haar-distributed orthonormal columns
    # (k is small; cheaper to compile than a QR).
    cols = []
    for j in range(g.shape[1]):
        u = g[:, j]
        for c in cols:
            u = u - (c @ u) * c
        cols.append(u / jnp.linalg.norm(u))
    return jnp.stack(cols, axis=1)


def index_directions(key, d: int, k: int, dtype=None) -> Array:
    """U in R^{d x k} with U^T U = I_k, uniformly random (Haar)."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return _orthonormalize(jr.normal(key, (d, k), dtype))


def make_dataset(key, prob: Problem, *, n: int, d: int, n_used: ArrayLike | None = None,
                 dtype=None) -> Dataset:
    """n iid samples x ~ N(0, I_d) with clean labels phi(U^T x) and unit noise (spec [2.1]).

    U is Haar-random. `n_used` (default n) marks how many leading rows a run trains on.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    z = jr.normal(key, (dataset_draws(n, d, prob.k),), dtype)
    return dataset_from_normals(z, prob, n=n, d=d, n_used=n_used)


def dataset_draws(n: int, d: int, k: int) -> int:
    """How many standard normals `dataset_from_normals` consumes."""
    return n * d + n + d * k


def dataset_from_normals(z: Array, prob: Problem, *, n: int, d: int,
                         n_used: ArrayLike | None = None) -> Dataset:
    """The `Dataset` built from iid standard normals z (`dataset_draws` of them): X, eps, then
    the Gaussian matrix orthonormalized into U. (One random draw compiles faster than three.)"""
    k = prob.k
    X = z[: n * d].reshape(n, d)
    noise = z[n * d: n * d + n]
    U = _orthonormalize(z[n * d + n: n * d + n + d * k].reshape(d, k))
    n_used = n if n_used is None else n_used
    return Dataset(X=X, clean=prob.phi_of(X @ U), noise=noise, U=U, n=jnp.asarray(n_used))


# ---------------------------------------------------------------------- population quantities
@functools.lru_cache(maxsize=None)
def _rescale_table(degree: int) -> tuple[np.ndarray, np.ndarray]:
    # Multiplication theorem:
    #   He_n(r z) = sum_i n! / (i! (n-2i)!) r^(n-2i) ((r^2-1)/2)^i He_(n-2i)(z).
    # With p_n = He_n / sqrt(n!) and <w, x> = r z (z standard normal):
    #   sigma(<w, x>) = sum_j t_j(r) r^j p_j(z),  t_j(r) = sum_i s_(j+2i) c_ji ((r^2-1)/2)^i,
    #   c_ji = sqrt((j+2i)! / j!) / i!,
    # so E[sigma(<w, x>) sigma(<w', x>)] = sum_j t_j(r) t_j(r') <w, w'>^j.
    size = degree + 1
    coef = np.zeros((size, size))
    power = np.zeros((size, size))
    for j in range(size):
        for n in range(j, size, 2):
            i = (n - j) // 2
            log_ratio = 0.5 * (math.lgamma(n + 1) - math.lgamma(j + 1))
            coef[j, n] = math.exp(log_ratio) / math.factorial(i)
            power[j, n] = i
    return coef, power


def rescaled_hermite(s: Array, r2: Array) -> Array:
    """Coefficients t_j(r), shape (..., K+1), of sigma along a row of squared norm r2 = ||w||^2.

    For sigma = sum_j s_j He_j / sqrt(j!) (normalized Hermite coefficients s),
    E[sigma(<w, x>) sigma(<w', x>)] = sum_j t_j(||w||) t_j(||w'||) <w, w'>^j and
    E[sigma(<w, x>) phi(<u, x>)] = sum_j t_j(||w||) f_j <u, w>^j exactly (x ~ N(0, I));
    t_j(1) = s_j recovers h and phihat (spec section 2).
    """
    coef, power = _rescale_table(s.shape[0] - 1)
    x = (r2[..., None, None] - 1.0) / 2.0
    power = jnp.asarray(power, s.dtype)
    # x^0 = 1 written out: jnp.power(0., 0.) has a NaN derivative (0 * 0^-1), and x = 0 is
    # exactly the unit sphere.
    zero = power == 0
    x_pow = jnp.where(zero, 1.0, jnp.power(jnp.where(zero, 1.0, x), power))
    terms = jnp.asarray(coef, s.dtype) * x_pow
    return terms @ s


def _powers(q: Array, degree: int) -> Array:
    return q[..., None] ** jnp.arange(degree + 1, dtype=q.dtype)


def population_terms(prob: Problem, a: Array, W: Array, U: Array, gram: Array | None = None):
    """(E f phi, E f^2) over x ~ N(0, I_d) for f = (1/m) sum_i a_i sigma(<w_i, x>)  [A.4, A.6].

    Unit rows, any activation: (1/m) sum_i a_i phihat(U^T w_i) and (1/m^2) sum_ij a_i a_j
    h(<w_i, w_j>). Exact for any row norms (as needed in the unit ball) when sigma is a
    polynomial (`rescaled_hermite`) or the centered ReLU (positively homogeneous:
    sigma(r z) = r sigma(z) + (r - 1) / sqrt(2 pi)). For erf and tanh in the ball: the unit-norm
    formula, an approximation of order 1 - ||w_i||. `gram`: W W^T if already computed.
    """
    G = W @ W.T if gram is None else gram
    m = W.shape[0]
    proj = W @ U  # (m, k): U^T w_i
    if getattr(prob.sigma, "name", "") == "relu":
        r = jnp.sqrt(jnp.diagonal(G))
        ar = a * r
        quad = (ar @ prob.h(G / (r[:, None] * r[None, :])) @ ar
                + jnp.sum(a * (r - 1.0)) ** 2 / (2.0 * math.pi)) / m**2
        fit = jnp.sum(ar * prob.target.phihat(proj / r[:, None])) / m
        return fit, quad
    if prob.sigma_hermite is None:
        fit = jnp.sum(a * prob.target.phihat(proj)) / m
        quad = a @ prob.h(G) @ a / m**2
        return fit, quad
    s, f = prob.sigma_hermite, prob.phi_hermite
    degree = s.shape[0] - 1
    t = rescaled_hermite(s, jnp.diagonal(G))  # (m, K+1)
    quad = jnp.einsum("i,ip,jp,ijp,j->", a, t, t, _powers(G, degree), a) / m**2
    fit = jnp.einsum("i,ip,lp,ilp->", a, t, f, _powers(proj, degree)) / m
    return fit, quad


def population_risk(prob: Problem, net: TwoLayerNetwork, U: Array, tau: ArrayLike,
                    gram: Array | None = None) -> Array:
    """The test error R(a, W) = (1/2)[tau^2 + ||phi||^2 - 2 E f phi + E f^2] (spec section 2)."""
    fit, quad = population_terms(prob, net.a, net.W, U, gram)
    return 0.5 * (tau**2 + prob.target.norm2 - 2.0 * fit + quad)
