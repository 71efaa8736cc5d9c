"""Discretization kernels shared by the Volterra-type models (spec section 6).

Every model of the DMFT family needs the same few operations on a causal history: the
causal response functions R_A, C_A of [C.19] row by row, and integrals over the past of a
kernel times a two-time function, with the delta and jump conventions of spec section 6
(delta counted fully at the upper end; R(t^+, t) = I; the stored R(t, t) = 0). They are
written here once against `RowWeights`, so that a model never sees a step size.

Scalar helpers (`past_integral`, `transposed_integral`, `response_integral`) serve the
reduced theories, whose two-time functions are scalars; the DMFT uses the same rules in its
neuron algebra.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jaxtyping import Array

from ._algebra import history_diagonal
from ._covariance import AbstractKernel
from ._stepper import RowWeights


def d2_times(kernel: AbstractKernel, q: Array, r: Array) -> Array:
    """h''(q) * r, defined as 0 where r == 0.

    The response R vanishes on the diagonal t = s, exactly where C_ii = 1 and where h'' may be
    infinite. The double `where` keeps gradients finite there.
    """
    nonzero = r != 0
    safe_q = jnp.where(nonzero, q, jnp.zeros_like(q))
    return jnp.where(nonzero, kernel.d2(safe_q) * r, jnp.zeros_like(r))


class Merged(NamedTuple):
    """The interval corrections (d1, d2) of one two-time function in the state of an adaptive
    solve (`dmft_jax._integrate.AbstractModel.interval_corrections`). They are zero before
    the first decimation; the windows that run while the history fills leave them out of the
    state (`AbstractModel.window`), so their products cost only on the full history (there
    they add 7 history-sized products per row of the symmetric DMFT to its ~9: lazy m = 64,
    512 stored times, 7.6 ms a step against 2.3-4.5 ms without them)."""

    d1: Array
    d2: Array

    def first(self, kernel: Array, response: bool, alg=None) -> Array:
        """sum_j Kbar_j d1[j, k]: the correction of int K(s) X(s, t_k) ds. For a response X
        (`response`), the interval next to the diagonal (j = k) takes the kernel's value at
        the diagonal end, K_k, instead of its mean (`jump_offsets`). `alg`: the DMFT's
        algebra (`dmft_jax._algebra`) for matrix-valued rows, None for scalar ones."""
        ops = _SCALAR if alg is None else alg
        mean = interval_mean(kernel)
        out = ops.contract(mean, self.d1)
        if not response:
            return out
        return out + ops.pointwise(jump_offsets(kernel, mean)[0], ops.history_diagonal(self.d1))

    def first_matrix(self) -> Array:
        """The matrix A of `first` for a response on scalar rows, first(x) = x @ A: the
        kernel's value x_k on the interval next to the diagonal (A[k, k] = d1[k, k]), its
        interval mean (x_j + x_{j+1}) / 2 on the others (the left form of [C.19] solves with it,
        `response_rows`)."""
        d1 = self.d1
        idx = jnp.arange(d1.shape[-1])
        before = jnp.concatenate([jnp.zeros_like(d1[:1]), d1[:-1]], axis=0)   # d1[l - 1, k]
        below = idx[:, None] > idx[None, :]
        return (0.5 * jnp.where(below, d1, 0.0)
                + 0.5 * jnp.where(idx[:, None] - 1 > idx[None, :], before, 0.0)
                + jnp.diag(jnp.diagonal(d1)))

    def second(self, kernel: Array, response: bool, alg=None) -> Array:
        """sum_j Kbar_j d2[k, j]: the correction of int K(s) X(t_k, s) ds; for a response,
        K_k on the interval next to the diagonal (j = k - 1)."""
        ops = _SCALAR if alg is None else alg
        mean = interval_mean(kernel)
        out = ops.contract_t(mean, self.d2)
        if not response:
            return out
        return out + ops.pointwise(jump_offsets(kernel, mean)[1],
                                   ops.transpose(ops.history_diagonal(self.d2, 1)))


class _ScalarOps:
    """The algebra operations `Merged` uses, for scalar rows (the reduced theories)."""

    @staticmethod
    def contract(x, hist):
        return x @ hist

    @staticmethod
    def contract_t(x, hist):
        return hist @ x

    @staticmethod
    def history_diagonal(hist, offset=0):
        return history_diagonal(hist, offset)

    @staticmethod
    def pointwise(x, y):
        return x * y

    @staticmethod
    def transpose(x):
        return x


_SCALAR = _ScalarOps()


def fitted_end(h: Array, rate: Array) -> Array:
    """The correction k of the trapezoid on the interval next to a diagonal end, where a
    response falls from its jump: int_0^h f du = h/2 (f(0) + f(h)) + k (f(0) - f(h)), u the
    distance from the diagonal end.

    Under lazy initialization the responses fall from their jumps within ~1/rate, rate the
    collective mode of the stiff part K = diag(nu) + M^delta / m (~alpha m gamma^2 h'(1),
    spec section 6), while a step set by accuracy elsewhere is many times longer: the
    trapezoid then counts the jump value over half the step (lazy Fig. 3, m = 256, t = 0.5,
    rtol 1e-3: rho 2.3% and e_ts 1.5% off). The rule with weights h g on f(0) and h (1 - g)
    on f(h),

        g = 1/z - 1/(e^z - 1),   z = rate h,   k = h (g - 1/2) = h (-z/12 + z^3/720 - ...),

    is exact for f = c0 + c1 e^{-rate u}, keeps both weights positive (g in (0, 1/2]), and
    is the trapezoid as rate h -> 0. On a smooth integrand with slope s it errs by
    s h^2 (1/2 - g) on this one interval (O(h^2) per integral, as the trapezoid's own error
    over the whole range). A three-point rule also exact on linear functions needs negative
    weights (-0.14 h at rate h = 30) and was no more accurate on lazy Fig. 3."""
    z = rate * h
    small = jnp.abs(z) < 1e-3
    zs = jnp.where(small, 1.0, z)
    g = jnp.where(small, 0.5 - z / 12.0 + z**3 / 720.0, 1.0 / zs - 1.0 / jnp.expm1(zs))
    return jnp.where(h > 0, h * (g - 0.5), 0.0)


def column_diagonal(hist: Array, offset: int) -> Array:
    """hist[..., k + offset, k] indexed by k (zero where k + offset is beyond the history)."""
    return ahead(history_diagonal(hist, offset), offset)


def ahead(x: Array, offset: int) -> Array:
    """x[..., k + offset] indexed by k (zero beyond the last entry)."""
    return jnp.concatenate([x[..., offset:], jnp.zeros(x.shape[:-1] + (offset,), x.dtype)],
                           axis=-1)


def add_diagonal(hist: Array, x: Array, offset: int) -> Array:
    """hist with x[..., k] added to hist[..., k, k - offset] (k >= offset)."""
    size = hist.shape[-1]
    rows = jnp.arange(offset, size)
    return hist.at[..., rows, rows - offset].add(x[..., offset:])


class FittedEnds(NamedTuple):
    """The fitted corrections (`fitted_end`) at the diagonal ends of the integrals of row n
    that run from or to another stored time t_k: `lo[k]` for int_{t_k} K(s) X(s, t_k) ds
    (the interval after t_k, where column k of a response starts; k <= n - 2), `at[k]` for
    int^{t_k} K(s) X(t_k, s) ds (the interval before t_k, where row k of a response ends;
    1 <= k <= n - 1). The kernel is read at the diagonal end, as for the interval corrections
    of a decimated history (`Merged`). The upper end t_n of the row's own integrals is fitted
    in the weights with `top` (`fit_row_weights`)."""

    lo: Array
    at: Array
    top: Array

    def lower(self, jump: Array, x1: Array) -> Array:
        """lo[k] (X(t_k^+, t_k) - X(t_{k+1}, t_k)) over k; `x1` the entries X(t_{k+1}, t_k)."""
        return self.lo * (jump - x1)

    def upper(self, jump: Array, x1: Array) -> Array:
        """at[k] (X(t_k, t_k^-) - X(t_k, t_{k-1})) over k; `x1` the entries X(t_k, t_{k-1})."""
        return self.at * (jump - x1)

    def newest(self, n, size: int) -> Array:
        """`top` at k = n - 1, zero elsewhere. The integral from the newest column t_{n-1} to
        t_n is one interval with a jump at each end; it keeps the trapezoid (the caller
        takes this share of the upper end's fit back out)."""
        return jnp.where(jnp.arange(size) == n - 1, self.top, 0.0)

    def own(self, n, size: int) -> Array:
        """`top` at k = n, zero elsewhere: the weight of the jump value R(t_n, t_n^-) itself in
        int_0^{t_n} K(s) R(t_n, s) ds, whose stored diagonal is zero."""
        return jnp.where(jnp.arange(size) == n, self.top, 0.0)


def fit_row_weights(wts: RowWeights, n, rates: Array, folded: Array | None = None):
    """The weights of row n with the exponentially fitted rule (`fitted_end`) at the upper end
    s = t_n of its integrals (rate at t_{n-1}: t_n's is not known before its row), and the
    `FittedEnds` of the integrals that start or end at a diagonal t_k < t_n (rate at t_k).

    `rates` (L,): the decay rate of the responses' fall from their jumps at each stored time
    (entries >= n are ignored); `folded` (2, L) or None: 1 where the fitted correction of
    column k's first interval (row 0) or of row k's last interval (row 1) was moved into the
    interval corrections of a decimated history (`DMFT.fold_fits`), which then replace the
    fit. Euler's weights (no jumps) are returned unchanged, with None."""
    if not wts.jumps:
        return wts, None
    size = wts.w.shape[0]
    idx = jnp.arange(size)
    rate = jnp.where(idx < n, rates, rates[jnp.maximum(n - 1, 0)])
    h = wts.h                                           # h[l] = t_{l+1} - t_l, zero for l >= n
    before = jnp.concatenate([jnp.zeros((1,), h.dtype), h[:-1]])
    # one call for both ends: column k's first interval h_k, row k's last one h_{k-1}; the
    # latter at k = n is the upper end of row n itself
    fit = fitted_end(jnp.stack([h, before]), rate)
    top = fit[1, n]                                     # zero for n = 0
    w = wts.w.at[n].add(top).at[n - 1].add(-top)
    if folded is None:
        folded = jnp.zeros((2, size), h.dtype)
    lo = jnp.where((idx + 2 <= n) & (folded[0] == 0), fit[0], 0.0)
    at = jnp.where((idx >= 1) & (idx < n) & (folded[1] == 0), fit[1], 0.0)
    fitted = RowWeights(w=w, upper=wts.upper + top, lower=wts.lower, upper_at=wts.upper_at,
                        h=wts.h, jumps=True)
    return fitted, FittedEnds(lo, at, top)


def merged(s: dict, key: str) -> Merged | None:
    """The interval corrections of `key` in the state `s` (None when it has none: fixed grids,
    or a history that cannot fill up)."""
    ck = key + "_int"
    return None if ck not in s else Merged(s[ck][0], s[ck][1])


def interval_mean(row: Array) -> Array:
    """(row[j] + row[j + 1]) / 2 over the last axis (zero after the last entry): the mean of
    a kernel row over each stored interval [t_j, t_{j+1}], the factor of the interval
    corrections (`dmft_jax._integrate.AbstractModel.interval_corrections`)."""
    nxt = jnp.concatenate([row[..., 1:], jnp.zeros_like(row[..., :1])], axis=-1)
    return 0.5 * (row + nxt)


def jump_offsets(kernel: Array, mean: Array | None = None) -> tuple[Array, Array]:
    """(K_k - Kbar_k, K_k - Kbar_{k-1}): how the kernel at t_k differs from its mean over the
    interval after t_k and over the one before (zero before t_0); `mean`: the kernel's
    `interval_mean` when the caller has it already.

    A response falls from its jump within ~1/m of the diagonal (lazy initialization), so the
    part of a merged interval's correction that sits next to the diagonal, R(s, t_k) for s
    just above t_k (or R(t_k, s) for s just below), is mass at t_k: it is weighed by the
    kernel there. Weighed by the kernel's mean over a merged interval of length H, it made an
    error ~(K_k - K_{k+1}) H / 4 in every such column, which feeds the current row back into
    its own rate: lazy Fig. 3 at m = 256 (history 512, rtol 1e-3) blew up at its 8th
    decimation (t = 83, merged intervals up to 5.1 long) and reaches t = 256 with it."""
    mean = interval_mean(kernel) if mean is None else mean
    before = jnp.concatenate([jnp.zeros_like(mean[..., :1]), mean[..., :-1]], axis=-1)
    return kernel - mean, kernel - before


RESPONSE_BUFFERS = ("R_A", "C_A", "P_A", "S_C", "S_R")


def response_rows(sigma_r: Array, sigma_c: Array, state: dict, r_jump: Array, n,
                  wts: RowWeights, corrections=None, ends=None):
    """Row n of R_A and C_A from [C.19] on the quadrature weights `wts`.

    `state`: a model state holding the buffers `RESPONSE_BUFFERS`: `R_A` the regular part r_A of
    R_A = delta + r_A (lower triangular, zero diagonal), `C_A`, `P_A` the quadrature masses of
    R_A's rows, `S_C` and `S_R` the stored Sigma_C (symmetric) and Sigma_R (lower triangular,
    zero diagonal); `sigma_r`, `sigma_c`: rows n of Sigma_R, Sigma_C (point values, zero
    beyond n; sigma_r[n] = 0 because the stored R(t, t) = 0); `r_jump[k]` = r_A(t_k^+, t_k) =
    -Sigma_R(t_k^+, t_k) for k <= n. `corrections`: the interval corrections of Sigma_R
    (`merged(s, "S_R")`) after a history decimation; `ends`: the `FittedEnds` of row n or
    None.

    **R_A by the left form** R_A (1 + Sigma_R) = 1 of [C.19] (the same inverse as the right
    form (1 + Sigma_R) R_A = 1 of spec section 6; on Euler's weights the same numbers):

        r_A(t, s) = -Sigma_R(t, s) - int_s^t r_A(t, u) Sigma_R(u, s) du,

    on the weights a triangular system for the row x = r_A(t_n, .), solved from s = t_n down:

        x_k D_k + sum_{k < l < n} w_l Sigma_R[l, k] x_l = -Sigma_R[n, k] (1 + upper r_jump[n]),
        D_k = 1 + lower_k Sigma_R(t_k^+, t_k)                                          (k < n)

    (plus the fitted lower end and the interval corrections of Sigma_R's column k). Why the
    left form: r_A(t, s) decays in t - s, but both forms compute it as -Sigma_R(t, s) (~0.7
    under lazy initialization, where Sigma_R keeps the weight of the directions the data do
    not see) minus an integral that cancels it. In the right form that integral runs over
    column s of r_A, which falls within ~1/m and then on the t = O(1) scale right after s,
    where the history of an old column is coarse; in the left form it runs over row t_n of
    r_A next to t_n, where the history is finest, against the smooth Sigma_R(u, s). Measured
    (lazy Fig. 3, m = 1024, rtol 1e-3, fit_ends, no decimation): e_tr(30) = 4.74e-8 (left),
    1.18e-7 (right), against 4.33e-8 / 4.41e-8 at rtol 1e-4 and 5.6e-8 in the m -> infinity
    lz2 theory; on a history of 256 times the right form's errors in old columns grew with
    every decimation until the solve broke (t = 1177), the left one runs to t = 1e4.

    **C_A as the quadratic form** C_A = -R_A Sigma_C R_A^T of [D.6]:

        C_A[n, k] = -sum_{l, l'} rho_n[l] Sigma_C[l, l'] rho_k[l'],

    rho_k the quadrature masses of R_A(t_k, .) (`P_A`, row k: w_l r_A[k, l] for l < k, and the
    delta with its jump, 1 + upper r_A(t_k, t_k^-), at l = k). Under Euler weights this is the
    row recursion of spec section 6 step 3 exactly ([D.5, D.6]); on any weights it keeps
    e_tr = -C_A(t, t)/2 = rho_n Sigma_C rho_n / 2 >= 0 (Sigma_C is a covariance) with an error
    of first order in sqrt(e_tr), where the recursion computes it as a small difference of O(1)
    integrals whose quadrature errors cancel only on an even grid. Measured (lazy Fig. 3,
    m = 64, trapezoid h = 0.05, one step of 0.9 h at t = 10): e_tr at the next time 2.16e-4 by
    the recursion, 1.656e-4 by the quadratic form, against 1.63e-4 on the even grid.

    Returns the buffers `RESPONSE_BUFFERS` with row n (and column n of the symmetric C_A, S_C)
    written, and the rows of r_A and C_A.
    """
    size = sigma_r.shape[-1]
    idx = jnp.arange(size)
    keep = idx < n
    upper = wts.upper
    if ends is not None:          # the newest column keeps the trapezoid (`FittedEnds.newest`)
        upper = upper - ends.newest(n, size)
    s_r = state["S_R"].at[n].set(sigma_r)
    r_row = _left_row(sigma_r, s_r, r_jump, n, wts, upper, ends, keep, corrections)
    p_row = wts.w * r_row + jnp.where(idx == n, 1.0 + wts.upper * r_jump[n], 0.0)
    mass = state["P_A"].at[n].set(p_row)
    s_c = state["S_C"].at[n].set(sigma_c).at[:, n].set(sigma_c)
    c_row = -(mass @ (s_c @ p_row))
    out = dict(R_A=state["R_A"].at[n].set(r_row), P_A=mass, S_C=s_c, S_R=s_r,
               C_A=state["C_A"].at[n].set(c_row).at[:, n].set(c_row))
    return out, r_row, c_row


def _left_row(sigma_r, s_r, r_jump, n, wts: RowWeights, upper, ends, keep, corrections):
    """The row x = r_A(t_n, .) of `response_rows`: the upper triangular system
    A^T x = b with A[l, k] = w_l Sigma_R[l, k] (k < l < n) and D_k on the diagonal.

    The lower end s = t_k of int_s^t r_A(t, u) Sigma_R(u, s) du is where Sigma_R's column k
    falls from its jump Sigma_R(t_k^+, t_k) (within ~1/m under lazy initialization): the
    fitted end (`FittedEnds.lower`) and, on a decimated history, the interval corrections d1
    of Sigma_R (`Merged`: the kernel r_A(t_n, .) at the diagonal end, x_k, on the interval
    next to the diagonal, its interval mean elsewhere) enter A like the quadrature weights.
    Columns outside `keep` (k >= n) are zero."""
    jump = -r_jump                                   # Sigma_R(t_k^+, t_k)
    b = jnp.where(keep, -sigma_r * (1.0 + upper * r_jump[n]), 0.0)
    diag = 1.0 + wts.lower * jump
    if ends is not None:
        diag = diag + ends.lower(jump, column_diagonal(s_r, 1))
    idx = jnp.arange(s_r.shape[-1])
    # a[l, k] = w_l Sigma_R[l, k] (l > k; the stored Sigma_R is strictly lower triangular)
    a = jnp.where(idx < n, wts.w, 0.0)[:, None] * s_r + jnp.diag(diag)
    if corrections is not None:
        a = a + corrections.first_matrix()
    a = jnp.where(keep[None, :], a, jnp.eye(a.shape[-1], dtype=a.dtype))
    return jax.scipy.linalg.solve_triangular(a, b, trans="T", lower=True)


def diagonal_error(sigma_r: Array, sigma_c: Array, r_row: Array, c_row: Array,
                   r_jump: Array, n, wts: RowWeights) -> Array:
    """Estimated quadrature error of C_A[n, n] (the train error e_tr = -C_A(t_n, t_n)/2
    [C.24]) from `response_rows` on trapezoidal weights: Simpson's rule minus the trapezoid over
    the last two intervals [t_{n-2}, t_n] of its integrand

        g(s) = Sigma_R(t_n, s) C_A(t_n, s) + Sigma_C(t_n, s) r_A(t_n, s),

    with the jump values at s = t_n^-, divided by the implicit factor D of `response_rows`.
    The near-diagonal structure of Sigma_R and r_A (width ~1/m under lazy initialization) sits
    there, and the predictor-corrector estimate of the advancing rows does not see it. Zero for
    n < 2 and on weights without jumps (Euler: fixed grids only)."""
    if not wts.jumps:
        return jnp.zeros((), sigma_r.dtype)
    i1, i0 = jnp.maximum(n - 1, 0), jnp.maximum(n - 2, 0)
    g = sigma_r * c_row + sigma_c * r_row
    g_n = -r_jump[n] * c_row[n] + sigma_c[n] * r_jump[n]
    g0, g1 = g[i0], g[i1]
    h1, h2 = wts.h[i0], wts.h[i1]
    safe1, safe2 = jnp.where(h1 > 0, h1, 1.0), jnp.where(h2 > 0, h2, 1.0)
    simpson = (h1 + h2) / 6.0 * ((2.0 - h2 / safe1) * g0 + (h1 + h2) ** 2 / (safe1 * safe2) * g1
                                 + (2.0 - h1 / safe2) * g_n)
    trapezoid = 0.5 * h1 * (g0 + g1) + 0.5 * h2 * (g1 + g_n)
    denom = 1.0 + wts.upper * (-r_jump[n])
    return jnp.where(n >= 2, (simpson - trapezoid) / denom, 0.0)


def past_integral(wts: RowWeights, kernel: Array, kernel_jump, x: Array, x_n: Array,
                  d=None) -> Array:
    """int_0^{t_n} K(t_n, s) X(s, s') ds for every stored s' (scalar functions).

    `kernel` (L,): point values K(t_n, t_l) (zero at l = n when K contains a stored response
    that vanishes there); `kernel_jump`: K(t_n, t_n^-); `x` (L, L): X(t_l, s'); `x_n` (L,):
    X(t_n, s') (row n); `d`: X's interval corrections (`merged`), or None. The delta part of K, if any, is the
    caller's.
    """
    out = (wts.w * kernel) @ x + wts.upper * kernel_jump * x_n
    return out if d is None else out + d.first(kernel, response=False)


def transposed_integral(wts: RowWeights, kernel: Array, r: Array, jump=1.0, d=None) -> Array:
    """int_0^{s'} K(t_n, s) R(s', s) ds for every stored s' (R a response with R(s', s'^-) =
    `jump`; its stored diagonal is zero; `d` its interval corrections or None)."""
    out = r @ (wts.w * kernel) + wts.upper_at * kernel * jump
    return out if d is None else out + d.second(kernel, response=True)


def response_integral(wts: RowWeights, kernel: Array, kernel_jump, r: Array, r_n: Array, n,
                      jump=1.0, d=None) -> Array:
    """int_{s'}^{t_n} K(t_n, s) R(s, s') ds for every stored s' < t_n (zero for s' = t_n).

    R(s'^+, s') = `jump` at the lower end, K(t_n, t_n^-) = `kernel_jump` at the upper end;
    `d`: R's interval corrections or None.
    """
    idx = jnp.arange(r.shape[-1])
    out = ((wts.w * kernel) @ r + wts.lower * kernel * jump
           + jnp.where(idx < n, wts.upper * kernel_jump * r_n, 0.0))
    return out if d is None else out + d.first(kernel, response=True)


def jump_column(n, size: int, value=1.0) -> Array:
    """A row that is `value` at column n and zero elsewhere (the jump R(t_n^+, t_n))."""
    return jnp.where(jnp.arange(size) == n, value, 0.0)


def scalar_front(c_n: Array, d_c: Array, n):
    """Front and rate of a scalar symmetric two-time function C(t, .) at row n: the row
    (columns <= n) and the equal-time value C(t, t) with its rate 2 dC(t, t^-)/dt [C.6]."""
    past = jnp.arange(c_n.shape[-1]) <= n
    d_c = jnp.where(past, d_c, 0.0)
    return (jnp.where(past, c_n, 0.0), c_n[n]), (d_c, 2.0 * d_c[n])


def write_symmetric(c: Array, n, row: Array, c_tt) -> Array:
    """c with row and column n set to `row` (columns < n) and c[n, n] = `c_tt`."""
    row = jnp.where(jnp.arange(c.shape[-1]) < n, row, 0.0).at[n].set(c_tt)
    return c.at[n].set(row).at[:, n].set(row)


def write_response(r: Array, n, row: Array) -> Array:
    """r with row n set to `row` on the columns < n (R(t_n, t_l), l < n; zero diagonal)."""
    return r.at[n].set(jnp.where(jnp.arange(r.shape[-1]) < n, row, 0.0))
