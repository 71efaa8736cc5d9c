"""Neuron-space algebras: how m x m matrices over the hidden units are stored and multiplied.

The general DMFT (spec section 4) works with functions C_ij(t, s), R_ij(t, s) that are m x m
matrices at each pair of times, and with vectors a_i(t), v_i(t) over neurons. Every neuron-space
operation it needs is one of:

* elementwise maps (h(C), h'(C) R, ...): plain array arithmetic, in any representation;
* matrix products  (1/m) sum_l M_il X_lj;
* matrix-vector products (1/m) sum_l X_il a_l;
* the full average (1/m^2) sum_ij X_ij, the diagonal, the transpose, outer products a_i b_j.

Under the symmetric initialization (spec section 5) every matrix has the form D I + O (J - I),
and these are closed under products:

    (D1 I + O1 (J-I)) (D2 I + O2 (J-I)) = [D1 D2 + (m-1) O1 O2] I + [D1 O2 + O1 D2 + (m-2) O1 O2] (J-I)

so the symmetric DMFT *is* the general DMFT evaluated in a two-number algebra. An algebra
object fixes the representation; the DMFT equations are written once against it.

Representation (trailing axes of an array; leading axes are time):

===============  ===========================  ======================
algebra          matrix                       neuron vector
===============  ===========================  ======================
`Symmetric(m)`   shape (..., 2) = (D, O)      shape (...,) (one value)
`General(m)`     shape (..., m, m)            shape (..., m)
===============  ===========================  ======================
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array


class AbstractAlgebra(eqx.Module):
    """A representation of m x m neuron-space matrices closed under the DMFT's operations."""

    m: eqx.AbstractVar[int]

    @property
    @abc.abstractmethod
    def matrix_shape(self) -> tuple[int, ...]:
        """Trailing shape of one matrix."""

    @property
    @abc.abstractmethod
    def vector_shape(self) -> tuple[int, ...]:
        """Trailing shape of one neuron vector."""

    @abc.abstractmethod
    def identity(self, dtype) -> Array:
        """The identity matrix delta_ij."""

    @abc.abstractmethod
    def contract(self, x: Array, y: Array) -> Array:
        """sum_k (x[k] @ y[k, s]) / m for x of shape (K, *mat), y of shape (K, S, *mat) -> (S, *mat).

        The time integral of a neuron matrix product, (1/m) sum_l int x_il(t, s) y_lj(s, s') ds,
        without the quadrature weight.
        """

    @abc.abstractmethod
    def contract_t(self, x: Array, y: Array) -> Array:
        """sum_k (x[k] @ y[s, k]^T) / m for x of shape (K, *mat), y of shape (S, K, *mat).

        The integral (1/m) sum_l int x_il(t, s) y_jl(s', s) ds of [C.9]; reads y with its time
        axes swapped instead of materializing a transposed copy.
        """

    @abc.abstractmethod
    def left(self, a: Array, x: Array) -> Array:
        """The matrix a_i x_ij (a: (*vec), x: (..., *mat))."""

    @abc.abstractmethod
    def matmul(self, x: Array, y: Array) -> Array:
        """(1/m) x @ y for matrices with matching leading (time) shapes."""

    @abc.abstractmethod
    def matvec(self, x: Array, a: Array) -> Array:
        """(1/m) sum_l x_il a_l, batched over leading axes (x: (..., *mat), a: (..., *vec))."""

    @abc.abstractmethod
    def matvec_k(self, x: Array, v: Array) -> Array:
        """(1/m) sum_l x_il v_l for vectors with a trailing index axis (v: (..., *vec, k))."""

    @abc.abstractmethod
    def mean_all(self, x: Array) -> Array:
        """(1/m^2) sum_ij x_ij."""

    @abc.abstractmethod
    def outer(self, a: Array, b: Array) -> Array:
        """The matrix a_i b_j."""

    @abc.abstractmethod
    def diag(self, x: Array) -> Array:
        """The neuron vector x_ii."""

    @abc.abstractmethod
    def transpose(self, x: Array) -> Array:
        """x_ji."""

    @abc.abstractmethod
    def inner_k(self, g: Array, v: Array) -> Array:
        """The matrix <g_i, v_j> of two k-vectors over neurons (g: (*vec, k), v: (..., *vec, k))."""

    @abc.abstractmethod
    def mean_vec(self, a: Array) -> Array:
        """(1/m) sum_i a_i."""


class Symmetric(AbstractAlgebra):
    """Matrices D I + O (J - I), stored as the pair (D, O); neuron vectors as one value.

    Products follow the two-number rule above (spec section 5); for m = 1 the off-diagonal part
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

    def _structure(self, dtype) -> Array:
        # T[c, a, b]: coefficient of (x_a y_b) in component c of the product, before the 1/m.
        m = self.m
        t = jnp.zeros((2, 2, 2), dtype)
        t = t.at[0, 0, 0].set(1.0).at[0, 1, 1].set(m - 1.0)
        t = t.at[1, 0, 1].set(1.0).at[1, 1, 0].set(1.0).at[1, 1, 1].set(m - 2.0)
        return t / m

    def identity(self, dtype):
        return jnp.array([1.0, 0.0], dtype)

    def contract(self, x, y):
        xy = jnp.einsum("ka,ksb->sab", x, y)
        return jnp.einsum("cab,sab->sc", self._structure(xy.dtype), xy)

    def contract_t(self, x, y):
        xy = jnp.einsum("ka,skb->sab", x, y)
        return jnp.einsum("cab,sab->sc", self._structure(xy.dtype), xy)

    def left(self, a, x):
        return jnp.asarray(a)[..., None] * x

    def matmul(self, x, y):
        return jnp.einsum("cab,...a,...b->...c", self._structure(x.dtype), x, y)

    def row_sum(self, x):
        # sum_l x_il for the pattern D I + O (J - I): D + (m - 1) O.
        return x[..., 0] + (self.m - 1.0) * x[..., 1]

    def matvec(self, x, a):
        return self.row_sum(x) * a / self.m

    def matvec_k(self, x, v):
        return (self.row_sum(x) / self.m)[..., None] * v

    def mean_all(self, x):
        return self.row_sum(x) / self.m

    def outer(self, a, b):
        ab = jnp.asarray(a * b)
        return jnp.stack([ab, ab], axis=-1)

    def diag(self, x):
        return x[..., 0]

    def transpose(self, x):
        return x

    def inner_k(self, g, v):
        gv = jnp.sum(g * v, axis=-1)
        return jnp.stack([gv, gv], axis=-1)

    def mean_vec(self, a):
        return a


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

    def contract(self, x, y):
        return jnp.einsum("kil,kslj->sij", x, y) / self.m

    def contract_t(self, x, y):
        return jnp.einsum("kil,skjl->sij", x, y) / self.m

    def left(self, a, x):
        return a[:, None] * x

    def matmul(self, x, y):
        return jnp.einsum("...il,...lj->...ij", x, y) / self.m

    def matvec(self, x, a):
        return jnp.einsum("...il,...l->...i", x, a) / self.m

    def matvec_k(self, x, v):
        return jnp.einsum("...il,...lk->...ik", x, v) / self.m

    def mean_all(self, x):
        return jnp.mean(x, axis=(-2, -1))

    def outer(self, a, b):
        return a[..., :, None] * b[..., None, :]

    def diag(self, x):
        return jnp.diagonal(x, axis1=-2, axis2=-1)

    def transpose(self, x):
        return jnp.swapaxes(x, -1, -2)

    def inner_k(self, g, v):
        return jnp.einsum("ik,...jk->...ij", g, v)

    def mean_vec(self, a):
        return jnp.mean(a, axis=-1)
