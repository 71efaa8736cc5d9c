"""The non-Gaussian DMFT (dmft_jax._nongaussian; spec nongaussian.md): the exact linear-sigma
identity with the Gaussian DMFT (spec 6.2), and that this check fails when a convention is
broken (N4), the exact identities at t = 0, C_ii(t, t) = 1, |nu_K2 - nu_W5| within error,
common random numbers, and bad input.

Small: m = 2, 20 Euler steps of dt = 0.1, 4000 draws in 8 replicas.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dmft_jax as dj
from dmft_jax._dmft import DMFT
from dmft_jax._nongaussian import _SumOver

M, DT, STEPS, DRAWS, GROUPS = 2, 0.1, 20, 4000, 8
A0 = np.array([1.2, 0.6])
TAU, ABAR = 0.3, 2.0
S1, F1 = 0.8, 0.7                      # linear sigma(z) = S1 z, target phi(z) = F1 z
V0 = np.array([[0.3], [-0.2]])
QUAD = [0.0, 0.6, 0.4]                 # h = 0.6 q + 0.4 q^2 (spec N14, 7.8)
GRID = dj.TimeGrid(DT, STEPS)
# Pure noise written as the zero target, in the pytree shapes of the linear target, so that all
# solves share one compilation (the phi=None path gives the same draws and labels:
# test_pure_noise_is_the_zero_target).
ZERO_TARGET = dj.Target((dj.Polynomial([0.0, 0.0, 0.0]),), 0.0)
ZERO_PHI = _SumOver(dj.hermite_activation([0.0, 0.0, 0.0]))


def _linear_phi(r0):
    return F1 * r0[..., 0]


def _linear_case(target: bool):
    """sigma = S1 He_1, phi = F1 He_1, written as degree-2 Hermite series: the same pytree
    shapes as the quadratic case, so that the solves share one compilation."""
    sigma, h = dj.hermite_activation([0.0, S1, 0.0]), dj.Polynomial([0.0, S1**2, 0.0])
    if not target:
        return dict(sigma=sigma, phi=ZERO_PHI, h=h, tg=ZERO_TARGET, v=None,
                    gauss_tg=ZERO_TARGET)
    return dict(sigma=sigma, phi=_SumOver(dj.hermite_activation([0.0, F1, 0.0])), h=h,
                tg=dj.target([0.0, S1 * F1, 0.0], [0.0, S1**2, 0.0]), v=V0,
                gauss_tg=dj.target([0.0, S1 * F1, 0.0], [0.0, S1**2, 0.0]))


def _ng(case, key=0, **kw):
    model = dj.nongaussian_dmft(case["sigma"], case["phi"], h=case["h"], target=case["tg"],
                                tau=TAU, a=A0, v=case["v"], alpha_bar=ABAR, draws=DRAWS,
                                key=key, groups=GROUPS, **kw)
    return dj.solve(model, GRID)


@functools.lru_cache(maxsize=None)
def linear(target: bool):
    case = _linear_case(target)
    gauss = dj.solve(dj.general_dmft(case["h"], case["gauss_tg"], tau=TAU, a=A0, C=np.eye(M),
                                     v=case["v"], alpha_bar=ABAR), GRID)
    return _ng(case), gauss


@functools.lru_cache(maxsize=None)
def quadratic(key=0):
    """Pure noise with h = 0.6 q + 0.4 q^2 (the same pytree shapes as the linear cases: one
    compilation)."""
    return dj.solve(dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, tau=TAU, a=A0,
                                        alpha_bar=ABAR, draws=DRAWS, key=key, groups=GROUPS),
                    GRID)


def zscores(ng, gauss, name):
    """(non-Gaussian - Gaussian) / standard error, at t > 0 (t = 0 is the shared initial
    condition or exact for both), entries with a standard error above rounding."""
    x, se, y = (np.asarray(getattr(ng, name))[1:], np.asarray(getattr(ng, name + "_se"))[1:],
                np.asarray(getattr(gauss, name))[1:])
    keep = se > 1e-12
    assert keep.mean() > 0.5, f"{name}: standard errors vanish"
    return np.abs(x - y)[keep] / se[keep]


OBSERVABLES = ("a", "e_tr", "C_t0", "nu")


@pytest.mark.parametrize("target", [False, True], ids=["pure_noise", "linear_target"])
def test_linear_sigma_equals_gaussian_dmft(target):
    """Spec 6.2: for sigma(z) = s1 z the non-Gaussian DMFT is the Gaussian DMFT with
    h(q) = s1^2 q (same grid, Euler), exactly in expectation: within a few standard errors
    for a, e_tr, C(t, 0), nu (and v with a target), at every time."""
    ng, gauss = linear(target)
    assert ng.result == dj.RESULTS.successful
    names = OBSERVABLES + (("v",) if target else ())
    for name in names:
        z = zscores(ng, gauss, name)
        assert z.max() < 4.5, (name, z.max())
    # and the errors are small in absolute terms (the test has power)
    assert np.max(np.asarray(ng.e_tr_se)) < 0.02
    assert np.max(np.abs(np.asarray(ng.e_tr - gauss.e_tr))) < 0.02
    # the clipping of the Euler covariance (spec 7.5) is reported, and small here
    clipped = np.asarray(ng.clipped)
    assert np.all(np.isfinite(clipped)) and np.all(clipped >= 0) and clipped.max() < 0.05


class _GaussianWithoutN4(DMFT):
    """The Gaussian DMFT with its noise covariance divided by alpha_bar: the mismatch that
    the printed K.8 (N4 not applied) makes between the two theories."""

    def _kernels(self, n, s, wts, ends=None):
        s, kern = super()._kernels(n, s, wts, ends)
        return s, kern._replace(noise=kern.noise / self.alpha_bar)


def test_linear_identity_detects_a_broken_convention():
    """The identity test has power: against a Gaussian DMFT whose noise covariance lacks the
    factor alpha_bar (the N4 misreading of K.8, applied on the side that compiles faster), the
    same comparison is many standard errors off. (The same break on the non-Gaussian side,
    and the force sign, N3 and M^delta breaks: docs/nongaussian.md section 4.)"""
    ng, _ = linear(True)
    case = _linear_case(True)
    good = dj.general_dmft(case["h"], case["gauss_tg"], tau=TAU, a=A0, C=np.eye(M), v=V0,
                           alpha_bar=ABAR)
    fields = [f.name for f in dataclasses.fields(good) if f.init]
    bad = dj.solve(_GaussianWithoutN4(**{f: getattr(good, f) for f in fields}), GRID)
    worst = max(zscores(ng, bad, name).max() for name in OBSERVABLES + ("v",))
    assert worst > 10, worst


def test_identities_nonlinear():
    """h = 0.6 q + 0.4 q^2, pure noise: C_ii(t, t) = 1; e_tr(0) = e_ts(0) within error
    (r(0) = xi(0) is Gaussian); nu_i(0) = -(alpha_bar/m^2) a_i^2 h'(1) within error (spec N14);
    |nu_K2 - nu_W5| within a few standard errors at all times (spec N14, 4.4)."""
    sol = quadratic(0)
    assert sol.result == dj.RESULTS.successful
    c_tt = np.asarray(sol.C_tt)
    np.testing.assert_allclose(c_tt[:, [0, 1], [0, 1]], 1.0, atol=1e-12)
    assert abs(float(sol.e_tr[0] - sol.e_ts[0])) < 4 * float(sol.e_tr_se[0])
    assert float(sol.e_ts_se[0]) < 1e-12          # deterministic at t = 0
    nu0 = -(ABAR / M**2) * A0**2 * (0.6 + 2 * 0.4)
    assert np.all(np.abs(np.asarray(sol.nu[0]) - nu0) < 4 * np.asarray(sol.nu_se[0]))
    diff = np.abs(np.asarray(sol.nu_k2 - sol.nu))
    se = np.hypot(np.asarray(sol.nu_k2_se), np.asarray(sol.nu_se))
    assert np.all(diff < 4 * se + 1e-3), (diff / se).max()
    assert np.max(diff) < 0.1 * np.max(np.abs(np.asarray(sol.nu)))
    # it learns, and its answer is not the Gaussian DMFT's (same h, same grid): for a nonlinear
    # sigma the two theories differ by many standard errors (measured: 18 in e_tr, 21 in C(t, 0))
    assert float(sol.e_tr[-1]) < 0.5 * float(sol.e_tr[0])
    gauss = dj.solve(dj.general_dmft(QUAD, ZERO_TARGET, tau=TAU, a=A0, C=np.eye(M),
                                     alpha_bar=ABAR), GRID)
    assert zscores(sol, gauss, "e_tr").max() > 5
    assert zscores(sol, gauss, "C_t0").max() > 5
    for name in ("clipped", "sampling_mismatch", "stiff_fraction", "stiffness"):
        x = np.asarray(getattr(sol, name))
        assert x.shape == (STEPS + 1,) and np.all(np.isfinite(x)) and np.all(x >= 0), name


def _assert_within_error(sol, other, names=("e_tr", "a", "C_t0"), z=4.5):
    """Two independent Monte Carlo solves agree within z combined standard errors at t > 0."""
    for name in names:
        x, y = np.asarray(getattr(sol, name))[1:], np.asarray(getattr(other, name))[1:]
        se = np.hypot(np.asarray(getattr(sol, name + "_se"))[1:],
                      np.asarray(getattr(other, name + "_se"))[1:])
        assert np.all(np.abs(x - y) <= z * se + 1e-12), (name, (np.abs(x - y) / se).max())


def test_common_random_numbers():
    """The same key gives the identical result; another key a different one, within error."""
    first = quadratic(0)
    again = dj.solve(dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, tau=TAU, a=A0,
                                         alpha_bar=ABAR, draws=DRAWS,
                                         key=jax.random.PRNGKey(0), groups=GROUPS), GRID)
    for name in ("e_tr", "a", "nu", "C"):
        np.testing.assert_array_equal(np.asarray(getattr(first, name)),
                                      np.asarray(getattr(again, name)))
    other = quadratic(1)
    assert not np.allclose(np.asarray(first.e_tr), np.asarray(other.e_tr))
    _assert_within_error(first, other)


@pytest.mark.gpu  # heavy tier (CI time under load on the 2-core CPU)
def test_replicas_one_group_after_another_give_the_same_result():
    """`replica_batch` (replicas solved b at a time, `NonGaussianDMFT.run_fixed`) draws the same
    paths for every replica as the vmapped pass (common random numbers across the groups), so
    every observable and diagnostic is equal up to round-off; bad values raise."""
    whole = quadratic(0)
    kw = dict(tau=TAU, a=A0, alpha_bar=ABAR, draws=DRAWS, key=0, groups=GROUPS)
    part = dj.solve(dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, replica_batch=2,
                                        **kw), GRID)
    for name in ("a", "e_tr", "e_ts", "C", "a_se", "e_tr_se", "nu_k2", "clipped", "stiffness",
                 "stein_C0"):
        np.testing.assert_allclose(np.asarray(getattr(part, name)),
                                   np.asarray(getattr(whole, name)), rtol=0, atol=1e-12,
                                   err_msg=name)
    # the same with path-wise sampling (its couplings are drawn for all groups and sliced)
    kw_paths = dict(kw, paths=True)
    solves = [dj.solve(dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, replica_batch=b,
                                           **kw_paths), GRID) for b in (None, 2)]
    for name in ("a", "e_tr", "e_ts", "C", "a_se", "nu_k2"):
        np.testing.assert_allclose(np.asarray(getattr(solves[1], name)),
                                   np.asarray(getattr(solves[0], name)), rtol=0, atol=1e-12,
                                   err_msg=name)
    for bad in (0, 3, 1.5):
        with pytest.raises(ValueError, match="replica_batch"):
            dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, replica_batch=bad, **kw)


def test_antithetic_and_exchangeable():
    """The variance-reduction options (traced fields: the same compilation) under a symmetric
    initialization a_i(0) = 1.2: `exchangeable` keeps the neurons exactly exchangeable
    (a_1 = a_2, C_11 = C_22) and both options agree with the plain solve within error."""
    kw = dict(tau=TAU, a=[1.2, 1.2], alpha_bar=ABAR, draws=DRAWS, key=0, groups=GROUPS)
    plain, anti, exch = (
        dj.solve(dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, **kw, **opt), GRID)
        for opt in ({}, dict(antithetic=True), dict(exchangeable=True)))
    a, c_t0 = np.asarray(exch.a), np.asarray(exch.C_t0)
    np.testing.assert_allclose(a[:, 0], a[:, 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(c_t0[:, 0, 0], c_t0[:, 1, 1], rtol=0, atol=1e-12)
    assert not np.allclose(np.asarray(plain.a)[:, 0], np.asarray(plain.a)[:, 1])
    for sol in (anti, exch):
        assert sol.result == dj.RESULTS.successful
        assert not np.allclose(np.asarray(sol.e_tr), np.asarray(plain.e_tr))
        _assert_within_error(sol, plain)


def test_pure_noise_is_the_zero_target():
    """phi=None (pure noise) draws the same paths and labels y = eps, with grad phi = 0, as the
    zero target used by the solves above; everything after the draws is the same code."""
    kw = dict(tau=TAU, a=A0, alpha_bar=ABAR, draws=16, key=3, groups=2)
    none = dj.nongaussian_dmft(QUAD, None, **kw).draws_of(4)
    zero = dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, **kw).draws_of(4)
    assert none.keys() == zero.keys() == {"z", "r0", "y", "dphi"}
    for key in none:
        np.testing.assert_array_equal(np.asarray(none[key]), np.asarray(zero[key]), err_msg=key)
    assert np.all(np.asarray(none["dphi"]) == 0) and np.any(np.asarray(none["y"]) != 0)


def _kw(**over):
    kw = dict(tau=TAU, a=A0, alpha_bar=ABAR, draws=DRAWS, key=0, groups=GROUPS)
    kw.update(over)
    return kw


@pytest.mark.parametrize("bad, match", [
    (dict(draws=4001), "multiple"),
    (dict(groups=1), "groups"),
    (dict(draws=8, groups=8, antithetic=True), "multiple"),
    (dict(alpha=1.0), "exactly one"),
    (dict(alpha_bar=-1.0), "alpha_bar"),
    (dict(tau=-0.1), "tau"),
    (dict(a=[1.0, 2.0], C=[[1.0, 0.5], [0.4, 1.0]]), "symmetric"),
    (dict(a=[1.0, 2.0], C=[[1.0, 2.0], [2.0, 1.0]]), "positive semidefinite"),
    (dict(key=None), "key"),
    (dict(key=jnp.zeros(3)), "key"),
    (dict(v=[[0.5], [0.1]]), "pure noise"),
    (dict(rtol=0.0), "rtol"),
    (dict(exchangeable=True), "symmetric initialization"),
])
def test_bad_input_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        dj.nongaussian_dmft(QUAD, None, **_kw(**bad))


def test_bad_functions_raise():
    sigma, h = dj.linear_activation(1.0)
    with pytest.raises(ValueError, match="needs `target`"):
        dj.nongaussian_dmft(sigma, _linear_phi, h=h, **_kw())
    with pytest.raises(ValueError, match="give h"):
        dj.nongaussian_dmft(lambda x: x, None, **_kw())
    with pytest.raises(ValueError, match="pointwise"):
        dj.nongaussian_dmft(lambda x: jnp.sum(x), None, h=h, **_kw())
    with pytest.raises(ValueError, match="phi must be"):
        dj.nongaussian_dmft(QUAD, "other", **_kw())
    with pytest.raises(ValueError, match="phi"):
        dj.nongaussian_dmft(QUAD, lambda r0: r0, target=dj.target("same", QUAD), **_kw())


def test_other_steppers_refused():
    model = dj.nongaussian_dmft(QUAD, "same", **_kw(draws=16))
    with pytest.raises(ValueError, match="Euler"):
        dj.solve(model, dj.TimeGrid(DT, 3), dj.Trapezoid())


def test_unstable_draws_fail_the_solve():
    """The shared divergence rule reports a step far beyond the per-draw stability bound
    (RESULTS.diverged, raised with its message by default). Draws beyond the explicit per-draw
    step's stability bound (dt lambda_max(S)/m > 2 on two consecutive rows, spec 7.6) are
    counted and the solve fails (RESULTS.diverged) instead of returning an answer biased by
    them; at dt = 0.1 there are none."""
    model = dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, tau=TAU, a=A0,
                                alpha_bar=ABAR, draws=DRAWS, key=0, groups=GROUPS)
    bad = dj.solve(model, dj.TimeGrid(1.0, STEPS), throw=False)    # same compilation
    assert bad.result == dj.RESULTS.diverged
    assert float(bad.unstable_draws) > 0 and np.any(np.asarray(bad.unstable) > 0)
    with pytest.raises(Exception, match="diverged"):      # what throw=True raises, eagerly
        bad.result.error_if(bad, bad.result != dj.RESULTS.successful)
    first = int(np.argmax(np.asarray(bad.unstable) > 0))
    assert float(bad.divergence_time) <= float(bad.t[first])
    good = quadratic()
    assert good.result == dj.RESULTS.successful and float(good.unstable_draws) == 0


@pytest.mark.gpu  # heavy tier: CI time under load
def test_control_variates():
    """Control variates (spec 7.8: the Gaussian model's error at the same paths, closed-form
    means; a traced flag, the same compilation) shrink the standard errors of e_tr and a at
    early times, where r ~ xi, and keep the exact linear-sigma identity up to the sampling
    bias of the clipped Euler covariance (spec 7.5), which the plain estimator's noise hides:
    measured 0.0022 in e_tr and a at dt = 0.1 with e_tr's standard error 3e-4 (15x smaller
    than without)."""
    cv = _ng(_linear_case(True), control_variates=True)
    plain, gauss = linear(True)
    assert cv.result == dj.RESULTS.successful
    for name in OBSERVABLES + ("v",):
        x, g = np.asarray(getattr(cv, name)), np.asarray(getattr(gauss, name))
        se = np.asarray(getattr(cv, name + "_se"))
        assert np.all(np.abs(x - g) <= 4.5 * se + 0.003), (name, np.max(np.abs(x - g)))
    _assert_within_error(cv, plain)                        # same draws, other estimator
    early = slice(1, 6)                                    # 0 < t <= 0.5
    for name in ("e_tr_se", "a_se"):
        ratio = (np.mean(np.asarray(getattr(cv, name))[early])
                 / np.mean(np.asarray(getattr(plain, name))[early]))
        assert ratio < 0.7, (name, ratio)


@pytest.mark.gpu  # heavy tier: a compilation of its own (CI time)
def test_symmetric_weight_side_equals_exchangeable():
    """Under a symmetric initialization the weight side runs in the two-number algebra
    Symmetric(m) (spec section 5; kernels as (D, O) pairs): the same solution as the general
    weight side with exchangeable kernels, to round-off. It needs a symmetric initialization;
    the fixed-point iteration refuses it."""
    kw = dict(tau=TAU, a=[1.2, 1.2], alpha_bar=ABAR, draws=DRAWS, key=0, groups=GROUPS)
    exch = dj.solve(dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, exchangeable=True,
                                        **kw), GRID)
    model = dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, symmetric=True, **kw)
    assert isinstance(model.algebra, dj.Symmetric)
    sym = dj.solve(model, GRID)
    for name in ("a", "nu", "e_tr", "e_ts", "C_t0", "C", "R", "C_A", "e_tr_se", "clipped",
                 "nu_k2"):
        np.testing.assert_allclose(np.asarray(getattr(sym, name)),
                                   np.asarray(getattr(exch, name)), rtol=0, atol=1e-12,
                                   err_msg=name)
    with pytest.raises(ValueError, match="symmetric initialization"):
        dj.nongaussian_dmft(QUAD, ZERO_PHI, target=ZERO_TARGET, symmetric=True,
                            **dict(kw, a=A0))
    with pytest.raises(ValueError, match="general algebra"):
        dj.nongaussian_fixed_point(model, GRID)


def _implicit_pair(dt):
    kw = dict(tau=TAU, a=A0, alpha_bar=ABAR, draws=800, key=3, groups=4)
    grid = dj.TimeGrid(dt, 10)                  # dt traced: both grids share a compilation
    return [dj.solve(dj.nongaussian_dmft(QUAD, "same", implicit=imp, **kw), grid)
            for imp in (False, True)]


@pytest.mark.gpu  # heavy tier: a compilation of its own (CI time)
def test_semi_implicit_step_is_consistent():
    """The semi-implicit per-draw step (spec 7.6) is a first-order scheme of the same theory:
    with the same draws its largest difference to the explicit step over t <= 0.5 shrinks with
    dt (m = 2, 800 draws, dt = 0.1 -> 0.05; measured ratios printed on failure)."""
    coarse, fine = _implicit_pair(0.1), _implicit_pair(0.05)
    for name in ("a", "e_tr", "C_t0"):
        def gap(pair, rows):
            x, y = (np.asarray(getattr(s, name))[:rows] for s in pair)
            return np.max(np.abs(x - y))
        g_coarse, g_fine = gap(coarse, 6), gap(fine, 11)          # t <= 0.5 on both grids
        assert g_fine < 0.75 * g_coarse, (name, g_coarse, g_fine)
        assert g_coarse < 0.02, (name, g_coarse)


@pytest.mark.gpu
def test_semi_implicit_step_survives_the_tail_draws():
    """Spec 7.6's case: h = 0.5 q + 0.3 q^2 + 0.2 q^3, phi = sigma, dt = 0.1, 2000 draws: the
    explicit step diverges (tail draws beyond dt lambda_max(S)/m = 2), the semi-implicit one
    does not (measured: e_tr(1) = 0.143, max dt lambda_max(S)/m = 6.4)."""
    kw = dict(tau=TAU, a=A0, alpha_bar=ABAR, draws=2000, key=0, groups=8)
    sols = [dj.solve(dj.nongaussian_dmft([0, 0.5, 0.3, 0.2], "same", implicit=imp, **kw),
                     dj.TimeGrid(0.1, 20), throw=False) for imp in (False, True)]
    assert sols[0].result == dj.RESULTS.diverged and float(sols[0].unstable_draws) > 0
    assert sols[1].result == dj.RESULTS.successful
    assert float(np.max(np.asarray(sols[1].stiffness))) * 0.1 > 2.0
