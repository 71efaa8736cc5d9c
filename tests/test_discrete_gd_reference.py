"""Checks of the exact discrete-time DMFT of projected GD (docs/discrete_gd.md, issue 11), through
its independent NumPy reference tests/reference/discrete_gd_numpy.py.

Equation labels [G.n] refer to docs/discrete_gd.md, [C.n]/[D.n] to /work/shared/spec/dmft.md.
Each test runs in a few seconds on the 2-core CPU.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

_HERE = pathlib.Path(__file__).resolve().parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gd = _load("discrete_gd_numpy", _HERE / "reference" / "discrete_gd_numpy.py")
euler_ref = _load("numpy_reference", _HERE.parent / "benchmarks" / "numpy_reference.py")


def quad(c1):
    """h(q) = c1 q + q^2/2 and its derivatives."""
    return (lambda q: c1 * q + q**2 / 2, lambda q: c1 + q,
            lambda q: np.ones_like(np.asarray(q, dtype=float)))


NOISE = quad(0.1)          # the judged setting's h = q/10 + q^2/2
TARGET = quad(0.9)         # h = phihat = 0.9 q + q^2/2


def target_1d(h, dh):
    return (lambda v: float(h(v[0]))), (lambda v: np.array([dh(v[0])])), float(h(1.0))


A_GEN = np.array([-1.0, -0.5, 1.0 / 3.0, 2.0 / 3.0])
C_GEN = np.array([[1.0, 0.3, 0.0, 0.1], [0.3, 1.0, 0.2, 0.0],
                  [0.0, 0.2, 1.0, -0.2], [0.1, 0.0, -0.2, 1.0]])
V_GEN = np.array([[0.2], [0.0], [-0.1], [0.3]])


def judged(eta, steps, **kw):
    return gd.solve_symmetric(*NOISE, None, None, 0.0, 1.0, 1.5, 4, 1.0, eta, steps, **kw)


# ------------------------------------------------------------------------------ plumbing
def test_euler_mode_is_spec_section_6():
    """mode='euler' (the same sums, nu as a rate) reproduces the spec-section-6 reference."""
    h, dh, d2h = TARGET
    ph, gph, n2 = target_1d(h, dh)
    e = euler_ref.solve_symmetric(h, dh, d2h, ph, gph, n2, 0.3, 0.3, 4, 1.0, 0.1, 25)
    g = gd.solve_symmetric(h, dh, d2h, ph, gph, n2, 0.3, 1.2, 4, 1.0, 0.1, 25, mode="euler")
    for a, b in ((e["a"], g["a"]), (e["C_d"], g["C"][..., 0]), (e["C_o"], g["C"][..., 1]),
                 (e["R_d"], g["R"][..., 0]), (e["R_o"], g["R"][..., 1]), (e["e_tr"], g["e_tr"]),
                 (e["v"], g["v"])):
        np.testing.assert_allclose(a, b, atol=1e-13)
    e = euler_ref.solve_general(h, dh, d2h, ph, gph, n2, 0.3, 1.2, A_GEN, C_GEN, V_GEN, 0.1, 12)
    g = gd.solve_general(h, dh, d2h, ph, gph, n2, 0.3, 1.2, A_GEN, C_GEN, V_GEN, 0.1, 12,
                         mode="euler")
    for k in ("a", "v", "C", "R", "C_A", "R_A", "e_tr", "e_ts"):
        np.testing.assert_allclose(e[k], g[k], atol=1e-13, err_msg=k)


@pytest.mark.parametrize("case", ["noise", "noise_frozen", "target"])
def test_symmetric_is_general_in_two_number_algebra(case):
    """The symmetric recursion equals the general one from C(0,0) = I, a = a0 (1, ..., 1)."""
    h, dh, d2h = TARGET if case == "target" else NOISE
    ph, gph, n2 = target_1d(h, dh) if case == "target" else (None, None, 0.0)
    tau, ab, fz, m = (0.3, 1.2, False, 4) if case == "target" else (1.0, 1.5, case.endswith("frozen"), 3)
    s = gd.solve_symmetric(h, dh, d2h, ph, gph, n2, tau, ab, m, 0.8, 0.7, 12, freeze_a=fz)
    g = gd.solve_general(h, dh, d2h, ph, gph, n2, tau, ab, 0.8 * np.ones(m), np.eye(m), None,
                         0.7, 12, freeze_a=fz)
    eye = np.eye(m)
    full = lambda x: x[..., 0, None, None] * eye + x[..., 1, None, None] * (1 - eye)  # noqa: E731
    np.testing.assert_allclose(full(s["C"]), g["C"], atol=1e-13)
    np.testing.assert_allclose(full(s["R"]), g["R"], atol=1e-13)
    np.testing.assert_allclose(full(s["Gamma"]), g["Gamma"], atol=1e-13)
    np.testing.assert_allclose(s["a"][:, None] * np.ones(m), g["a"], atol=1e-13)
    np.testing.assert_allclose(s["v"][:, None, :] * np.ones((m, 1)), g["v"], atol=1e-13)
    np.testing.assert_allclose(s["N"][:, None] * np.ones(m), g["N"], atol=1e-13)
    for k in ("e_tr", "e_ts", "C_A", "R_A", "rho"):
        np.testing.assert_allclose(s[k], g[k], atol=1e-13, err_msg=k)


# ------------------------------------------------------------------------------ identities
def test_exact_identities_general():
    """C_ii(k,k) = 1 [G.11]; R(k+1,k) = I/N(k) [G.12]; Gamma symmetric [G.7]; e_tr(0) = e_ts(0)
    = Sigma_C(0,0)/2; C over all (step, neuron) pairs is a Gram matrix; e_tr >= 0."""
    h, dh, d2h = TARGET
    ph, gph, n2 = target_1d(h, dh)
    K, m = 14, 4
    g = gd.solve_general(h, dh, d2h, ph, gph, n2, 0.3, 1.2, A_GEN, C_GEN, V_GEN, 1.3, K)
    C, R = g["C"], g["R"]
    for k in range(K + 1):
        np.testing.assert_allclose(np.diag(C[k, k]), 1.0, atol=1e-13)
        np.testing.assert_allclose(C[k, :k + 1], np.swapaxes(C[:k + 1, k], 1, 2), atol=1e-15)
        np.testing.assert_allclose(R[k, k:], 0.0, atol=0)
    for k in range(K):
        np.testing.assert_allclose(R[k + 1, k], np.diag(1.0 / g["N"][k]), atol=1e-14)
        np.testing.assert_allclose(g["Gamma"][k], g["Gamma"][k].T, atol=1e-13)
    assert g["e_tr"][0] == pytest.approx(g["e_ts"][0], abs=1e-14)
    assert g["e_tr"][0] == pytest.approx(g["Sigma_C"][0, 0] / 2, abs=1e-14)
    gram = C.transpose(0, 2, 1, 3).reshape((K + 1) * m, (K + 1) * m)
    # C includes the U-components v v^T: the joint Gram of (w_i(k), u) must be PSD too
    v = g["v"][..., 0].reshape(-1)
    joint = np.block([[gram, v[:, None]], [v[None, :], np.ones((1, 1))]])
    assert np.linalg.eigvalsh(joint).min() > -1e-10
    assert np.all(g["e_tr"] >= 0)


def test_first_step_closed_form():
    """Gamma(0) = H C H^T + K(0,0) with H = (alpha_bar/m^2) a a^T o h'(C(0,0)) [G.7] and
    a(1), C(1,0) of [G.9a], [G.10] at k = 0, written out for pure noise."""
    h, dh, d2h = NOISE
    m, ab, tau, eta = 4, 1.5, 1.0, 0.8
    g = gd.solve_general(h, dh, d2h, None, None, 0.0, tau, ab, A_GEN, C_GEN, None, eta, 1)
    sc = tau**2 + A_GEN @ h(C_GEN) @ A_GEN / m**2
    H = (ab / m**2) * np.outer(A_GEN, A_GEN) * dh(C_GEN)
    Kc = (ab / m**2) * np.outer(A_GEN, A_GEN) * dh(C_GEN) * sc
    np.testing.assert_allclose(g["Gamma"][0], H @ C_GEN @ H.T + Kc, atol=1e-14)
    X = -H @ C_GEN
    N = np.sqrt(1 + 2 * eta * np.diag(X) + eta**2 * np.diag(H @ C_GEN @ H.T + Kc))
    np.testing.assert_allclose(g["N"][0], N, atol=1e-14)
    np.testing.assert_allclose(g["C"][1, 0], (C_GEN + eta * X) / N[:, None], atol=1e-14)
    a1 = A_GEN - eta * (ab / m**2) * (h(C_GEN) @ A_GEN)
    np.testing.assert_allclose(g["a"][1], a1, atol=1e-14)


def test_recursion_is_the_effective_process():
    """The recursion is the covariance bookkeeping of the linear Gaussian effective process
    w(k+1) = (w(k) + eta g(k))/N(k), g(k) = -eta sum_s (1/m) M^R(k,s) w(s) + xi(k) with
    <xi_i(k), xi_j(s)> = -(1/m) M^C_ij(k,s) ([P.3]-[P.5]): building w(k) explicitly as linear
    combinations of w(0) and xi(0..k-1) reproduces C, R and Gamma to rounding."""
    h, dh, d2h = NOISE
    m, ab, eta, K = 4, 1.5, 1.5, 6
    g = gd.solve_general(h, dh, d2h, None, None, 0.0, 1.0, ab, A_GEN, C_GEN, None, eta, K)
    C, R, RA, CA, a, N = g["C"], g["R"], g["R_A"], g["C_A"], g["a"], g["N"]
    P = K + 1
    MR, MC = np.zeros((P, P, m, m)), np.zeros((P, P, m, m))
    for k in range(P):
        for s in range(k + 1):
            aa = (ab / m) * np.outer(a[k], a[s])
            MR[k, s] = aa * (RA[k, s] * dh(C[k, s]) + CA[k, s] * d2h(C[k, s]) * R[k, s])
            MC[k, s] = aa * CA[k, s] * dh(C[k, s])
    nb = m * (K + 1)                                  # basis: w(0), xi(0), ..., xi(K-1)
    S = np.zeros((nb, nb))
    S[:m, :m] = C[0, 0]
    for k in range(K):
        for s in range(K):
            S[m * (k + 1):m * (k + 2), m * (s + 1):m * (s + 2)] = \
                -(MC[k, s] if k >= s else MC[s, k].T) / m
    x = [np.eye(m, nb)]
    for k in range(K):
        gk = -eta * sum(MR[k, s] @ x[s] for s in range(k + 1)) / m
        gk[:, m * (k + 1):m * (k + 2)] += np.eye(m)
        np.testing.assert_allclose(gk @ S @ gk.T, g["Gamma"][k], atol=1e-13)
        x.append((x[k] + eta * gk) / N[k][:, None])
    for k in range(P):
        for s in range(P):
            np.testing.assert_allclose(x[k] @ S @ x[s].T, C[k, s], atol=1e-13)
        for s in range(k):
            np.testing.assert_allclose(x[k][:, m * (s + 1):m * (s + 2)] / eta, R[k, s], atol=1e-13)
    assert np.linalg.eigvalsh(S).min() > -1e-12       # the noise covariance is a covariance


# ------------------------------------------------------------------------------ limits
def test_reduces_to_flow_at_first_order():
    """At fixed t = 1, |GD(eta) - flow| ~ c eta: fitted log-log slope 1 (docs section 5). The
    flow is the Euler twin at fine steps, Richardson-extrapolated (O(dt^2) << the GD offsets)."""
    t = 1.0
    fine, finer = judged(0.00625, 160, mode="euler"), judged(0.003125, 320, mode="euler")
    flow = {k: 2 * finer[k][-1] - fine[k][-1] for k in ("a", "e_tr")}
    flow["C_d0"] = 2 * finer["C"][-1, 0, 0] - fine["C"][-1, 0, 0]
    etas = np.array([0.1, 0.05, 0.025])
    for key in ("a", "e_tr", "C_d0"):
        errs = []
        for eta in etas:
            s = judged(eta, int(round(t / eta)))
            x = s["C"][-1, 0, 0] if key == "C_d0" else s[key][-1]
            errs.append(abs(x - flow[key]))
        slope = np.polyfit(np.log(etas), np.log(errs), 1)[0]
        assert 0.9 < slope < 1.1, (key, slope, errs)


def test_gd_differs_from_euler_at_order_eta():
    """GD and the Euler scheme at the same step are both O(eta) from the flow but not equal:
    their difference at fixed t is itself O(eta) (so the exact recursion matters)."""
    diffs = []
    for eta in (0.2, 0.1, 0.05):
        k = int(round(1.0 / eta))
        diffs.append(abs(judged(eta, k)["e_tr"][-1] - judged(eta, k, mode="euler")["e_tr"][-1]))
    slope = np.polyfit(np.log([0.2, 0.1, 0.05]), np.log(diffs), 1)[0]
    assert 0.85 < slope < 1.15 and diffs[-1] > 1e-4


# ------------------------------------------------------------------------------ simulator
def test_small_simulation_agrees_with_discrete_not_flow():
    """Gaussian model (dmft_jax.simulate) at d = 60, eta = lr d/n = 1, 5 steps, 24 realizations:
    the discrete DMFT is within 4 se + the 1/d bias measured in benchmarks/results/discrete_gd.md
    (|c| <= 0.6 here), the flow (Euler at eta/20) is far off at the first steps."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import dmft_jax as dj

    d, R, K, eta = 48, 16, 3, 1.0
    gm = dj.gaussian_model([0.0, 0.1, 0.5], tau=1.0, d=d, n=72, m=4, a0=1.0)
    sim = jax.block_until_ready(dj.simulate(gm, jr.PRNGKey(0), R, lr=eta * 1.5, steps=K,
                                            dtype=jnp.float32))
    th = judged(eta, K)
    fl = judged(eta / 20, 20 * K, mode="euler")
    mu_a, se_a = sim.mean_and_error(np.asarray(sim.a, float).mean(-1), controls=True)
    mu_c, se_c = sim.mean_and_error(np.asarray(sim.C_d0, float), controls=True)
    mu_e, se_e = sim.mean_and_error(np.asarray(sim.e_tr, float), controls=True)
    allow = 0.6 / d
    for mu, se, x in ((mu_a, se_a, th["a"]), (mu_c, se_c, th["C"][:, 0, 0]),
                      (mu_e, se_e, th["e_tr"])):
        assert np.all(np.abs(mu[1:] - x[1:]) <= 4 * se[1:] + allow), (mu, x, se)
    for k in (1, 2):                       # the flow: a(t_k) off by 0.05-0.06, > 2x the band
        assert abs(mu_a[k] - fl["a"][20 * k]) > 2 * (4 * se_a[k] + allow)
