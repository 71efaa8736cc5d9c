"""The DMFT of gradient-flow training (spec sections 4-6), written once for any neuron algebra.

`DMFT(algebra=General(m), ...)` is the general theory of spec section 4 (m x m neuron matrices,
any deterministic initialization); `DMFT(algebra=Symmetric(m), ...)` is the same equations in
the two-number algebra D I + O (J - I) of spec section 5 (SymmDMFT). The causal row update
follows the discretization of spec section 6 step by step; see `DMFT.row`.

History buffers put neuron axes first and time axes last (see `dmft_jax._algebra`):
a (*vec, L), v (*vec, k, L), C and R (*mat, L, L) with C[..., n, l] = C(t_n, t_l),
R_A and C_A (L, L).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array

from ._algebra import AbstractAlgebra, General, Symmetric
from ._checks import check_kernel, check_scalar, concrete, target_or_noise
from ._covariance import AbstractKernel, Target
from ._integrate import AbstractModel
from ._results import diverged_rows
from ._solution import Solution
from ._stepper import TRAPEZOID_QUADRATURE, AbstractStiff, Row, RowWeights
from ._volterra import (
    FittedEnds,
    add_diagonal,
    ahead,
    column_diagonal,
    d2_times,
    diagonal_error,
    fit_row_weights,
    merged,
    response_rows,
)


class _Terms(NamedTuple):
    """Intermediates of row n (see `weight_terms`)."""

    c_n: Array
    r_n: Array
    a_t: Array
    v_t: Array
    force: Array     # the target drift f_i of [C.8]
    nu: Array
    f_c: Array       # [C.9] right side without the nu term, s' <= n
    mem_r: Array     # its M^C part (the noise-response term)
    f_v: Array       # [C.8] without the nu term
    d_a: Array       # [C.7]
    m_r: Array       # M^R point values on row n
    wm_r: Array      # their quadrature-weighted values
    m_c: Array       # M^C on row n
    m_delta: Array   # the delta coefficient of M^R
    m_jump: Array    # M^R(t_n, t_n^-)
    ends: Any = None  # `FittedEnds` of row n (trapezoid weights), or None
    r_fit: Any = None  # fitted correction of R's columns (`fitted_r`), read by `weight_row`


class Stiff(AbstractStiff):
    """The instantaneous linear part of the DMFT rates: K = diag(nu) + M^delta / m.

    The delta part of M^R, M^delta_ij = (alpha_bar / m) a_i a_j h'(C_ij(t, t)), acts on every
    two-time row X(t, .) (C and R: d/dt X = -K X + ...), on v, and on the equal-time C(t, t)
    (d/dt C(t, t) = -(K C + C K) + ...). It sets the explicit-Euler bound of spec section 6;
    `Trapezoid` integrates it exactly.
    """

    algebra: AbstractAlgebra
    K: Array

    _KINDS: ClassVar[dict] = {"C": "row", "R": "row", "v": "vector", "C_eq": "lyapunov"}

    def phi(self, k, h, tree):
        out = {}
        kinds = {key: self._KINDS.get(key) for key in tree}
        # one phi_k(-h K) for the rows and v (an expm of a 3m x 3m block matrix in the
        # general algebra)
        mat = (self.algebra.phi(self.K, h, k)
               if {"row", "vector"} & set(kinds.values()) else None)
        for key, y in tree.items():
            kind = kinds[key]
            if kind is None:
                out[key] = (1.0 if k < 2 else 0.5) * y
            elif kind == "lyapunov":
                out[key] = self.algebra.phi_lyapunov(self.K, h, k, y)
            elif kind == "vector":
                out[key] = self.algebra.matmul_vec(mat, y)
            else:
                out[key] = self.algebra.matmul(mat, y)
        return out

    def times(self, tree):
        out = {}
        for key, y in tree.items():
            kind = self._KINDS.get(key)
            if kind == "row":
                out[key] = self.algebra.matmul(self.K, y)
            elif kind == "vector":
                out[key] = self.algebra.matmul_vec(self.K, y)
            elif kind == "lyapunov":
                ky = self.algebra.matmul(self.K, y)      # y = C(t, t) is symmetric
                out[key] = ky + self.algebra.transpose(ky)
            else:
                out[key] = jnp.zeros_like(y)
        return out


class Kernels(NamedTuple):
    """What the weight side of a DMFT needs from its sample side on row n (the table of
    docs/nongaussian.md section 2, in the Gaussian DMFT's conventions).

    - `delta` (*mat): the instantaneous memory M^delta(t_n): the weight side feels
      -(1/m) M^delta X(t_n, .) (Gaussian: the delta part of M^R [C.18]);
    - `memory` (*mat, L): the regular memory kernel M(t_n, t_l) at the stored times (M^R);
    - `memory_jump` (*mat): its value at s = t_n^- (used by quadratures with jumps);
    - `noise` (*mat, L): M^C(t_n, t_l): the noise covariance is -(1/m) M^C [C.14];
    - `force` (*vec, k): the target drift f_i of [C.8, C.9], (alpha_bar/m) rho a_i
      grad phihat(v_i) (non-Gaussian: -M*_i);
    - `d_a` (*vec): da/dt [C.7] (zero with a frozen second layer).
    """

    delta: Array
    memory: Array
    memory_jump: Array
    noise: Array
    force: Array
    d_a: Array


def collective(alg: AbstractAlgebra, x: Array) -> Array:
    """(1/m) J x: the part of a response's change that lies along the all-ones direction on
    the left, the collective mode of the stiff part K = diag(nu) + M^delta / m whose fast
    rate `DMFT.fast_rates` gives. Only this part falls from the jump within ~1/rate under
    lazy initialization (the symmetric DMFT: R_d + (m - 1) R_o falls from 1 to ~0.04 within
    0.05 at m = 256, t = 0.5, while R_d - R_o stays near 1), so R_d's slow decay is not
    fitted as a fall."""
    ones = jnp.ones(alg.vector_shape, x.dtype)
    return alg.product(alg.outer(ones, ones), x)


def fitted_r(alg: AbstractAlgebra, ends: FittedEnds, hist) -> tuple[Array, Array]:
    """The fitted corrections of R's diagonal ends (`FittedEnds`), over k: of column k's first
    interval (int_{t_k} K(s) R(s, t_k) ds) and of row k's last one (int^{t_k} K(s) R(t_k, s)
    ds), each the collective part of R's fall from its jump I. Used by the rows and, at a
    decimation, by `DMFT.fold_fits`: one rule for both."""
    eye = alg.identity(ends.lo.dtype)[..., None]
    r_1 = alg.history_diagonal(hist, 1)                    # R(t_k, t_{k-1})
    return (collective(alg, ends.lower(eye, ahead(r_1, 1))),     # R(t_{k+1}, t_k)
            collective(alg, ends.upper(eye, r_1)))


def weight_terms(alg: AbstractAlgebra, n, s, wts: RowWeights, k: Kernels,
                 ends: FittedEnds | None = None):
    """The weight side of the DMFT on row n: the right sides of [C.8]-[C.10] without their nu
    terms, and nu from C_ii(t, t) = 1 [C.21]. Returns the state with nu[n] written and the
    `_Terms` of the row (shared by the flow's `weight_row` and `DiscreteGD`). `ends`: the
    fitted diagonal ends of the integrals over R (`dmft_jax._volterra.fit_row_weights`)."""
    past = jnp.arange(s["rho"].shape[-1]) <= n
    c_n, r_n = alg.history_row(s["C"], n), alg.history_row(s["R"], n)
    v_t = s["v"][..., n]
    wm_r, wm_c = wts.w * k.memory, wts.w * k.noise
    inst = k.delta + wts.upper * k.memory_jump          # instantaneous part acting on row n
    # Right side of [C.9] for every s' <= n: drift + M^R part + M^C part; nu is its s' = t
    # value, so that C_ii(t, t) = 1 is kept exactly.
    drift = alg.inner_k(k.force, s["v"])
    mem_c = -alg.contract(wm_r, s["C"]) - alg.product(inst, c_n)
    corr = merged(s, "C")                # after a history decimation
    if corr is not None:
        mem_c = mem_c - corr.first(k.memory, response=False, alg=alg)
    mem_r = -alg.contract_t(wm_c, s["R"]) - wts.upper_at * k.noise / alg.m
    corr = merged(s, "R")
    if corr is not None:
        mem_r = mem_r - corr.second(k.noise, response=True, alg=alg)
    r_fit = None
    if ends is not None:     # R(t_k, s) falls from its jump as s -> t_k^-
        r_fit, fit = fitted_r(alg, ends, s["R"])
        mem_r = (mem_r - alg.pointwise(k.noise, alg.transpose(fit))
                 - ends.own(n, past.shape[0]) * k.noise / alg.m)
    f_c = jnp.where(past, drift + mem_c + mem_r, 0.0)
    nu = alg.diag(f_c[..., n])
    f_v = (k.force - jnp.sum(alg.matvec_k(wm_r, s["v"]), axis=-1)          # [C.8] without nu
           - alg.matmul_vec(inst, v_t) / alg.m)
    s = dict(s, nu=s["nu"].at[..., n].set(nu))
    return s, _Terms(c_n=c_n, r_n=r_n, a_t=s["a"][..., n], v_t=v_t, force=k.force, nu=nu,
                     f_c=f_c, mem_r=jnp.where(past, mem_r, 0.0), f_v=f_v, d_a=k.d_a,
                     m_r=k.memory, wm_r=wm_r, m_c=k.noise, m_delta=k.delta,
                     m_jump=k.memory_jump, ends=ends, r_fit=r_fit)


def weight_row(alg: AbstractAlgebra, n, s, wts: RowWeights, x: "_Terms") -> Row:
    """Step 5 of spec section 6 on any weights: the rates [C.9] for C(t, s'), [C.6] for
    C(t, t), [C.10] for R(t, s'), [C.8] for v, [C.7] for a, with the front of row n (the jump
    R(t_n^+, t_n) = I in it when `wts.jumps`, after an Euler step otherwise) and the stiff
    part K = diag(nu) + M^delta / m."""
    idx = jnp.arange(s["rho"].shape[-1])
    past = idx <= n
    eye = alg.identity(x.c_n.dtype)
    d_c = jnp.where(past, x.f_c - alg.left(x.nu, x.c_n), 0.0)
    d_eq = d_c[..., n] + alg.transpose(d_c[..., n])
    jump = jnp.where(idx == n, 1.0, 0.0) * eye[..., None]     # R(t_n^+, t_n) = I
    r_front = x.r_n + jump if wts.jumps else x.r_n
    d_r = (-alg.left(x.nu, r_front) - alg.product(x.m_delta, r_front)
           - alg.contract(x.wm_r, s["R"]) - wts.lower * x.m_r / alg.m
           - jnp.where(idx < n, wts.upper, 0.0) * alg.product(x.m_jump, x.r_n))
    corr = merged(s, "R")                # after a history decimation
    if corr is not None:
        d_r = d_r - corr.first(x.m_r, response=True, alg=alg)
    if x.ends is not None:               # R(s, t_k) falls from its jump as s -> t_k^+
        d_r = (d_r - alg.pointwise(x.m_r, x.r_fit)
               + x.ends.newest(n, idx.shape[0]) * alg.product(x.m_jump, x.r_n))
    d_r = jnp.where(past, d_r, 0.0)
    d_v = -x.nu[..., None] * x.v_t + x.f_v
    front = dict(a=x.a_t, v=x.v_t, C=jnp.where(past, x.c_n, 0.0), C_eq=x.c_n[..., n],
                 R=r_front)
    rate = dict(a=x.d_a, v=d_v, C=d_c, C_eq=d_eq, R=d_r)
    after = jtu.tree_map(jnp.zeros_like, front)
    if not wts.jumps:
        after["R"] = jump
    k_mat = alg.left(x.nu, eye) + x.m_delta / alg.m
    return Row(front, rate, after, Stiff(algebra=alg, K=k_mat))


def weight_write(alg: AbstractAlgebra, n, s, front) -> dict:
    """Write an advanced weight-side front as row n: a, v, the row C(t_n, t_l < t_n) (and its
    transpose column) with C_ii(t_n, t_n) = 1 kept exactly, and R(t_n, t_l < t_n)."""
    before = jnp.arange(s["rho"].shape[-1]) < n
    c_row = jnp.where(before, front["C"], 0.0)
    c_row = c_row.at[..., n].set(alg.with_unit_diagonal(front["C_eq"]))
    return dict(
        s,
        a=s["a"].at[..., n].set(front["a"]),
        v=s["v"].at[..., n].set(front["v"]),
        C=alg.history_set(s["C"], n, c_row, column=True),
        R=alg.history_set(s["R"], n, jnp.where(before, front["R"], 0.0), column=False),
    )


class DMFT(AbstractModel):
    """Dynamical mean field theory of a two-layer network under gradient flow.

    Equations [C.7]-[C.10], [C.18]-[C.20], [C.24], [C.25] (spec section 4) in the neuron
    algebra `algebra`; under `Symmetric(m)` they are [C.32]-[C.46] (spec section 5).

    **Fields:**

    - `algebra`: `Symmetric(m)` or `General(m)` (m static).
    - `h`: the activation covariance h(q) [A.5].
    - `target`: phihat, grad phihat, ||phi||^2 [A.7] (k = `target.k`, static).
    - `tau`: label-noise level; `alpha_bar`: n / d (= alpha m).
    - `a0` (*vec), `c0` (*mat), `v0` (*vec, k): a_i(0), C_ij(0, 0), v_i(0) in the
      algebra's representation.
    - `freeze_a`: keep the second layer at a(0) (drop [C.7] / [C.32]).
    - `fit_ends`: on trapezoid weights, correct the intervals next to the diagonals for the
      responses' fall from their jumps within ~1/rate (`dmft_jax._volterra.fitted_end`;
      rate = `fast_rates`, ~alpha m gamma^2 h'(1) under lazy initialization). Off by default:
      under lazy initialization it takes the error of long steps (h >> 1/rate) from percents
      to the tolerance's order (lazy Fig. 3, m = 256, t = 4, rtol 1e-3: e_ts 1.4% -> 0.1%),
      but it made mean-field Fig. 5 at m = 256 (rtol 1e-3) blow up near interpolation
      (t ~ 2400, where the plain trapezoid reaches t = 2560).

    Construct with `symmetric_dmft` / `general_dmft`, which validate their input.

    **Discretization.** The model computes row n of the history from the quadrature weights
    of the stepper (`RowWeights`): every integral over the past is a weighted sum over the
    stored times plus its jump terms (R(t^+, t) = I, r_A(t^+, t) = -Sigma_R(t, t^-)), and the
    delta parts of R_A and M^R are counted exactly (full weight at the upper end, spec
    section 6). History buffers: `R_A` holds the regular part of R_A; `R` holds R(t_n, t_l)
    for l < n (zero diagonal); `S_R` holds Sigma_R(t_n, t_l) (l < n), against which the rows
    of R_A are solved (`dmft_jax._volterra.response_rows`); `sigma_jump` holds
    Sigma_R(t_n, t_n^-).
    """

    algebra: AbstractAlgebra
    h: AbstractKernel
    target: Target
    tau: Array
    alpha_bar: Array
    a0: Array
    c0: Array
    v0: Array
    freeze_a: bool = eqx.field(static=True, default=False)
    fit_ends: bool = eqx.field(static=True, default=False)

    @property
    def m(self) -> int:
        return self.algebra.m

    @property
    def k(self) -> int:
        return self.target.k

    @property
    def alpha(self) -> Array:
        """Overparametrization ratio alpha = n / (m d) = alpha_bar / m."""
        return self.alpha_bar / self.m

    @property
    def dtype(self):
        return jnp.result_type(float, self.tau, self.alpha_bar, self.a0)

    def valid(self) -> Array:
        return (self.alpha_bar > 0) & (self.tau >= 0) & jnp.isfinite(self.alpha_bar) \
            & jnp.isfinite(self.tau) & jnp.all(jnp.isfinite(self.a0))

    # ----------------------------------------------------------------- buffers
    def init(self, size: int):
        alg, dtype = self.algebra, self.dtype
        vec, mat = alg.vector_shape, alg.matrix_shape
        state = dict(
            a=jnp.zeros((*vec, size), dtype).at[..., 0].set(self.a0),
            v=jnp.zeros((*vec, self.k, size), dtype).at[..., 0].set(self.v0),
            C=alg.history_set(alg.history_zeros(size, dtype), 0,
                              jnp.zeros((*mat, size), dtype).at[..., 0].set(self.c0), True),
            R=alg.history_zeros(size, dtype),
            R_A=jnp.zeros((size, size), dtype),
            C_A=jnp.zeros((size, size), dtype),
            P_A=jnp.zeros((size, size), dtype),
            S_C=jnp.zeros((size, size), dtype),
            S_R=jnp.zeros((size, size), dtype),
            nu=jnp.zeros((*vec, size), dtype),
            rho=jnp.zeros((size,), dtype),
            sigma_jump=jnp.zeros((size,), dtype),
            ca_error=jnp.zeros((size,), dtype),
        )
        if self.fit_ends:             # which fitted ends a decimation moved (`fold_fits`)
            state["folded"] = jnp.zeros((2, size), dtype)
        return state

    def time_axes(self):
        axes = dict(a=1, v=1, C=2, R=2, R_A=2, C_A=2, P_A=2, S_C=2, S_R=2, nu=1, rho=1,
                    sigma_jump=1, ca_error=1)
        return dict(axes, folded=1) if self.fit_ends else axes

    def advancing(self):
        return frozenset({"a", "v", "C", "R"})

    def interval_corrections(self):
        # The responses fall from their jumps within ~1/m (lazy) of the diagonal; C has only a
        # kink there (linear interpolation of its rows missed it by 0.04-0.13 times the
        # tolerance at lazy m = 64 ... 256, where R and R_A were missed by 200-640 times).
        return {"R_int": "R", "S_R_int": "S_R"}

    def masses(self):
        return frozenset({"P_A"})

    def unread_history(self):
        # Past sigma_jump values are read only at stored times (the jumps of Sigma_R's columns).
        return frozenset({"nu", "rho", "ca_error", "sigma_jump", "folded"})

    def select_times(self, s, keep, ts=None):
        """History decimation (`AbstractModel.select_times`), after the fitted diagonal ends
        of the stored columns and rows are moved into the interval corrections
        (`fold_fits`), where merging keeps them."""
        if self.fit_ends and merged(s, "R") is not None and ts is not None:
            s = self.fold_fits(s, ts)
        return super().select_times(s, keep, ts)

    def fold_fits(self, s, ts):
        """The state of a full history (rows up to n = L - 1) with the fitted corrections of
        the diagonal ends (`dmft_jax._volterra.FittedEnds`) added to the interval
        corrections: column k's first interval of R into d1[k, k] (and of Sigma_R, whose rows
        are known up to n - 1), row k's last interval of R into d2[k, k - 1]; `folded` marks
        them. The interval corrections weigh those entries by the kernel at the diagonal end,
        as the fit does, so a row integrates the same before and after; the fit is not
        recomputed on the decimated grid, whose points are further apart."""
        alg = self.algebra
        size = ts.shape[0]
        n = size - 1
        wts = TRAPEZOID_QUADRATURE.weights(ts, n)
        folded = s["folded"]
        _, ends = fit_row_weights(wts, n, self.fast_rates(s), folded)
        idx = jnp.arange(size)
        lo, at = fitted_r(alg, ends, s["R"])     # columns k <= n - 2, rows 1 ... n - 1
        lo_s = ends.lower(s["sigma_jump"], column_diagonal(s["S_R"], 1))
        (d1, d2), (s1, s2) = s["R_int"], s["S_R_int"]
        d1 = jtu.tree_map(lambda b, x: add_diagonal(b, x, 0), d1, alg.history_split(lo))
        d2 = jtu.tree_map(lambda b, x: add_diagonal(b, x, 1), d2, alg.history_split(at))
        s1 = add_diagonal(s1, lo_s, 0)
        done = jnp.stack([idx + 2 <= n, (idx >= 1) & (idx < n)]).astype(folded.dtype)
        return dict(s, R_int=(d1, d2), S_R_int=(s1, s2), folded=jnp.maximum(folded, done))

    def interval_jumps(self, s):
        size = s["rho"].shape[-1]
        eye = self.algebra.identity(self.dtype)
        return {"R": self.algebra.history_split(eye[..., None] * jnp.ones((size,), self.dtype)),
                "S_R": s["sigma_jump"]}

    # -------------------------------------------------------------- one row
    def _phihat_over_time(self, v: Array) -> Array:
        return self.target.phihat(jnp.moveaxis(v, -2, -1))

    def _sigmas(self, n, s, c_n, r_n, past):
        """Rows n of Sigma_C and Sigma_R [C.20] (zero beyond n), and a_i(t_n) a_j(s)."""
        alg = self.algebra
        a_t = s["a"][..., n]
        aa = alg.outer(a_t, s["a"])
        fit_t = alg.mean_vec(a_t * self.target.phihat(s["v"][..., n]))
        fit_s = alg.mean_vec(s["a"] * self._phihat_over_time(s["v"]))
        sigma_c = (self.tau**2 + self.target.norm2 - fit_t - fit_s
                   + alg.mean_all(aa * self.h(c_n)))
        sigma_r = alg.mean_all(aa * self.h.d1(c_n) * r_n)
        return jnp.where(past, sigma_c, 0.0), jnp.where(past, sigma_r, 0.0), aa

    def fast_rates(self, s) -> Array:
        """The rate at which the responses fall from their jumps at each stored time: the
        collective mode (1/m) 1^T K 1 of the stiff part K = diag(nu) + M^delta / m (spec
        section 6: ~alpha m gamma^2 h'(1) under lazy initialization), clipped at 0. Valid where
        nu is written (rows before the current one)."""
        alg = self.algebra
        c_eq = alg.history_diagonal(s["C"], 0)
        rate = (alg.mean_vec(s["nu"])
                + self.alpha * alg.mean_all(alg.outer(s["a"], s["a"]) * self.h.d1(c_eq)))
        return jnp.maximum(rate, 0.0)

    def _kernels(self, n, s, wts: RowWeights, ends: FittedEnds | None = None):
        """Steps 1-4 of spec section 6 for row n on the weights `wts`: the sample side of the
        Gaussian DMFT. Returns the state with the auxiliaries R_A, C_A, rho, sigma_jump of row
        n written and the `Kernels` of row n ([C.18], the target drift of [C.8, C.9], [C.7])."""
        alg, h = self.algebra, self.h
        size = s["rho"].shape[-1]
        idx = jnp.arange(size)
        past = idx <= n
        c_n, r_n = alg.history_row(s["C"], n), alg.history_row(s["R"], n)
        a_t, v_t = s["a"][..., n], s["v"][..., n]
        c_tt = c_n[..., n]
        eye = alg.identity(c_n.dtype)

        # 1-3. Sigma_C, Sigma_R, their jump Sigma_R(t, t^-), then the rows of R_A and C_A.
        sigma_c, sigma_r, aa = self._sigmas(n, s, c_n, r_n, past)
        aa_t = alg.outer(a_t, a_t)
        sigma_jump = s["sigma_jump"].at[n].set(alg.mean_all(aa_t * h.d1(c_tt) * eye))
        r_jump = jnp.where(past, -sigma_jump, 0.0)
        bufs, r_row, c_row = response_rows(sigma_r, sigma_c, s, r_jump, n, wts,
                                           merged(s, "S_R"), ends)
        rho = 1.0 + jnp.dot(wts.w, r_row) + wts.upper * r_jump[n]

        # 4. Memory kernels on row n [C.18]: point values (zero at s = t_n, where the stored
        # R and r_A vanish), the delta coefficient of M^R and its jump value at s = t_n^-.
        w = self.alpha * aa
        dh_c = h.d1(c_n)
        kernels = Kernels(
            delta=self.alpha * aa_t * h.d1(c_tt),
            memory=w * (r_row * dh_c + c_row * d2_times(h, c_n, r_n)),
            memory_jump=self.alpha * aa_t * (r_jump[n] * h.d1(c_tt)
                                             + c_row[n] * d2_times(h, c_tt, eye)),
            noise=w * c_row * dh_c,
            force=self.alpha * rho * a_t[..., None] * self.target.grad_phihat(v_t),
            d_a=self._da(n, s, c_n, r_n, r_row, c_row, rho, r_jump[n], wts))
        ca_error = diagonal_error(sigma_r, sigma_c, r_row, c_row, r_jump, n, wts)
        s = dict(s, **bufs, rho=s["rho"].at[n].set(rho),
                 sigma_jump=sigma_jump,
                 ca_error=s["ca_error"].at[n].set(ca_error))
        return s, kernels

    def _terms(self, n, s, wts: RowWeights, ends: FittedEnds | None = None):
        """The kernels of row n and the weight side's right sides (see `weight_terms`)."""
        s, kernels = self._kernels(n, s, wts, ends)
        return weight_terms(self.algebra, n, s, wts, kernels, ends)

    def row(self, n, s, wts: RowWeights):
        """Steps 1-5 of spec section 6 for row n, on the weights `wts`: returns the state with
        the auxiliaries of row n written and the `Row` (a, v, C[n], C(t_n, t_n), R[n])."""
        # With `fit_ends`, trapezoid weights are fitted at the diagonal ends, where the
        # responses fall from their jumps within ~1/rate (`dmft_jax._volterra.fitted_end`);
        # Euler's are left as they are.
        ends = None
        if self.fit_ends:
            wts, ends = fit_row_weights(wts, n, self.fast_rates(s), s["folded"])
        s, x = self._terms(n, s, wts, ends)
        return s, weight_row(self.algebra, n, s, wts, x)

    def _da(self, n, s, c_n, r_n, r_row, c_row, rho, r_jump_n, wts):
        """da_i/dt of [C.7] / [C.32]; zero with a frozen second layer."""
        if self.freeze_a:
            return jnp.zeros_like(s["a"][..., n])
        alg, h = self.algebra, self.h
        a_t, c_tt = s["a"][..., n], c_n[..., n]
        eye = alg.identity(c_n.dtype)
        fit = self.target.phihat(s["v"][..., n]) * rho
        h_a = alg.matvec(h(c_n), s["a"])                       # (1/m) sum_l a_l(s) h(C_il(t, s))
        mem = jnp.sum(wts.w * (r_row * h_a + c_row * alg.matvec(h.d1(c_n) * r_n, s["a"])),
                      axis=-1)
        inst = h_a[..., n] * (1.0 + wts.upper * r_jump_n)      # delta of R_A, and its jump
        inst += wts.upper * c_row[n] * alg.matvec(h.d1(c_tt) * eye, a_t)
        return self.alpha * (fit - mem - inst)

    def mask(self, n, tree):
        out = dict(tree)
        for key in ("C", "R"):
            out[key] = jnp.where(jnp.arange(tree[key].shape[-1]) <= n, tree[key], 0.0)
        return out

    def write(self, n, s, front):
        return weight_write(self.algebra, n, s, front)

    # --------------------------------------------------------------- result
    def test_error(self, a: Array, v: Array, c_eq: Array) -> Array:
        """e_ts = (1/2)[tau^2 + ||phi||^2 - (2/m) sum a_i phihat(v_i) + (1/m^2) sum a_i a_j h(C_ij(t,t))].

        [C.25] / [C.46], vectorized over a trailing time axis; `c_eq` is C(t, t).
        """
        alg = self.algebra
        fit = alg.mean_vec(a * self._phihat_over_time(v))
        quad = alg.mean_all(alg.outer(a, a) * self.h(c_eq))
        return 0.5 * (self.tau**2 + self.target.norm2 - 2.0 * fit + quad)

    def records(self, n, s) -> dict:
        """One-time observables of row n: a, v, nu, rho, e_tr, e_ts, C(t_n, 0), C(t_n, t_n)."""
        c_n = self.algebra.history_row(s["C"], n)
        a, v, c_tt = s["a"][..., n], s["v"][..., n], c_n[..., n]
        e_ts = self.test_error(a[..., None], v[..., None], c_tt[..., None])[..., 0]
        return dict(a=a, v=v, nu=s["nu"][..., n], rho=s["rho"][n], e_tr=-0.5 * s["C_A"][n, n],
                    e_ts=e_ts, C_t0=c_n[..., 0], C_tt=c_tt)

    def divergence(self, n, s) -> Array:
        c_n = self.algebra.history_row(s["C"], n)
        e_tr = -0.5 * jnp.stack([s["C_A"][0, 0], s["C_A"][n, n]])
        return diverged_rows(e_tr, jnp.stack([s["a"][..., 0], s["a"][..., n]]),
                             correlations=jnp.stack([c_n * 0.0, c_n]))[1]

    def solution(self, s, ts, records=None) -> Solution:
        size = ts.shape[0]
        idx = jnp.arange(size)
        C, R = self.algebra.history_array(s["C"]), self.algebra.history_array(s["R"])
        if records is None:
            c_eq = C[..., idx, idx]
            records = dict(t=ts, a=jnp.moveaxis(s["a"], -1, 0), v=jnp.moveaxis(s["v"], -1, 0),
                           nu=jnp.moveaxis(s["nu"], -1, 0), rho=s["rho"],
                           e_tr=-0.5 * jnp.diagonal(s["C_A"]),                  # [C.24]
                           e_ts=self.test_error(s["a"], s["v"], c_eq),
                           C_t0=jnp.moveaxis(C[..., :, 0], -1, 0),
                           C_tt=jnp.moveaxis(c_eq, -1, 0))
        return Solution(t=records["t"], a=records["a"], v=records["v"], nu=records["nu"],
                        rho=records["rho"], e_tr=records["e_tr"], e_ts=records["e_ts"],
                        C_t0=records["C_t0"], C_tt=records["C_tt"],
                        t_stored=ts, C=C, R=R, C_A=s["C_A"], R_A=s["R_A"],
                        algebra=self.algebra)


# ------------------------------------------------------------------------------ construction
def symmetric_dmft(h, target: Target | None = None, *, tau, alpha, m: int, a0=None,
                   gamma0=None, freeze_a: bool = False, fit_ends: bool = False) -> DMFT:
    """The symmetric DMFT (SymmDMFT, spec section 5) with validated parameters.

    Symmetric initialization: w_i(0) iid uniform on the sphere (C(0,0) = I, v(0) = 0) and
    a_i(0) = a0 for all i; mean-field scale `a0`, or lazy scale `gamma0` (a0 = gamma0 sqrt(m)).

    **Arguments:** `h` a kernel or a `covariance` spec; `target` a `Target` (None: pure noise);
    `tau` >= 0; `alpha` = n / (m d) > 0; `m` >= 1 (static); exactly one of `a0`, `gamma0`;
    `freeze_a` keeps a(t) = a0; `fit_ends` fits the trapezoid's intervals next to the
    diagonals to the responses' fall from their jumps (see `DMFT`).
    """
    from ._covariance import covariance
    if int(m) != m or m < 1:
        raise ValueError(f"the width m must be an integer >= 1, got {m}")
    if (a0 is None) == (gamma0 is None):
        raise ValueError("give exactly one of a0 (mean-field scale) and gamma0 (lazy scale)")
    alpha = check_scalar("alpha", alpha, 0.0, strict=True)
    a0 = (check_scalar("a0", a0, -np.inf, strict=False) if gamma0 is None
          else check_scalar("gamma0", gamma0, -np.inf, strict=False) * np.sqrt(m))
    target = target_or_noise(target)
    return DMFT(
        algebra=Symmetric(int(m)), h=check_kernel(covariance(h)), target=target,
        tau=check_scalar("tau", tau, 0.0, strict=False), alpha_bar=alpha * m,
        a0=a0, c0=jnp.array([1.0, 0.0], a0.dtype), v0=jnp.zeros(target.k, a0.dtype),
        freeze_a=freeze_a, fit_ends=bool(fit_ends))


def check_initialization(a, C, v, k: int, atol: float = 1e-8):
    """Validate a general initialization (a (m,), C (m, m), v (m, k) or None) and return arrays.

    C must be a Gram matrix of unit vectors (symmetric, unit diagonal, positive semidefinite);
    with v, the joint Gram matrix [[C, v], [v^T, I_k]] of (w_i, u_j) must be PSD too.
    """
    a, C = np.asarray(a, dtype=np.float64), np.asarray(C, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"a must have shape (m,), got {a.shape}")
    m = a.shape[0]
    if C.shape != (m, m):
        raise ValueError(f"C must have shape (m, m) = ({m}, {m}) to match a, got {C.shape}")
    v = np.zeros((m, k)) if v is None else np.asarray(v, dtype=np.float64)
    if v.shape != (m, k):
        raise ValueError(f"v must have shape (m, k) = ({m}, {k}) (k from the target), got {v.shape}")
    for name, x in (("a", a), ("C", C), ("v", v)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} has non-finite entries")
    if not np.allclose(C, C.T, atol=atol):
        raise ValueError("C is not symmetric: not a Gram matrix of the w_i(0)")
    if not np.allclose(np.diag(C), 1.0, atol=atol):
        raise ValueError(f"C must have unit diagonal (||w_i|| = 1), got diag {np.diag(C).tolist()}")
    joint = np.block([[C, v], [v.T, np.eye(k)]])
    low = np.linalg.eigvalsh((joint + joint.T) / 2).min()
    if low < -atol * max(1, m):
        what = "C" if np.linalg.eigvalsh((C + C.T) / 2).min() < -atol * m else "[[C, v], [v^T, I]]"
        raise ValueError(f"{what} is not positive semidefinite (smallest eigenvalue {low:.3g}): "
                         "no unit vectors w_i have these overlaps")
    return a, C, v


def general_dmft(h, target: Target | None = None, *, tau, a, C, v=None, alpha=None,
                 alpha_bar=None, freeze_a: bool = False, fit_ends: bool = False) -> DMFT:
    """The general DMFT (spec section 4) from a deterministic initialization, validated.

    **Arguments:** `h`, `target`, `tau` as in `symmetric_dmft`; `a` (m,) the a_i(0); `C` (m, m)
    the overlaps <w_i(0), w_j(0)>; `v` (m, k) the overlaps U^T w_i(0) (default 0); exactly one
    of `alpha` = n / (m d) and `alpha_bar` = n / d; `freeze_a`, `fit_ends` as in
    `symmetric_dmft`.
    """
    from ._covariance import covariance
    target = target_or_noise(target)
    if (alpha is None) == (alpha_bar is None):
        raise ValueError("give exactly one of alpha (= n/(m d)) and alpha_bar (= n/d)")
    a, C, v = check_initialization(a, C, v, target.k)
    m = a.shape[0]
    alpha_bar = (check_scalar("alpha_bar", alpha_bar, 0.0, strict=True) if alpha is None
                 else check_scalar("alpha", alpha, 0.0, strict=True) * m)
    dtype = jnp.result_type(float)
    return DMFT(
        algebra=General(m), h=check_kernel(covariance(h)), target=target,
        tau=check_scalar("tau", tau, 0.0, strict=False), alpha_bar=alpha_bar,
        a0=jnp.asarray(a, dtype), c0=jnp.asarray(C, dtype), v0=jnp.asarray(v, dtype),
        freeze_a=freeze_a, fit_ends=bool(fit_ends))
