"""Neuron-space algebras: how m x m matrices over the hidden units are stored and multiplied.

The general DMFT (spec section 4) works with functions C_ij(t, s), R_ij(t, s) that are m x m
matrices at each pair of times, and with vectors a_i(t), v_i(t) over neurons. Every neuron-space
operation it needs is one of:

* elementwise maps (h(C), h'(C) R, ...): plain array arithmetic, in any representation;
* matrix products  (1/m) sum_l M_il X_lj, also integrated over an intermediate time;
* matrix-vector products (1/m) sum_l X_il a_l;
* the full average (1/m^2) sum_ij X_ij, the diagonal, the transpose, outer products a_i b_j.

Under the symmetric initialization (spec section 5) every matrix has the form D I + O (J - I),
and these are closed under products:

    (D1 I + O1 (J-I)) (D2 I + O2 (J-I)) = [D1 D2 + (m-1) O1 O2] I + [D1 O2 + O1 D2 + (m-2) O1 O2] (J-I)

so the symmetric DMFT *is* the general DMFT evaluated in a two-number algebra. An algebra
object fixes the representation; the DMFT equations are written once against it.

Layout: neuron axes lead, time axes trail (so a time row of one component is contiguous):

===============  ===========================  ======================
algebra          matrix                       neuron vector
===============  ===========================  ======================
`Symmetric(m)`   shape (2, ...) = (D, O)      shape (...)  (one value)
`General(m)`     shape (m, m, ...)            shape (m, ...)
===============  ===========================  ======================

"..." are time axes, e.g. C of shape (2, N+1, N+1) under `Symmetric`.
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array


class AbstractAlgebra(eqx.Module):
    """A representation of m x m neuron-space matrices closed under the DMFT's operations.

    All methods broadcast over trailing time axes.
    """

    m: eqx.AbstractVar[int]

    @property
    @abc.abstractmethod
    def matrix_shape(self) -> tuple[int, ...]:
        """Leading shape of one matrix."""

    @property
    @abc.abstractmethod
    def vector_shape(self) -> tuple[int, ...]:
        """Leading shape of one neuron vector."""

    @abc.abstractmethod
    def identity(self, dtype) -> Array:
        """The identity matrix delta_ij."""

    # A two-time history H (C or R over a square of times) is stored as a pytree of buffers
    # chosen for speed (`history_*` below); rows are plain (*mat, L) arrays.

    @abc.abstractmethod
    def history_zeros(self, size: int, dtype):
        """An all-zero two-time history over `size` x `size` times."""

    @abc.abstractmethod
    def history_row(self, hist, n) -> Array:
        """Row n, H(t_n, .), as a (*mat, L) array."""

    @abc.abstractmethod
    def history_set(self, hist, n, row: Array, column: bool):
        """H with row n set to `row` (and column n to its neuron transpose if `column`)."""

    @abc.abstractmethod
    def history_array(self, hist) -> Array:
        """The whole history as one (*mat, L, L) array."""

    @abc.abstractmethod
    def history_split(self, x: Array):
        """A (*mat, ...) array split into the history's leaves (per-time values such as the
        jump R(t^+, t) = I over the stored times, shaped like the history's pytree)."""

    @abc.abstractmethod
    def history_diagonal(self, hist, offset: int = 0) -> Array:
        """The entries H[k, k - offset] as a (*mat, L) array (zero where k - offset < 0)."""

    @abc.abstractmethod
    def pointwise(self, x: Array, y: Array) -> Array:
        """(1/m) x[..., k] @ y[..., k] at every time k: x, y (*mat, L) -> (*mat, L)."""

    @abc.abstractmethod
    def contract(self, x: Array, hist) -> Array:
        """(1/m) sum_k x[k] @ H[k, s]: x of shape (*mat, K), H a K x S history -> (*mat, S).

        The time integral (1/m) sum_l int x_il(t, s) H_lj(s, s') ds without its quadrature weight.
        """

    @abc.abstractmethod
    def contract_t(self, x: Array, hist) -> Array:
        """(1/m) sum_k x[k] @ H[s, k]^T -> (*mat, S).

        The integral (1/m) sum_l int x_il(t, s) H_jl(s', s) ds of [C.9], reading H with its time
        axes swapped instead of materializing a transposed copy.
        """

    @abc.abstractmethod
    def matvec(self, x: Array, a: Array) -> Array:
        """(1/m) sum_l x_il a_l (x: (*mat, ...), a: (*vec, ...))."""

    @abc.abstractmethod
    def matvec_k(self, x: Array, v: Array) -> Array:
        """(1/m) sum_l x_il v_l for k-vectors (x: (*mat, T), v: (*vec, k, T)) -> (*vec, k, T)."""

    @abc.abstractmethod
    def mean_all(self, x: Array) -> Array:
        """(1/m^2) sum_ij x_ij."""

    @abc.abstractmethod
    def outer(self, a: Array, b: Array) -> Array:
        """The matrix a_i b_j (a: (*vec) or (*vec, ...), b: (*vec, ...))."""

    @abc.abstractmethod
    def left(self, a: Array, x: Array) -> Array:
        """The matrix a_i x_ij (a: (*vec), x: (*mat, ...))."""

    @abc.abstractmethod
    def diag(self, x: Array) -> Array:
        """The neuron vector x_ii."""

    @abc.abstractmethod
    def transpose(self, x: Array) -> Array:
        """x_ji."""

    @abc.abstractmethod
    def inner_k(self, g: Array, v: Array) -> Array:
        """The matrix <g_i, v_j> (g: (*vec, k), v: (*vec, k, ...))."""

    @abc.abstractmethod
    def mean_vec(self, a: Array) -> Array:
        """(1/m) sum_i a_i."""

    @abc.abstractmethod
    def matmul(self, x: Array, y: Array) -> Array:
        """The plain matrix product sum_l x_il y_lj (no 1/m): x (*mat), y (*mat, ...)."""

    @abc.abstractmethod
    def matmul_vec(self, x: Array, v: Array) -> Array:
        """sum_l x_il v_l... for a neuron vector with trailing axes: x (*mat), v (*vec, ...)."""

    @abc.abstractmethod
    def phi(self, k: Array, h: Array, order: int) -> Array:
        """The matrix phi_order(-h K) for K (*mat) (phi_0 = exp, phi_1(z) = (e^z - 1)/z,
        phi_2(z) = (e^z - 1 - z)/z^2), applied by `matmul` / `matmul_vec`."""

    @abc.abstractmethod
    def phi_lyapunov(self, k: Array, h: Array, order: int, y: Array) -> Array:
        """phi_order(-h L) y for the Lyapunov operator L y = K y + y K^T (the stiff part of the
        equal-time correlation: d/dt C(t, t) = -(K C + C K^T) + ...), y (*mat)."""

    @abc.abstractmethod
    def dot_t(self, x: Array, y: Array) -> Array:
        """(1/m) sum_s x(s) @ y(s)^T over a time row: x, y (*mat, L) -> (*mat)."""

    def product(self, x: Array, y: Array) -> Array:
        """(1/m) sum_l x_il y_lj: x (*mat), y (*mat, ...)."""
        return self.matmul(x, y) / self.m

    def with_unit_diagonal(self, x: Array) -> Array:
        """x with x_ii = 1 (the constraint C_ii(t, t) = 1)."""
        eye = self.identity(x.dtype)
        return x * (1 - eye) + eye


class Symmetric(AbstractAlgebra):
    """Matrices D I + O (J - I), stored as the pair (D, O); neuron vectors as one value.

    Products follow the two-number rule above (spec section 5). For m = 1 the off-diagonal part
    carries no weight.
    """

    m: int = eqx.field(static=True)

    def __check_init__(self):
        if self.m < 1:
            raise ValueError(f"the width m must be >= 1, got {self.m}")

    @property
    def matrix_shape(self):
        return (2,)

    @property
    def vector_shape(self):
        return ()

    def _product(self, xy: Array) -> Array:
        """Combine the four products xy[a, b] = x_a y_b into (D, O) of (x @ y) / m."""
        m = self.m
        d = xy[0, 0] + (m - 1.0) * xy[1, 1]
        o = xy[0, 1] + xy[1, 0] + (m - 2.0) * xy[1, 1]
        return jnp.stack([d, o]) / m

    def identity(self, dtype):
        return jnp.array([1.0, 0.0], dtype)

    # The history is a pair of separate (L, L) buffers (D, O): slicing one component out of a
    # stacked (2, L, L) buffer, or an einsum over it, makes XLA:CPU copy the whole history on
    # every step (measured: 3x slower at N = 1000).
    def history_zeros(self, size, dtype):
        return (jnp.zeros((size, size), dtype), jnp.zeros((size, size), dtype))

    def history_row(self, hist, n):
        return jnp.stack([hist[0][n], hist[1][n]])

    def history_set(self, hist, n, row, column):
        out = []
        for buf, r in zip(hist, row):
            buf = buf.at[n].set(r)
            out.append(buf.at[:, n].set(r) if column else buf)
        return tuple(out)

    def history_array(self, hist):
        return jnp.stack(hist)

    def history_split(self, x):
        return (x[0], x[1])

    def history_diagonal(self, hist, offset=0):
        return jnp.stack([history_diagonal(h, offset) for h in hist])

    def pointwise(self, x, y):
        xp, xq = self._channels(x)
        yp, yq = self._channels(y)
        return self._from_channels(xp * yp, xq * yq) / self.m

    def contract(self, x, hist):
        # Plain (2, K) @ (K, S) products on each component buffer.
        return self._product(jnp.stack([x @ hist[0], x @ hist[1]], axis=1))

    def contract_t(self, x, hist):
        # (S, K) @ (K, 2): the history is read row by row, never transposed.
        return self._product(jnp.stack([(hist[0] @ x.T).T, (hist[1] @ x.T).T], axis=1))

    def _row_sum(self, x):
        # sum_l x_il for D I + O (J - I): D + (m - 1) O.
        return x[0] + (self.m - 1.0) * x[1]

    def matvec(self, x, a):
        return self._row_sum(x) * a / self.m

    def matvec_k(self, x, v):
        return self._row_sum(x) * v / self.m

    def mean_all(self, x):
        return self._row_sum(x) / self.m

    def outer(self, a, b):
        ab = a * b
        return jnp.stack([ab, ab])

    def left(self, a, x):
        return a * x

    def diag(self, x):
        return x[0]

    def transpose(self, x):
        return x

    def inner_k(self, g, v):
        gv = jnp.tensordot(g, v, axes=(0, 0))
        return jnp.stack([gv, gv])

    def mean_vec(self, a):
        return a

    # Eigen-channels of D I + O (J - I): "perp" (vectors orthogonal to 1, D - O, multiplicity
    # m - 1) and "par" (the all-ones vector, D + (m - 1) O). Products are channel-diagonal.
    def _channels(self, x):
        return x[0] - x[1], x[0] + (self.m - 1.0) * x[1]

    def _from_channels(self, perp, par):
        m = self.m
        return jnp.stack([(par + (m - 1.0) * perp) / m, (par - perp) / m])

    def matmul(self, x, y):
        xs = x.reshape(x.shape + (1,) * (y.ndim - 1))
        xp, xq = self._channels(xs)
        yp, yq = self._channels(y)
        return self._from_channels(xp * yp, xq * yq)

    def dot_t(self, x, y):
        # matrices D I + O (J - I) are symmetric: y^T = y, and products are channel-wise
        xp, xq = self._channels(x)
        yp, yq = self._channels(y)
        return self._from_channels(jnp.sum(xp * yp, axis=-1), jnp.sum(xq * yq, axis=-1)) / self.m

    def matmul_vec(self, x, v):
        # a neuron vector with all entries equal lies in the "par" channel
        return (x[0] + (self.m - 1.0) * x[1]) * v

    def phi(self, k, h, order):
        from ._stepper import phi_scalar
        lp, lq = self._channels(k)
        return self._from_channels(phi_scalar(order, -h * lp), phi_scalar(order, -h * lq))

    def phi_lyapunov(self, k, h, order, y):
        # Every matrix of the algebra is symmetric and commutes with K: L y = 2 K y.
        return self.matmul(self.phi(k, 2.0 * h, order), y)


class General(AbstractAlgebra):
    """Dense m x m matrices and length-m neuron vectors (spec section 4)."""

    m: int = eqx.field(static=True)

    def __check_init__(self):
        if self.m < 1:
            raise ValueError(f"the width m must be >= 1, got {self.m}")

    @property
    def matrix_shape(self):
        return (self.m, self.m)

    @property
    def vector_shape(self):
        return (self.m,)

    def identity(self, dtype):
        return jnp.eye(self.m, dtype=dtype)

    def history_zeros(self, size, dtype):
        return jnp.zeros((self.m, self.m, size, size), dtype)

    def history_row(self, hist, n):
        return hist[:, :, n]

    def history_set(self, hist, n, row, column):
        hist = hist.at[:, :, n].set(row)
        return hist.at[:, :, :, n].set(self.transpose(row)) if column else hist

    def history_array(self, hist):
        return hist

    def history_split(self, x):
        return x

    def history_diagonal(self, hist, offset=0):
        return history_diagonal(hist, offset)

    def pointwise(self, x, y):
        return jnp.einsum("ilk,ljk->ijk", x, y) / self.m

    def contract(self, x, hist):
        return jnp.einsum("ilk,ljks->ijs", x, hist) / self.m

    def contract_t(self, x, hist):
        return jnp.einsum("ilk,jlsk->ijs", x, hist) / self.m

    def matvec(self, x, a):
        return jnp.einsum("il...,l...->i...", x, a) / self.m

    def matvec_k(self, x, v):
        return jnp.einsum("ilt,lkt->ikt", x, v) / self.m

    def mean_all(self, x):
        return jnp.mean(x, axis=(0, 1))

    def outer(self, a, b):
        a = a.reshape((self.m, 1) + a.shape[1:] + (1,) * (b.ndim - a.ndim))
        return a * b[None]

    def left(self, a, x):
        return a.reshape((self.m,) + (1,) * (x.ndim - 1)) * x

    def diag(self, x):
        return jnp.moveaxis(jnp.diagonal(x, axis1=0, axis2=1), -1, 0)

    def transpose(self, x):
        return jnp.swapaxes(x, 0, 1)

    def inner_k(self, g, v):
        return jnp.einsum("ik,jk...->ij...", g, v)

    def mean_vec(self, a):
        return jnp.mean(a, axis=0)

    def matmul(self, x, y):
        return jnp.einsum("il,lj...->ij...", x, y)

    def matmul_vec(self, x, v):
        return jnp.einsum("il,l...->i...", x, v)

    def dot_t(self, x, y):
        return jnp.einsum("ils,jls->ij", x, y) / self.m

    def phi(self, k, h, order):
        # phi_1, phi_2 from one exponential of a block matrix (Higham): exp of
        # [[A, I, 0], [0, 0, I], [0, 0, 0]] is [[e^A, phi_1(A), phi_2(A)], ...], A = -h K.
        # (An eigendecomposition would be cheaper but its derivative is wrong where
        # eigenvalues are degenerate, e.g. under symmetric initial conditions.)
        m = self.m
        eye, zero = jnp.eye(m, dtype=k.dtype), jnp.zeros((m, m), k.dtype)
        big = jnp.block([[-h * k, eye, zero], [zero, zero, eye], [zero, zero, zero]])
        e = jax.scipy.linalg.expm(big)
        return e[:m, order * m:(order + 1) * m]

    def phi_lyapunov(self, k, h, order, y):
        return lyapunov_phi(-h * k, y, order)


# Scaling and squaring for phi_k of the Lyapunov operator L y = A y + y A^T without forming
# its m^2 x m^2 matrix: phi_k(L / 2^s) y by Taylor series (operator norm <= 1/4), then s
# doublings, e^{2B} = e^B e^B, phi_1(2B) = (e^B + 1) phi_1(B) / 2,
# phi_2(2B) = (e^B phi_2(B) + phi_2(B) + phi_1(B)) / 4, with e^B y = E y E^T, E = e^{A / 2^s}.
# Only decaying exponentials appear (A = -h K), so nothing cancels at large h K; the number
# of doublings is traced (at most _LEVELS, the rest masked) and held out of the derivative,
# which is then that of the same arithmetic: also right where eigenvalues of K coincide
# (where an eigendecomposition's derivative is not).
_LEVELS = 24        # 2^24 / 8: |h K| up to ~2e6
_TAYLOR = 12        # (1/4)^12 / 12! ~ 1e-15


def _sandwich(e: Array, y: Array) -> Array:
    return jnp.einsum("il,lj...,kj->ik...", e, y, e)


def lyapunov_phi(a: Array, y: Array, order: int) -> Array:
    """phi_order(L) y for L y = a y + y a^T (a (m, m), y (m, m, ...)); phi_0 = exp,
    phi_1(z) = (e^z - 1)/z, phi_2(z) = (e^z - 1 - z)/z^2."""
    if order == 0:
        return _sandwich(jax.scipy.linalg.expm(a), y)
    if order not in (1, 2):
        raise ValueError(f"phi_k is implemented for k = 0, 1, 2, got {order}")
    norm = 2.0 * jnp.max(jnp.sum(jnp.abs(a), axis=1))          # >= the norm of L
    s = jax.lax.stop_gradient(jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-300) / 0.25)),
                                       0, _LEVELS))
    b = a * 2.0 ** (-s)

    def op(x):
        return jnp.einsum("il,lj...->ij...", b, x) + jnp.einsum("jl,il...->ij...", b, x)

    def series(k):
        # sum_j B^j y / (j + k)!, by Horner
        u = y / math.factorial(_TAYLOR + k)
        for j in range(_TAYLOR - 1, -1, -1):
            u = op(u) + y / math.factorial(j + k)
        return u

    u1, u2 = series(1), (series(2) if order == 2 else None)
    e = jax.scipy.linalg.expm(b)
    for level in range(_LEVELS):
        on = level < s
        eu1 = _sandwich(e, u1)
        if order == 2:
            u2 = jnp.where(on, 0.25 * (_sandwich(e, u2) + u2 + u1), u2)
        u1 = jnp.where(on, 0.5 * (eu1 + u1), u1)
        e = jnp.where(on, e @ e, e)
    return u1 if order == 1 else u2


def history_diagonal(h: Array, offset: int = 0) -> Array:
    """h[..., k, k - offset] over the last two axes, zero where k - offset < 0."""
    d = jnp.diagonal(h, offset=-offset, axis1=-2, axis2=-1)
    return jnp.concatenate([jnp.zeros(h.shape[:-2] + (offset,), h.dtype), d], axis=-1)
