"""Large-width reduced theories of the DMFT (spec section 7): one per time scale.

Each reduced theory is the m -> infinity limit of the symmetric DMFT (spec section 5) on one
time scale, with the time and the two-time functions rescaled. The Volterra-type ones are
`AbstractModel`s and run through the same `integrate` / `solve` loop as the DMFT itself; the
ones with closed forms are plain functions.

=========  ================  ============================  ============================  =============
name       init              time of the finite-m DMFT      finite-m quantities           here
=========  ================  ============================  ============================  =============
lz1        a0 = g0 sqrt(m)   t_dmft = t / m                 m C_o, m (C_d - 1), m R_o,    `lz1`
                                                            sqrt(m) v, e_tr = e_ts
lz2        a0 = g0 sqrt(m)   t_dmft = t                     C_d, R_d, C_o ~ -C_d / m,     `Lz2`
                                                            R_o ~ -R_d / m, e_tr
mf1        a0 = O(1)         t_dmft = t  (pure noise)       m C_o, m R_o; a = a0,         `mf1`
                                                            e_tr = tau^2 / 2
mf2        a0 = O(1)         t_dmft = sqrt(m) t             a, C_d, R_d, m C_o,           `Mf2`
                                                            sqrt(m) nu
H.2        a fixed, frozen   t_dmft = m t, alpha_bar fixed  C_d, C_o, R_d, m R_o,         `H2`
                                                            m nu, e_tr
=========  ================  ============================  ============================  =============

(The mean-field ODEs of the mf1 regime with a target, [G.44] and [3.4], are in
`dmft_jax._meanfield`.) Physical parameters are traced arrays (vmap over gamma0, alpha, tau,
alpha_bar, a works without recompiling); sizes are static through the `TimeGrid`.

All two-time arrays are indexed X[n, l] = X(t_n, t_l) like `Solution`; responses vanish for
l >= n.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from ._checks import check_kernel, check_scalar
from ._covariance import AbstractKernel, Target, covariance
from ._integrate import AbstractModel
from ._results import diverged_rows
from ._stepper import GroupStiff, Row, RowWeights
from ._volterra import (
    d2_times,
    diagonal_error,
    jump_column,
    merged,
    past_integral,
    response_integral,
    response_rows,
    scalar_front,
    transposed_integral,
    write_response,
    write_symmetric,
)


# ----------------------------------------------------------------------------------- helpers
class Linearless(AbstractKernel):
    """htilde(z) = h(z) - h'(0) z: the covariance with its linear part removed (spec section 7).

    In the lazy second regime the (m - 1) off-diagonal terms of the symmetric DMFT, with
    C_o = -C_d / m and R_o = -R_d / m, contribute exactly -h'(0) C_d (and -h'(0) R_d) and turn
    h into htilde [F.16-F.27].
    """

    h: AbstractKernel

    def __call__(self, q: ArrayLike) -> Array:
        return self.h(q) - self.h.d1(jnp.zeros(())) * q

    def d1(self, q: ArrayLike) -> Array:
        return self.h.d1(q) - self.h.d1(jnp.zeros(()))

    def d2(self, q: ArrayLike) -> Array:
        return self.h.d2(q)


def _float(name: str, value, lower: float = -jnp.inf, strict: bool = False) -> Array:
    return check_scalar(name, value, lower, strict)


class _Volterra(AbstractModel):
    """Shared plumbing of the scalar Volterra-type reduced theories.

    Buffers: symmetric two-time functions (`_SYMMETRIC` keys, with an equal-time entry
    `<key>_eq` in the front), responses (`_RESPONSES`, zero diagonal, jump R(t^+, t) per key),
    one-time advancing values (`_ONE_TIME`), and auxiliaries (R_A, C_A, nu, sigma_jump, ...).
    """

    _SYMMETRIC: ClassVar[tuple] = ()
    _RESPONSES: ClassVar[tuple] = ()
    _ONE_TIME: ClassVar[tuple] = ()
    _JUMPS: ClassVar[dict] = {}          # R(t^+, t) for each response

    def interval_corrections(self):
        # The responses only: the symmetric functions have a kink at the diagonal, no fall.
        keys = self._RESPONSES + (("S_R",) if "S_R" in self.time_axes() else ())
        return {key + "_int": key for key in keys}

    def interval_jumps(self, s):
        size = s["nu"].shape[-1]
        out = {key: jnp.full((size,), self._JUMPS[key], s[key].dtype) for key in self._RESPONSES}
        if "S_R" in s:
            out["S_R"] = s["sigma_jump"]
        return out

    def masses(self):
        return frozenset({"P_A"} & set(self.time_axes()))

    def unread_history(self):
        return frozenset({"nu", "ca_error", "sigma_jump"} & set(self.time_axes()))

    def advancing(self):
        return frozenset(self._SYMMETRIC + self._RESPONSES + self._ONE_TIME)

    def write(self, n, s, front):
        out = dict(s)
        for key in self._SYMMETRIC:
            out[key] = write_symmetric(s[key], n, front[key], front[key + "_eq"])
        for key in self._RESPONSES:
            out[key] = write_response(s[key], n, front[key])
        for key in self._ONE_TIME:
            out[key] = s[key].at[n].set(front[key])
        return out

    def mask(self, n, tree):
        out = dict(tree)
        for key in self._SYMMETRIC + self._RESPONSES:
            out[key] = jnp.where(jnp.arange(tree[key].shape[-1]) <= n, tree[key], 0.0)
        return out

    def _jumped(self, n, s, wts, jumps: dict):
        """Fronts of the responses at row n (with the jump R(t_n^+, t_n) when `wts.jumps`) and
        the `after` increments of an Euler step."""
        size = s["nu"].shape[-1]
        fronts, after = {}, {}
        for key in self._RESPONSES:
            col = jump_column(n, size, jumps[key])
            fronts[key] = s[key][n] + col if wts.jumps else s[key][n]
            after[key] = jnp.zeros_like(col) if wts.jumps else col
        return fronts, after

    def _row(self, s, front, rate, after, stiff=None):
        after = {key: after.get(key, jnp.zeros_like(val)) for key, val in front.items()}
        return s, Row(front, rate, after, stiff)

    def valid(self):
        leaves = [x for x in jax.tree_util.tree_leaves(self) if eqx.is_inexact_array(x)]
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))

    def divergence(self, n, s):
        rows = jnp.stack([s[key][n] for key in self._SYMMETRIC])
        e_tr = -0.5 * jnp.stack([s["C_A"][0, 0], s["C_A"][n, n]]) if "C_A" in s else jnp.zeros(2)
        return diverged_rows(e_tr, correlations=jnp.stack([rows * 0.0, rows]))[1]


def tau_prime(h, target: Target | None, tau) -> Array:
    """Effective noise of a k-index target in the lazy regimes [F.73]:

        tau'^2 = tau^2 + ||phi||^2 - ||grad phihat(0)||^2 / h'(0).

    The linear part of the target is learned in the first lazy regime (lz1); what remains acts
    as noise of variance tau'^2 afterwards. Pure noise (`target=None`): tau' = tau.
    """
    tau = jnp.asarray(tau, dtype=jnp.result_type(float))
    if target is None:
        return tau
    h = covariance(h)
    g = target.grad_phihat(jnp.zeros(target.k, tau.dtype))
    dh0 = h.d1(jnp.zeros((), tau.dtype))
    g2 = jnp.sum(g**2)
    lin = jnp.where(g2 == 0, 0.0, g2 / jnp.where(dh0 == 0, 1.0, dh0))
    return jnp.sqrt(tau**2 + target.norm2 - lin)


# ============================================================================ lz1 (closed form)
class Lz1Solution(eqx.Module):
    """First lazy regime (lz1), on rescaled times t (finite-m time t / m).

    **Fields:** `t` (N,); `C_d`, `C_o`, `R_o` (N, N) with X[n, l] = X^lz1(t_n, t_l) (R_o zero
    for l >= n); `v` (N, k) the rescaled overlap v^lz1; `e_tr`, `e_ts` (N,) (equal at leading
    order); `plateau` the t -> infinity error [F.59, 2.7].

    Finite-m predictions (a0 = gamma0 sqrt(m)): C_o(t/m, s/m) = C_o^lz1(t, s) / m,
    C_d(t/m, s/m) = 1 + C_d^lz1(t, s) / m, R_o(t/m, s/m) = R_o^lz1(t, s) / m,
    R_d(t/m, s/m) = 1 for s < t, v(t/m) = v^lz1(t) / sqrt(m), and e_tr(t/m), e_ts(t/m) -> e^lz1(t).
    With a target the weights also move by the common v^lz1(t) / sqrt(m) along U, so `C_o` here
    includes + v(t).v(s) and `C_d` includes - |v(t) - v(s)|^2 / 2 (both checked against the
    finite-m DMFT); the pure-noise parts are those of [F.5, F.6].
    """

    t: Array
    C_d: Array
    C_o: Array
    R_o: Array
    v: Array
    e_tr: Array
    e_ts: Array
    plateau: Array


def lz1(h, target: Target | None = None, *, tau, alpha, gamma0, t: ArrayLike) -> Lz1Solution:
    """Closed form of the first lazy regime (spec section 7, [F.5, F.6, F.13, F.55-F.59]).

    Time rescaling: `t` is m times the DMFT time (t_dmft = t / m). With r = alpha gamma0^2 h'(0):

        R_o^lz1(t, t') = theta(t - t') [exp(-r (t - t')) - 1]
        C_o^lz1(t, t)  = exp(-2 r t) - 1,  C_o^lz1(t, t') = -1 + exp(-r (t - t')) (C_o^lz1(t', t') + 1)
        C_d^lz1(t, t') = exp(-r (t + t')) - (exp(-2 r t) + exp(-2 r t')) / 2
                         (the spec's corrected form: the paper's extra "1 +" breaks C_d(t, t) = 1)
        v^lz1(t)       = v_inf (1 - exp(-r t)),  v_inf = grad phihat(0) / (gamma0 h'(0))   [F.55]
        e^lz1(t)       = (1/2)[tau^2 + ||phi||^2 - 2 gamma0 <grad phihat(0), v^lz1>
                               + gamma0^2 h(1) + gamma0^2 h'(0) (C_o^lz1(t, t) + |v^lz1|^2)]

    For pure noise e^lz1 is [F.13]; its limit is (tau^2 + gamma0^2 (h(1) - h'(0)))/2 and with a
    target (tau^2 + ||phi||^2 - |grad phihat(0)|^2 / h'(0) + gamma0^2 (h(1) - h'(0)))/2 [F.59, 2.7].
    """
    h = covariance(h)
    tau = _float("tau", tau, 0.0)
    alpha, gamma0 = _float("alpha", alpha, 0.0, True), _float("gamma0", gamma0)
    t = jnp.asarray(t, dtype=jnp.result_type(float, tau))
    target = Target.pure_noise() if target is None else target
    zero = jnp.zeros((), t.dtype)
    dh0, h1 = h.d1(zero), h(jnp.ones((), t.dtype))
    r = alpha * gamma0**2 * dh0
    tt, ss = t[:, None], t[None, :]
    lag = jnp.maximum(tt - ss, 0.0)
    c_eq = jnp.expm1(-2 * r * t)
    later = -1.0 + jnp.exp(-r * lag) * (c_eq[None, :] + 1.0)
    c_o = jnp.where(tt >= ss, later, later.T)
    c_d = jnp.exp(-r * (tt + ss)) - 0.5 * (jnp.exp(-2 * r * tt) + jnp.exp(-2 * r * ss))
    r_o = jnp.where(tt > ss, jnp.expm1(-r * lag), 0.0)
    g = target.grad_phihat(jnp.zeros(target.k, t.dtype))
    v_inf = g / (gamma0 * dh0)
    v = v_inf[None, :] * (-jnp.expm1(-r * t))[:, None]
    # The common displacement along U adds v(t).v(s) to m C_o, -|v(t) - v(s)|^2/2 to m (C_d - 1).
    c_o = c_o + v @ v.T
    c_d = c_d - 0.5 * jnp.sum((v[:, None, :] - v[None, :, :]) ** 2, axis=-1)
    err = 0.5 * (tau**2 + target.norm2 - 2 * gamma0 * v @ g + gamma0**2 * h1
                 + gamma0**2 * dh0 * (c_eq + jnp.sum(v**2, axis=-1)))
    plateau = 0.5 * (tau_prime(h, target, tau) ** 2 + gamma0**2 * (h1 - dh0))
    return Lz1Solution(t=t, C_d=c_d, C_o=c_o, R_o=r_o, v=v, e_tr=err, e_ts=err, plateau=plateau)


# ============================================================================ mf1 (closed form)
class Mf1Solution(eqx.Module):
    """First mean-field regime with pure noise (mf1), time t = the DMFT time.

    **Fields:** `t` (N,); `C_o`, `R_o` (N, N): C_o^mf1(t_n, t_l) (symmetric) and R_o^mf1
    (zero for l >= n); `a` (N,) = a0; `e_tr` (N,) = tau^2 / 2; `rho0` = alpha a0^2 h'(0).

    Finite-m predictions: m C_o(t, s) -> C_o^mf1, m R_o(t, s) -> R_o^mf1, C_d = 1 + O(1/m),
    a(t) = a0, R_A = delta, C_A = -tau^2, e_tr = tau^2 / 2 [G.1-G.8].
    """

    t: Array
    C_o: Array
    R_o: Array
    a: Array
    e_tr: Array
    rho0: Array


def mf1(h, *, tau, alpha, a0, t: ArrayLike) -> Mf1Solution:
    """Closed form of the first mean-field regime, pure noise (spec section 7, [G.1-G.8]).

    No time rescaling (t = the DMFT time); with rho0 = alpha a0^2 h'(0), for t >= t':

        R_o^mf1(t, t')  = theta(t - t') [exp(-rho0 (t - t')) - 1]
        C_o^mf1(t, t')  = [((tau^2 + rho0)/rho0) exp(-2 rho0 t') - (tau^2/rho0) exp(-rho0 t')]
                          exp(-rho0 (t - t')) + (tau^2 - rho0)/rho0 - (tau^2/rho0) exp(-rho0 t')

    the solution of d/dt C_o^mf1(t, t') = -rho0 (1 + C_o^mf1) + tau^2 (1 - exp(-rho0 t')).
    """
    h = covariance(h)
    tau = _float("tau", tau, 0.0)
    alpha, a0 = _float("alpha", alpha, 0.0, True), _float("a0", a0)
    t = jnp.asarray(t, dtype=jnp.result_type(float, tau))
    rho0 = alpha * a0**2 * h.d1(jnp.zeros((), t.dtype))
    tau2 = tau**2
    tt, ss = t[:, None], t[None, :]
    lag = jnp.abs(tt - ss)
    early = jnp.minimum(tt, ss)
    c_o = (((tau2 + rho0) / rho0 * jnp.exp(-2 * rho0 * early)
            - tau2 / rho0 * jnp.exp(-rho0 * early)) * jnp.exp(-rho0 * lag)
           + (tau2 - rho0) / rho0 - tau2 / rho0 * jnp.exp(-rho0 * early))
    r_o = jnp.where(tt > ss, jnp.expm1(-rho0 * jnp.maximum(tt - ss, 0.0)), 0.0)
    ones = jnp.ones_like(t)
    return Mf1Solution(t=t, C_o=c_o, R_o=r_o, a=a0 * ones, e_tr=0.5 * tau2 * ones, rho0=rho0)


# ============================================================================ lz2 (Volterra)
class Lz2Solution(eqx.Module):
    """Second lazy regime (lz2) on the DMFT's own time t = O(1).

    **Fields:** `t` (N+1,); `C_d`, `R_d`, `C_A`, `R_A` (N+1, N+1); `nu` (N+1,); `e_tr` (N+1,)
    = -C_A(t, t)/2; `e_ts` (N+1,) the flat test error (tau'^2 + gamma0^2 (h(1) - h'(0)))/2 [2.7].

    Finite-m predictions (a0 = gamma0 sqrt(m), alpha fixed): C_d, R_d, nu, e_tr at the same t;
    C_o = -C_d / m, R_o = -R_d / m at leading order (for t beyond the lz1 transient, t >> 1/m)
    [F.16-F.27]; with a target, the same with tau -> tau' [F.73].
    """

    t: Array
    C_d: Array
    R_d: Array
    C_A: Array
    R_A: Array
    nu: Array
    e_tr: Array
    e_ts: Array
    t_stored: Array
    result: Any = None
    stats: Any = None

    @property
    def diverged(self) -> Array:
        return jnp.any(diverged_rows(self.e_tr) & jnp.isfinite(self.t))


class Lz2(_Volterra):
    """The lazy second-regime DMFT (spec section 7, [F.16-F.27]), pure noise.

    Time: the DMFT time t = O(1) (no rescaling); second layer frozen at a = gamma0 sqrt(m) at
    leading order. With htilde(z) = h(z) - h'(0) z:

        Sigma_R = gamma0^2 htilde'(C_d) R_d,   Sigma_C = tau^2 + gamma0^2 htilde(C_d),  [C.19]
        M^R = alpha gamma0^2 [R_A htilde'(C_d) + C_A h''(C_d) R_d],  M^C = alpha gamma0^2 htilde'(C_d) C_A
        nu = -int_0^t [M^R C_d(t, s) + M^C R_d(t, s)] ds
        d/dt R_d(t, t') = delta(t - t') - nu R_d - int_t'^t M^R(t, s) R_d(s, t') ds
        d/dt C_d(t, t') = -nu C_d - int_0^t M^R(t, s) C_d(t', s) ds - int_0^t' M^C(t, s) R_d(t', s) ds
        e_tr = -C_A(t, t) / 2

    discretized as in spec section 6. (The gamma0^2 in front of the h'(0) subtraction is the
    one of [F.65]; [F.23] drops it, which finite-m DMFT rules out: see tests/test_reduced.py.)

    **Fields:** `h`; `tau` the noise, or tau' for a k-index target [F.73] (see `lz2_model`);
    `alpha` = n / (m d); `gamma0` = a0 / sqrt(m). Construct with `lz2_model`.
    """

    h: AbstractKernel
    tau: Array
    alpha: Array
    gamma0: Array

    _SYMMETRIC: ClassVar[tuple] = ("C",)
    _RESPONSES: ClassVar[tuple] = ("R",)
    _JUMPS: ClassVar[dict] = {"R": 1.0}

    def init(self, size: int):
        dtype = jnp.result_type(float, self.tau, self.alpha, self.gamma0)
        z, z1 = jnp.zeros((size, size), dtype), jnp.zeros((size,), dtype)
        return dict(C=z.at[0, 0].set(1.0), R=z, R_A=z, C_A=z, P_A=z, S_C=z, S_R=z,
                    nu=z1, sigma_jump=z1, ca_error=z1)

    def time_axes(self):
        return dict(C=2, R=2, R_A=2, C_A=2, P_A=2, S_C=2, S_R=2, nu=1, sigma_jump=1,
                    ca_error=1)

    def row(self, n, s, wts: RowWeights):
        ht, g2 = Linearless(self.h), self.gamma0**2
        size = s["nu"].shape[-1]
        past = jnp.arange(size) <= n
        c_n, r_n = s["C"][n], s["R"][n]
        one = jnp.ones((), c_n.dtype)                       # C_d(t, t) = 1, R_d(t^+, t) = 1
        dh = ht.d1(c_n)
        sigma_r = jnp.where(past, g2 * dh * r_n, 0.0)
        sigma_c = jnp.where(past, self.tau**2 + g2 * ht(c_n), 0.0)
        sigma_jump = s["sigma_jump"].at[n].set(g2 * ht.d1(one))
        r_jump = jnp.where(past, -sigma_jump, 0.0)
        bufs, r_row, c_row = response_rows(sigma_r, sigma_c, s, r_jump, n, wts,
                                           merged(s, "S_R"))
        ca_error = s["ca_error"].at[n].set(
            diagonal_error(sigma_r, sigma_c, r_row, c_row, r_jump, n, wts))
        w = self.alpha * g2
        m_r = w * (r_row * dh + c_row * d2_times(ht, c_n, r_n))
        m_c = w * c_row * dh
        m_delta = w * ht.d1(one)
        m_jump = w * (r_jump[n] * ht.d1(one) + c_row[n] * ht.d2(one))
        f_c = (-past_integral(wts, m_r, m_jump, s["C"], c_n, d=merged(s, "C")) - m_delta * c_n
               - transposed_integral(wts, m_c, s["R"], d=merged(s, "R")))
        nu = f_c[n]
        (c_front, c_tt), (d_c, d_tt) = scalar_front(c_n, f_c - nu * c_n, n)
        fronts, after = self._jumped(n, s, wts, self._JUMPS)
        d_r = (-(nu + m_delta) * fronts["R"]
               - response_integral(wts, m_r, m_jump, s["R"], r_n, n, d=merged(s, "R")))
        s = dict(s, **bufs, nu=s["nu"].at[n].set(nu),
                 sigma_jump=sigma_jump,
                 ca_error=ca_error)
        front = dict(C=c_front, C_eq=c_tt, R=fronts["R"])
        rate = dict(C=d_c, C_eq=d_tt, R=jnp.where(past, d_r, 0.0))
        k = (nu + m_delta).reshape(1, 1)                  # the instantaneous decay of C and R
        stiff = GroupStiff(keys=(("C",), ("R",), ("C_eq",)), K=(k, k, 2 * k))
        return self._row(s, front, rate, after, stiff)

    def records(self, n, s):
        return dict(nu=s["nu"][n], e_tr=-0.5 * s["C_A"][n, n])

    def solution(self, s, ts, records=None) -> Lz2Solution:
        if records is None:
            records = dict(t=ts, nu=s["nu"], e_tr=-0.5 * jnp.diagonal(s["C_A"]))
        e_ts = 0.5 * (self.tau**2 + self.gamma0**2 * Linearless(self.h)(jnp.ones((), s["C"].dtype)))
        return Lz2Solution(t=records["t"], C_d=s["C"], R_d=s["R"], C_A=s["C_A"], R_A=s["R_A"],
                           nu=records["nu"], e_tr=records["e_tr"],
                           e_ts=e_ts * jnp.ones_like(records["e_tr"]), t_stored=ts)


def lz2_model(h, target: Target | None = None, *, tau, alpha, gamma0) -> Lz2:
    """The lz2 model (`Lz2`) with validated parameters; a k-index `target` enters through
    tau' [F.73] (`tau_prime`). All numbers become traced arrays, so `jax.vmap` over a function
    building the model (e.g. over gamma0) compiles once."""
    h = check_kernel(covariance(h))
    tau = _float("tau", tau, 0.0)
    return Lz2(h=h, tau=tau_prime(h, target, tau), alpha=_float("alpha", alpha, 0.0, True),
               gamma0=_float("gamma0", gamma0))


# ============================================================================ mf2 (Volterra)
class Mf2Solution(eqx.Module):
    """Second mean-field regime (mf2), pure noise, rescaled time s = t_dmft / sqrt(m).

    **Fields:** `t` (N+1,) rescaled times; `a` (N+1,); `C_d`, `R_d` (N+1, N+1); `nu` (N+1,);
    `C_o` (N+1, N+1) the predicted C_o^mf2(t, t') = -C_d(t, t') + tau^2 / (alpha h'(0) a(t) a(t'))
    (see `Mf2`); `e_tr` (N+1,) = tau^2 / 2.

    Finite-m predictions at t_dmft = sqrt(m) t: a, C_d, R_d; m C_o -> C_o^mf2; m R_o = -R_d;
    sqrt(m) nu -> nu^mf2 [G.10-G.18].
    """

    t: Array
    a: Array
    C_d: Array
    R_d: Array
    nu: Array
    C_o: Array
    e_tr: Array
    t_stored: Array
    result: Any = None
    stats: Any = None

    @property
    def diverged(self) -> Array:
        return jnp.any(diverged_rows(self.e_tr, self.a, self.nu) & jnp.isfinite(self.t))


class Mf2(_Volterra):
    """The mean-field second-regime DMFT (spec section 7, [G.10-G.18]), pure noise.

    Time: t = t_dmft / sqrt(m) (finite-m time sqrt(m) t). With R_A = delta and C_A = -tau^2:

        d/dt C_d(t, t') = -nu C_d + alpha tau^2 a(t) int_0^t a(s) h''(C_d(t,s)) R_d(t,s) C_d(t',s) ds
                          + alpha tau^2 a(t) int_0^t' a(s) [h'(C_d(t,s)) - h'(0)] R_d(t',s) ds
        d/dt R_d(t, t') = delta(t - t') - nu R_d + alpha tau^2 a(t) int_t'^t a(s) h''(C_d(t,s)) R_d(t,s) R_d(s,t') ds
        nu = alpha tau^2 a(t) int_0^t a(s) [h''(C_d) R_d C_d + (h'(C_d) - h'(0)) R_d](t, s) ds
        da/dt = alpha tau^2 int_0^t a(s) [h'(C_d(t,s)) - h'(0)] R_d(t,s) ds

    (nu is the C_d equation at t' = t, which keeps C_d(t, t) = 1.) Corrections are O(1/sqrt(m)).
    The off-diagonal overlap follows from the quasi-static mf1 equilibrium of the mean weight
    vector: m C_o(t, t') = -C_d(t, t') + tau^2 / (alpha h'(0) a(t) a(t')); at equal times this is
    the spec's -C_d + tau^2 / (alpha h'(0) a(t)^2) [G.18], off the diagonal the symmetric
    a(t) a(t') is the form that matches finite-m DMFT (tests/test_reduced.py).

    **Fields:** `h`, `tau`, `alpha` = n / (m d), `a0` = a(0) = O(1). Construct with `mf2_model`.
    """

    h: AbstractKernel
    tau: Array
    alpha: Array
    a0: Array

    _SYMMETRIC: ClassVar[tuple] = ("C",)
    _RESPONSES: ClassVar[tuple] = ("R",)
    _JUMPS: ClassVar[dict] = {"R": 1.0}
    _ONE_TIME: ClassVar[tuple] = ("a",)

    def init(self, size: int):
        dtype = jnp.result_type(float, self.tau, self.alpha, self.a0)
        z, z1 = jnp.zeros((size, size), dtype), jnp.zeros((size,), dtype)
        return dict(a=z1.at[0].set(self.a0), C=z.at[0, 0].set(1.0), R=z, nu=z1)

    def time_axes(self):
        return dict(a=1, C=2, R=2, nu=1)

    def row(self, n, s, wts: RowWeights):
        h = self.h
        size = s["nu"].shape[-1]
        past = jnp.arange(size) <= n
        c_n, r_n, a = s["C"][n], s["R"][n], s["a"]
        one = jnp.ones((), c_n.dtype)
        w = jnp.where(past, self.alpha * self.tau**2 * a, 0.0)      # alpha tau^2 a(s)
        k2 = w * d2_times(h, c_n, r_n)                               # .. h''(C_d) R_d
        k2_jump = self.alpha * self.tau**2 * a[n] * h.d2(one)        # .. at s = t^-, R_d = 1
        k1 = w * Linearless(h).d1(c_n)                               # .. (h'(C_d) - h'(0))
        f_c = a[n] * (past_integral(wts, k2, k2_jump, s["C"], c_n, d=merged(s, "C"))
                      + transposed_integral(wts, k1, s["R"], d=merged(s, "R")))
        nu = f_c[n]
        (c_front, c_tt), (d_c, d_tt) = scalar_front(c_n, f_c - nu * c_n, n)
        fronts, after = self._jumped(n, s, wts, self._JUMPS)
        d_r = -nu * fronts["R"] + a[n] * response_integral(wts, k2, k2_jump, s["R"], r_n, n,
                                                           d=merged(s, "R"))
        d_a = jnp.dot(wts.w, k1 * r_n) + wts.upper * k1[n]
        s = dict(s, nu=s["nu"].at[n].set(nu))
        front = dict(a=a[n], C=c_front, C_eq=c_tt, R=fronts["R"])
        rate = dict(a=d_a, C=d_c, C_eq=d_tt, R=jnp.where(past, d_r, 0.0))
        k = nu.reshape(1, 1)
        stiff = GroupStiff(keys=(("C",), ("R",), ("C_eq",)), K=(k, k, 2 * k))
        return self._row(s, front, rate, after, stiff)

    def records(self, n, s):
        return dict(a=s["a"][n], nu=s["nu"][n])

    def divergence(self, n, s):
        return ~(jnp.isfinite(s["a"][n]) & (jnp.max(jnp.abs(s["C"][n])) <= 1.0 + 1e-6))

    def solution(self, s, ts, records=None) -> Mf2Solution:
        if records is None:
            records = dict(t=ts, a=s["a"], nu=s["nu"])
        a = s["a"]
        dh0 = self.h.d1(jnp.zeros((), a.dtype))
        c_o = -s["C"] + self.tau**2 / (self.alpha * dh0 * a[:, None] * a[None, :])
        return Mf2Solution(t=records["t"], a=records["a"], C_d=s["C"], R_d=s["R"],
                           nu=records["nu"], C_o=c_o,
                           e_tr=0.5 * self.tau**2 * jnp.ones_like(records["a"]), t_stored=ts)


def mf2_model(h, *, tau, alpha, a0) -> Mf2:
    """The mf2 model (`Mf2`) with validated parameters (traced arrays)."""
    h = check_kernel(covariance(h))
    return Mf2(h=h, tau=_float("tau", tau, 0.0), alpha=_float("alpha", alpha, 0.0, True),
               a0=_float("a0", a0))


# ============================================================================ H.2 (Volterra)
class H2Solution(eqx.Module):
    """Fixed a, alpha_bar fixed, m -> infinity (H.2), rescaled time t = t_dmft / m.

    **Fields:** `t` (N+1,); `C_d`, `C_o`, `R_d`, `R_o`, `C_A`, `R_A` (N+1, N+1); `nu` (N+1,);
    `e_tr` (N+1,) = -C_A(t, t)/2; `e_ts` (N+1,) = (tau^2 + a^2 h(C_o(t, t)))/2.

    Finite-m predictions (frozen a, n/d = alpha_bar) at t_dmft = m t: C_d, C_o, R_d, e_tr, e_ts;
    m R_o -> R_o; m nu -> nu [H.4-H.17].
    """

    t: Array
    C_d: Array
    C_o: Array
    R_d: Array
    R_o: Array
    C_A: Array
    R_A: Array
    nu: Array
    e_tr: Array
    e_ts: Array
    t_stored: Array
    result: Any = None
    stats: Any = None

    @property
    def diverged(self) -> Array:
        return jnp.any(diverged_rows(self.e_tr, self.e_ts) & jnp.isfinite(self.t))


class H2(_Volterra):
    """The DMFT at fixed second layer a and fixed alpha_bar = n / d as m -> infinity
    (spec section 7, "H.2", [H.4-H.17]), pure noise.

    Time: t = t_dmft / m, with R_o = R~_o / m and nu = nu~ / m (tildes dropped):

        Sigma_R = a^2 [h'(C_d) R_d + h'(C_o) R_o],   Sigma_C = tau^2 + a^2 h(C_o);  R_A, C_A [C.19]
        M^R_d = alpha_bar a^2 C_A h''(C_d) R_d,      M^C_d = alpha_bar a^2 C_A h'(C_d)
        M^R_o = alpha_bar a^2 [C_A h''(C_o) R_o + R_A h'(C_o)],  M^C_o = alpha_bar a^2 C_A h'(C_o)
        d/dt C_d(t,t') = -nu C_d - int_0^t [M^R_d C_d(t',s) + M^R_o C_o(t',s)] ds
                         - int_0^t' [M^C_d R_d(t',s) + M^C_o R_o(t',s)] ds
        d/dt C_o(t,t') = -nu C_o - int_0^t [M^R_d + M^R_o](t,s) C_o(t',s) ds
                         - int_0^t' M^C_o(t,s) [R_d(t',s) + R_o(t',s)] ds
        d/dt R_d(t,t') = delta(t-t') - nu R_d - int_t'^t M^R_d(t,s) R_d(s,t') ds
        d/dt R_o(t,t') = -nu R_o - int_t'^t [M^R_d R_o(s,t') + M^R_o R_d(s,t') + M^R_o R_o(s,t')] ds
        nu = the C_d equation at t' = t (keeps C_d(t, t) = 1);   e_tr = -C_A(t, t) / 2

    R_A carries the delta (1/dt on the grid diagonal), so M^R_o contains
    alpha_bar a^2 h'(C_o(t, t)) delta(t - s).

    **Fields:** `h`, `tau`, `alpha_bar` = n / d, `a` (the frozen second layer). Construct with
    `h2_model`.
    """

    h: AbstractKernel
    tau: Array
    alpha_bar: Array
    a: Array

    _SYMMETRIC: ClassVar[tuple] = ("C_d", "C_o")
    _RESPONSES: ClassVar[tuple] = ("R_d", "R_o")
    _JUMPS: ClassVar[dict] = {"R_d": 1.0, "R_o": 0.0}

    def init(self, size: int):
        dtype = jnp.result_type(float, self.tau, self.alpha_bar, self.a)
        z, z1 = jnp.zeros((size, size), dtype), jnp.zeros((size,), dtype)
        return dict(C_d=z.at[0, 0].set(1.0), C_o=z, R_d=z, R_o=z, R_A=z, C_A=z, P_A=z, S_C=z,
                    S_R=z, nu=z1, sigma_jump=z1, ca_error=z1)

    def time_axes(self):
        return dict(C_d=2, C_o=2, R_d=2, R_o=2, R_A=2, C_A=2, P_A=2, S_C=2, S_R=2, nu=1,
                    sigma_jump=1, ca_error=1)

    def row(self, n, s, wts: RowWeights):
        h, a2 = self.h, self.a**2
        size = s["nu"].shape[-1]
        past = jnp.arange(size) <= n
        Cd, Co, Rd, Ro = s["C_d"], s["C_o"], s["R_d"], s["R_o"]
        cd, co, rd, ro = Cd[n], Co[n], Rd[n], Ro[n]
        one, co_tt = jnp.ones((), cd.dtype), co[n]      # R_d(t^+, t) = 1, R_o(t^+, t) = 0
        sigma_r = jnp.where(past, a2 * (h.d1(cd) * rd + h.d1(co) * ro), 0.0)
        sigma_c = jnp.where(past, self.tau**2 + a2 * h(co), 0.0)
        sigma_jump = s["sigma_jump"].at[n].set(a2 * h.d1(one))
        r_jump = jnp.where(past, -sigma_jump, 0.0)
        bufs, r_row, c_row = response_rows(sigma_r, sigma_c, s, r_jump, n, wts,
                                           merged(s, "S_R"))
        ca_error = s["ca_error"].at[n].set(
            diagonal_error(sigma_r, sigma_c, r_row, c_row, r_jump, n, wts))
        w = self.alpha_bar * a2
        mr_d, mc_d = w * c_row * d2_times(h, cd, rd), w * c_row * h.d1(cd)
        mr_o = w * (c_row * d2_times(h, co, ro) + r_row * h.d1(co))
        mc_o = w * c_row * h.d1(co)
        delta_o = w * h.d1(co_tt)                                   # delta part of M^R_o
        jump_d = w * c_row[n] * h.d2(one)                           # M^R_d(t, t^-)
        jump_o = w * r_jump[n] * h.d1(co_tt)                        # M^R_o(t, t^-)
        d_cd, d_co, d_rd, d_ro = (merged(s, key) for key in ("C_d", "C_o", "R_d", "R_o"))
        f_d = (-past_integral(wts, mr_d, jump_d, Cd, cd, d=d_cd)
               - past_integral(wts, mr_o, jump_o, Co, co, d=d_co)
               - delta_o * co - transposed_integral(wts, mc_d, Rd, d=d_rd)
               - transposed_integral(wts, mc_o, Ro, jump=0.0, d=d_ro))
        f_o = (-past_integral(wts, mr_d + mr_o, jump_d + jump_o, Co, co, d=d_co) - delta_o * co
               - transposed_integral(wts, mc_o, Rd, d=d_rd)
               - transposed_integral(wts, mc_o, Ro, jump=0.0, d=d_ro))
        nu = f_d[n]
        (d_front, d_tt), (d_d, dd_tt) = scalar_front(cd, f_d - nu * cd, n)
        (o_front, o_tt), (d_o, do_tt) = scalar_front(co, f_o - nu * co, n)
        fronts, after = self._jumped(n, s, wts, self._JUMPS)
        fd, fo = fronts["R_d"], fronts["R_o"]
        rate_d = -nu * fd - response_integral(wts, mr_d, jump_d, Rd, rd, n, d=d_rd)
        rate_o = (-nu * fo - delta_o * (fd + fo)
                  - response_integral(wts, mr_d, jump_d, Ro, ro, n, jump=0.0, d=d_ro)
                  - response_integral(wts, mr_o, jump_o, Rd, rd, n, d=d_rd)
                  - response_integral(wts, mr_o, jump_o, Ro, ro, n, jump=0.0, d=d_ro))
        s = dict(s, **bufs, nu=s["nu"].at[n].set(nu),
                 sigma_jump=sigma_jump,
                 ca_error=ca_error)
        front = dict(C_d=d_front, C_d_eq=d_tt, C_o=o_front, C_o_eq=o_tt, R_d=fd, R_o=fo)
        rate = dict(C_d=d_d, C_d_eq=dd_tt, C_o=d_o, C_o_eq=do_tt,
                    R_d=jnp.where(past, rate_d, 0.0), R_o=jnp.where(past, rate_o, 0.0))
        # The instantaneous part: nu on every row and the delta of M^R_o, which couples
        # C_d to C_o and R_o to R_d.
        zero = jnp.zeros_like(nu)
        k_c = jnp.array([[nu, delta_o], [zero, nu + delta_o]])
        k_r = jnp.array([[nu, zero], [delta_o, nu + delta_o]])
        stiff = GroupStiff(keys=(("C_d", "C_o"), ("R_d", "R_o"), ("C_o_eq",)),
                           K=(k_c, k_r, 2 * (nu + delta_o).reshape(1, 1)))
        return self._row(s, front, rate, after, stiff)

    def records(self, n, s):
        return dict(nu=s["nu"][n], e_tr=-0.5 * s["C_A"][n, n], C_o_eq=s["C_o"][n, n])

    def solution(self, s, ts, records=None) -> H2Solution:
        if records is None:
            records = dict(t=ts, nu=s["nu"], e_tr=-0.5 * jnp.diagonal(s["C_A"]),
                           C_o_eq=jnp.diagonal(s["C_o"]))
        return H2Solution(t=records["t"], C_d=s["C_d"], C_o=s["C_o"], R_d=s["R_d"],
                          R_o=s["R_o"], C_A=s["C_A"], R_A=s["R_A"], nu=records["nu"],
                          e_tr=records["e_tr"],
                          e_ts=0.5 * (self.tau**2 + self.a**2 * self.h(records["C_o_eq"])),
                          t_stored=ts)


def h2_model(h, *, tau, alpha_bar, a) -> H2:
    """The H.2 model (`H2`) with validated parameters (traced arrays)."""
    h = check_kernel(covariance(h))
    return H2(h=h, tau=_float("tau", tau, 0.0), alpha_bar=_float("alpha_bar", alpha_bar, 0.0, True),
              a=_float("a", a))
