"""The symmetric DMFT solver: identities, closed forms, limits, convergence, batching.

Equation labels refer to docs/equations.md.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dmft_jax as dj
from dmft_jax._covariance import covariance, target
from dmft_jax._dmft import general_dmft, symmetric_dmft
from dmft_jax._integrate import integrate

from helpers import fig4, loglog_slope


def run(model, dt, steps, chunks=None, throw=True):
    return dj.solve(model, dj.TimeGrid(dt, steps), chunks=chunks, throw=throw)


@pytest.fixture(scope="module")
def single_index():
    h, tg, tau = fig4()
    model = symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=8, a0=1.0)
    return model, run(model, 0.05, 80)


def sigmas(sol, model):
    """Sigma_C, Sigma_R on the grid from the solution, by [C.42] (independent of the solver)."""
    m = model.m
    h, tg = model.h, model.target
    a, v = np.asarray(sol.a), np.asarray(sol.v)
    fit = a * np.asarray(tg.phihat(v))
    aa = a[:, None] * a[None, :]
    Cd, Co, Rd, Ro = (np.asarray(x) for x in (sol.C_d, sol.C_o, sol.R_d, sol.R_o))
    sig_c = (float(model.tau) ** 2 + float(tg.norm2) - fit[:, None] - fit[None, :]
             + aa * (np.asarray(h(Cd)) / m + (m - 1) / m * np.asarray(h(Co))))
    sig_r = aa * (np.asarray(h.d1(Cd)) * Rd / m + (m - 1) / m * np.asarray(h.d1(Co)) * Ro)
    return sig_c, sig_r


def test_initial_errors_equal_sigma_c(single_index):
    """At t = 0: e_tr = e_ts = Sigma_C(0, 0) / 2 (spec section 4, checks)."""
    model, sol = single_index
    m, h = model.m, model.h
    sig_c0 = 0.3**2 + float(model.target.norm2) + (float(h(1.0)) / m + (m - 1) / m * float(h(0.0)))
    assert sol.e_tr[0] == pytest.approx(sig_c0 / 2, rel=1e-14)
    assert sol.e_ts[0] == pytest.approx(sig_c0 / 2, rel=1e-14)


def test_structure_of_c_and_r(single_index):
    """C_d(t, t) = 1; R(t, s) = 0 for s >= t; R_d(t + dt, t) = 1, R_o(t + dt, t) = 0;
    C symmetric in its two times."""
    _, sol = single_index
    n = sol.t.shape[0]
    idx = np.arange(n)
    assert np.all(np.asarray(sol.C_d)[idx, idx] == 1.0)
    for r in (sol.R_d, sol.R_o):
        assert np.all(np.triu(np.asarray(r)) == 0.0)
    assert np.all(np.asarray(sol.R_d)[idx[1:], idx[:-1]] == 1.0)
    assert np.all(np.asarray(sol.R_o)[idx[1:], idx[:-1]] == 0.0)
    for c in (sol.C_d, sol.C_o):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(c).T)


def test_train_error_identity(single_index):
    """e_tr = -C_A(t,t)/2 = (1/2) int_0^t [R_A Sigma_C + C_A Sigma_R] ds ([C.24], the identity),
    and R_A, C_A solve [D.5, D.6] in matrix form."""
    model, sol = single_index
    dt = 0.05
    sig_c, sig_r = sigmas(sol, model)
    # sol.R_A is the regular part; under Euler the delta is 1/dt on the diagonal [D.5]
    r_a = np.asarray(sol.R_A) + np.eye(len(sol.t)) / dt
    c_a = np.asarray(sol.C_A)
    integrand = np.tril(r_a * sig_c + c_a * sig_r)
    np.testing.assert_allclose(0.5 * dt * integrand.sum(axis=1), sol.e_tr, rtol=1e-11)
    lhs = np.eye(len(sol.t)) + dt * np.tril(sig_r, -1)
    np.testing.assert_allclose(r_a, np.linalg.inv(lhs) / dt, atol=1e-9)
    inv = np.linalg.inv(lhs)
    np.testing.assert_allclose(c_a, -inv @ sig_c @ inv.T, atol=1e-9)


def test_errors_are_sensible(single_index):
    model, sol = single_index
    assert np.all(np.asarray(sol.e_tr) >= 0)
    assert np.all(np.asarray(sol.e_ts) >= 0.3**2 / 2 - 1e-12)
    assert not bool(sol.diverged)


def lz1_train_error(t, gamma0, alpha, h, tau):
    """[F.6] with C_o^lz1(t,t) = exp(-2 r t) - 1, r = alpha gamma0^2 h'(0)."""
    r = alpha * gamma0**2 * float(h.d1(0.0))
    c_o = np.exp(-2 * r * t) - 1
    return 0.5 * (tau**2 + gamma0**2 * float(h(1.0)) + gamma0**2 * float(h.d1(0.0)) * c_o)


def test_lazy_first_regime_closed_form():
    """Lazy init, pure noise, t = tau_hat / m: e_tr -> e_tr^lz1 [F.6] and m C_o(t,t) ->
    exp(-2 r tau_hat) - 1 [F.5] as m grows (errors decrease ~ 1/m)."""
    h, _, _ = fig4()
    tau, alpha, gamma0, t_hat, steps = 0.3, 0.3, 1.0, 4.0, 160
    errs_e, errs_c = [], []
    for m in (10, 40, 160):
        model = symmetric_dmft(h, None, tau=tau, alpha=alpha, m=m, gamma0=gamma0, freeze_a=True)
        sol = run(model, t_hat / m / steps, steps)
        th = np.asarray(sol.t) * m
        idx = np.arange(steps + 1)
        r = alpha * gamma0**2 * float(h.d1(0.0))
        errs_e.append(np.max(np.abs(np.asarray(sol.e_tr) - lz1_train_error(th, gamma0, alpha, h, tau))))
        errs_c.append(np.max(np.abs(m * np.asarray(sol.C_o)[idx, idx] - (np.exp(-2 * r * th) - 1))))
    print("lz1 e_tr errors at m = 10, 40, 160:", errs_e, "; m C_o errors:", errs_c)
    assert errs_e[0] > errs_e[1] > errs_e[2]
    assert errs_c[0] > errs_c[1] > errs_c[2]
    assert loglog_slope([10, 40, 160], errs_e) < -0.7
    assert errs_e[-1] < 0.01


def mf1_c_o(t, tp, rho0, tau):
    """C_o^mf1(t, t') for t >= t' [G.6] (spec section 7)."""
    decay = np.exp(-rho0 * (t - tp))
    return (((tau**2 + rho0) / rho0) * np.exp(-2 * rho0 * tp) - (tau**2 / rho0) * np.exp(-rho0 * tp)) \
        * decay + (tau**2 - rho0) / rho0 - (tau**2 / rho0) * np.exp(-rho0 * tp)


def test_mean_field_pure_noise_closed_form():
    """Mean-field init, pure noise: m C_o(t, t') -> C_o^mf1 and m R_o -> exp(-rho0 (t-s)) - 1
    [G.1-G.8]. The spec quotes m C_o(10, 3) = -0.314, -0.290, -0.282 at m = 20, 80, 320."""
    h, _, _ = fig4()
    tau, alpha, a0, dt, steps = 0.6, 0.3, 1.0, 0.025, 400
    rho0 = alpha * a0**2 * float(h.d1(0.0))
    t = np.arange(steps + 1) * dt
    tt, ss = np.meshgrid(t, t, indexing="ij")
    lower = tt >= ss
    errs, r_errs, quoted = [], [], []
    for m in (20, 80, 320):
        sol = run(symmetric_dmft(h, None, tau=tau, alpha=alpha, m=m, a0=a0), dt, steps, chunks=1)
        mco = m * np.asarray(sol.C_o)
        quoted.append(mco[400, 120])
        closed = mf1_c_o(tt, ss, rho0, tau)
        errs.append(np.max(np.abs(mco - closed)[lower]))
        r_closed = np.where(tt > ss, np.exp(-rho0 * (tt - ss)) - 1, 0.0)
        r_errs.append(np.max(np.abs(m * np.asarray(sol.R_o) - r_closed)))
    print("m C_o(10, 3):", quoted, "closed form:", mf1_c_o(10.0, 3.0, rho0, tau),
          "max errors C_o:", errs, "R_o:", r_errs)
    np.testing.assert_allclose(quoted, [-0.314, -0.290, -0.282], atol=1.5e-3)
    assert errs[0] > errs[1] > errs[2]
    assert r_errs[0] > r_errs[1] > r_errs[2] and r_errs[2] < 0.03


def mean_field_ode(h_coeffs, tau, alpha, a0, t_max, steps=20000):
    """[G.44] for k = 1, phihat = h (Taylor coefficients `h_coeffs`), by RK4 on a fine grid in
    NumPy (independent of the library); returns t, a, v."""
    from numpy.polynomial import polynomial as P
    c = np.asarray(h_coeffs, dtype=float)
    dc = P.polyder(c)

    def f(y):
        a, v = y
        dv = alpha * a * (1 - v**2) * (P.polyval(v, dc) - a * P.polyval(v * v, dc) * v)
        da = alpha * (P.polyval(v, c) - a * P.polyval(v * v, c))
        return np.array([da, dv])
    dt = t_max / steps
    ys = [np.array([a0, 0.0])]
    for _ in range(steps):
        y = ys[-1]
        k1 = f(y); k2 = f(y + dt / 2 * k1); k3 = f(y + dt / 2 * k2); k4 = f(y + dt * k3)
        ys.append(y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
    ys = np.array(ys)
    return np.linspace(0, t_max, steps + 1), ys[:, 0], ys[:, 1]


def test_approach_to_mean_field_ode():
    """Mean-field init, t = O(1): a(t), v(t) approach the mean-field ODE [G.44] with an error
    that shrinks roughly like 1/m (plus the O(dt) discretization error, kept small here)."""
    h, tg, tau = fig4()
    alpha, a0, t_max, steps = 0.3, 1.0, 3.0, 200
    t_ode, a_ode, v_ode = mean_field_ode([0.0, 0.9, 0.0, 1.0 / 6.0], tau, alpha, a0, t_max, steps=6000)
    ms, errs = (8, 32, 128), []
    for m in ms:
        sol = run(symmetric_dmft(h, tg, tau=tau, alpha=alpha, m=m, a0=a0), t_max / steps, steps)
        a_ref = np.interp(np.asarray(sol.t), t_ode, a_ode)
        v_ref = np.interp(np.asarray(sol.t), t_ode, v_ode)
        errs.append(max(np.max(np.abs(np.asarray(sol.a) - a_ref)),
                        np.max(np.abs(np.asarray(sol.v)[:, 0] - v_ref))))
    slope = loglog_slope(ms, errs)
    print("mean-field ODE errors at m =", ms, ":", errs, "slope", slope)
    assert errs[0] > errs[1] > errs[2]
    assert -1.4 < slope < -0.6


def test_first_order_in_dt():
    """The scheme is first order [D.8]: log-log slope of the error against dt is ~1."""
    h, tg, tau = fig4()
    model = symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=8, a0=1.0)
    t_max = 1.0
    ref = run(model, t_max / 480, 480, chunks=1)
    dts, errs = [t_max / 15, t_max / 30, t_max / 60, t_max / 120], []
    for dt in dts:
        # one compilation for all four (dt is traced): 120 steps, read at t = 1
        n = round(t_max / dt)
        sol = run(model, dt, 120)
        errs.append(max(abs(float(sol.e_tr[n] - ref.e_tr[-1])), abs(float(sol.a[n] - ref.a[-1]))))
    # Richardson: the reference carries an error dt_ref / dt of each; correct for it.
    errs = [e / (1 - (t_max / 480) / dt) for e, dt in zip(errs, dts)]
    slope = loglog_slope(dts, errs)
    print("errors", errs, "slope", slope)
    assert 0.85 < slope < 1.15


def test_frozen_second_layer_and_pure_noise():
    h, tg, tau = fig4()
    sol = run(symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=8, a0=1.3, freeze_a=True), 0.05, 60)
    np.testing.assert_array_equal(np.asarray(sol.a), 1.3)
    assert float(sol.v[-1, 0]) > 0.1  # the first layer still learns the direction
    noise = run(symmetric_dmft(h, None, tau=tau, alpha=0.3, m=8, a0=1.0), 0.05, 60)
    np.testing.assert_array_equal(np.asarray(noise.v), 0.0)
    # Pure noise: the test error is tau^2/2 + (1/2) E f^2 >= tau^2/2, train error falls below.
    assert float(noise.e_tr[-1]) < 0.3**2 / 2 < float(noise.e_ts[-1])


def test_k_index_target():
    """k = 2 with identical directions: v_1 = v_2 by symmetry, errors as for the sum target."""
    h, _, tau = fig4()
    tg2 = target("same", [0.0, 0.9, 0.0, 1.0 / 6.0], k=2)
    sol = run(symmetric_dmft(h, tg2, tau=tau, alpha=0.3, m=6, a0=1.0), 0.05, 40)
    assert sol.v.shape == (41, 2)
    np.testing.assert_allclose(np.asarray(sol.v[:, 0]), np.asarray(sol.v[:, 1]), rtol=1e-13)
    assert float(sol.e_ts[0]) == pytest.approx(0.5 * (tau**2 + 2 * float(h(1.0)) +
                                                      (float(h(1.0)) / 6)), rel=1e-13)


def test_general_equals_symmetric_on_symmetric_init():
    h, tg, tau = fig4()
    sym = run(symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=3, a0=0.8), 0.05, 40)
    gen = run(general_dmft(h, tg, tau=tau, alpha=0.3, a=np.full(3, 0.8), C=np.eye(3)), 0.05, 40)
    np.testing.assert_allclose(gen.e_tr, sym.e_tr, rtol=1e-12)
    np.testing.assert_allclose(gen.C[0, 0], sym.C_d, atol=1e-13)
    np.testing.assert_allclose(gen.C[1, 2], sym.C_o, atol=1e-13)
    np.testing.assert_allclose(gen.R[2, 0], sym.R_o, atol=1e-13)
    np.testing.assert_allclose(gen.a[:, 1], sym.a, rtol=1e-13)


def test_chunked_loop_equals_single_loop():
    h, tg, tau = fig4()
    model = symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=8, a0=1.0)
    one, four = run(model, 0.02, 120, chunks=1), run(model, 0.02, 120, chunks=4)
    for x, y in ((one.e_tr, four.e_tr), (one.C_o, four.C_o), (one.R_d, four.R_d), (one.a, four.a)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-14)


def test_vmap_equals_loop_over_physical_parameters():
    """vmap over (a0, tau, alpha, h coefficient) equals a Python loop."""
    h_c = jnp.array([0.0, 0.9, 0.0, 1.0 / 6.0])
    grid = dj.TimeGrid(0.05, 30)

    def e_tr(a0, tau, alpha, c3):
        c = h_c.at[3].set(c3)
        model = symmetric_dmft(dj.Polynomial(c), dj.Target(dj.Polynomial(c), jnp.sum(c)),
                               tau=tau, alpha=alpha, m=5, a0=a0)
        return integrate(model, grid).e_tr

    params = [jnp.array([0.7, 1.0, 1.4]), jnp.array([0.2, 0.3, 0.5]),
              jnp.array([0.25, 0.3, 0.4]), jnp.array([0.1, 1 / 6, 0.3])]
    batched = jax.jit(jax.vmap(e_tr))(*params)
    one = jax.jit(e_tr)                          # one compilation, called three times
    looped = jnp.stack([one(*(p[i] for p in params)) for i in range(3)])
    np.testing.assert_allclose(batched, looped, rtol=1e-12)


def test_no_recompilation_for_new_parameter_values():
    traces = []

    @eqx.filter_jit
    def e_tr(model, grid):
        traces.append(1)
        return integrate(model, grid).e_tr

    h, tg, tau = fig4()
    e_tr(symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=4, a0=1.0), dj.TimeGrid(0.05, 20))
    e_tr(symmetric_dmft(covariance([0.0, 0.8, 0.0, 0.2]), tg, tau=0.5, alpha=0.2, m=4, a0=2.0),
         dj.TimeGrid(0.03, 20))
    assert len(traces) == 1


def test_history_memory_is_quadratic():
    """Compile-only guard: temporary memory grows like N^2 (in-place row writes), not N^3."""
    h, tg, tau = fig4()
    model = symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=4, a0=1.0)
    params, static = eqx.partition(model, eqx.is_array)

    def temp(steps):
        f = jax.jit(lambda p: integrate(eqx.combine(p, static), dj.TimeGrid(0.05, steps),
                                        chunks=1).e_tr)
        mem = f.lower(params).compile().memory_analysis()
        return mem.temp_size_in_bytes + mem.output_size_in_bytes

    small, large = temp(100), temp(200)
    assert 2.5 < large / small < 5.0, (small, large)


def test_constructors_reject_bad_input():
    h, tg, tau = fig4()
    with pytest.raises(ValueError, match="m must be"):
        symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=0, a0=1.0)
    with pytest.raises(ValueError, match="alpha"):
        symmetric_dmft(h, tg, tau=tau, alpha=-0.1, m=2, a0=1.0)
    with pytest.raises(ValueError, match="tau"):
        symmetric_dmft(h, tg, tau=-1.0, alpha=0.3, m=2, a0=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=2)
    with pytest.raises(ValueError, match="infinite"):
        symmetric_dmft(covariance("relu"), None, tau=tau, alpha=0.3, m=2, a0=1.0)
    with pytest.raises(ValueError, match="dt"):
        dj.TimeGrid(0.0, 10)
    with pytest.raises(ValueError, match="positive semidefinite"):
        general_dmft(h, tg, tau=tau, alpha=0.3, a=np.ones(2), C=np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_divergence_is_reported():
    """A step far beyond the stability bound of spec section 6 is flagged, with its time, as
    `RESULTS.diverged` (read with throw=False; raised by default)."""
    h, tg, tau = fig4()
    model = symmetric_dmft(h, tg, tau=tau, alpha=0.3, m=16, gamma0=3.0)
    sol = run(model, 0.5, 60, throw=False)
    assert bool(sol.diverged) and bool(sol.result == dj.RESULTS.diverged)
    assert 0 < float(sol.divergence_time) <= 30.0
    with pytest.raises(Exception, match="diverged"):
        run(model, 0.5, 60)
