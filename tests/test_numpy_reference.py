"""Checks of the independent NumPy DMFT reference (benchmarks/numpy_reference.py).

Equation labels refer to docs/equations.md.  No timing is asserted here;
``python benchmarks/numpy_reference.py`` prints timings.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "numpy_reference.py"
_spec = importlib.util.spec_from_file_location("numpy_reference", _PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)
solve_symmetric = ref.solve_symmetric
solve_general = ref.solve_general


# ---------------------------------------------------------------- covariances

def cubic():        # h(q) = 0.9 q + q^3/6
    return (lambda q: 0.9 * q + q ** 3 / 6, lambda q: 0.9 + q ** 2 / 2, lambda q: q)


def quad(c1=0.9):   # h(q) = c1 q + q^2/2
    return (lambda q: c1 * q + q ** 2 / 2, lambda q: c1 + q,
            lambda q: np.ones_like(np.asarray(q, dtype=float)))


def erf_cov():      # sigma = erf(x): h(q) = (2/pi) arcsin(2q/3), smooth on [-1, 1]
    h = lambda q: (2 / np.pi) * np.arcsin(2 * q / 3)
    dh = lambda q: (4 / (3 * np.pi)) / np.sqrt(1 - 4 * q ** 2 / 9)
    d2h = lambda q: (16 / (27 * np.pi)) * q / (1 - 4 * q ** 2 / 9) ** 1.5
    return h, dh, d2h


def relu():         # centered ReLU: h'' is infinite at q = 1
    h = lambda q: (np.sqrt(1 - q ** 2) + (np.pi - np.arccos(q)) * q) / (2 * np.pi) - 1 / (2 * np.pi)
    dh = lambda q: (np.pi - np.arccos(q)) / (2 * np.pi)
    d2h = lambda q: 1.0 / (2 * np.pi * np.sqrt(1 - q ** 2))
    return h, dh, d2h


def target_1d(h, dh):
    """phi = sigma, k = 1: phihat = h, ||phi||^2 = h(1)."""
    return (lambda v: float(h(v[0])), lambda v: np.array([dh(v[0])]), float(h(1.0)))


def target_2d():
    """An arbitrary smooth 2-index phihat (only its consistency matters here)."""
    ph = lambda v: 0.6 * v[0] + 0.4 * v[0] ** 2 + 0.5 * v[1] + 0.3 * v[0] * v[1]
    gph = lambda v: np.array([0.6 + 0.8 * v[0] + 0.3 * v[1], 0.5 + 0.3 * v[0]])
    return ph, gph, 1.5


def _cases():
    """(name, symmetric-solver kwargs) covering noise/target, frozen a, k = 2, relu."""
    h, dh, d2h = quad()
    ph, gph, n2 = target_1d(h, dh)
    hc, dhc, d2hc = cubic()
    ph2, gph2, n22 = target_2d()
    he, dhe, d2he = erf_cov()
    base = dict(tau=0.3, dt=0.05, steps=60)
    return [
        ("target_k1", dict(h=h, dh=dh, d2h=d2h, phihat=ph, grad_phihat=gph, norm2=n2,
                           alpha=0.375, m=4, a0=1.0, **base)),
        ("noise_cubic", dict(h=hc, dh=dhc, d2h=d2hc, phihat=None, grad_phihat=None,
                             norm2=0.0, alpha=0.3, m=5, a0=1.0, **base)),
        ("noise_lazy_frozen", dict(h=h, dh=dh, d2h=d2h, phihat=None, grad_phihat=None,
                                   norm2=0.0, alpha=0.5, m=3, a0=np.sqrt(3), freeze_a=True,
                                   **base)),
        ("target_k2", dict(h=hc, dh=dhc, d2h=d2hc, phihat=ph2, grad_phihat=gph2, norm2=n22,
                           alpha=0.4, m=3, a0=0.7, k=2, **base)),
        ("erf_target", dict(h=he, dh=dhe, d2h=d2he, phihat=lambda v: float(he(v[0])),
                            grad_phihat=lambda v: np.array([dhe(v[0])]), norm2=float(he(1.0)),
                            alpha=0.3, m=4, a0=1.0, **base)),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]


def _general_from_symmetric(kw):
    m, k = kw["m"], kw.get("k", 1)
    return solve_general(kw["h"], kw["dh"], kw["d2h"], kw["phihat"], kw["grad_phihat"],
                         kw["norm2"], kw["tau"], kw["alpha"] * m, np.full(m, kw["a0"]),
                         np.eye(m), np.zeros((m, k)), kw["dt"], kw["steps"],
                         freeze_a=kw.get("freeze_a", False))


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def pair(request):
    name, kw = request.param
    return kw, solve_symmetric(**kw), _general_from_symmetric(kw)


# ------------------------------------------------------------------ structure

def test_shapes_and_finite(pair):
    kw, s, g = pair
    N, m, k = kw["steps"], kw["m"], kw.get("k", 1)
    P = N + 1
    for key in ("t", "a", "nu", "rho", "e_tr", "e_ts"):
        assert s[key].shape == (P,)
    assert s["v"].shape == (P, k)
    for key in ("C_d", "C_o", "R_d", "R_o", "C_A", "R_A", "Sigma_C", "Sigma_R"):
        assert s[key].shape == (P, P)
        assert np.all(np.isfinite(s[key]))
    assert g["C"].shape == g["R"].shape == (P, P, m, m)
    assert g["a"].shape == (P, m) and g["v"].shape == (P, m, k) and g["nu"].shape == (P, m)
    assert np.all(np.isfinite(g["C"])) and np.all(np.isfinite(g["R"]))


def test_initial_errors(pair):
    """t = 0: e_tr = e_ts = Sigma_C(0,0)/2 (spec section 4, checks)."""
    _, s, g = pair
    for out in (s, g):
        sc0 = out["Sigma_C"][0, 0]
        assert out["e_tr"][0] == pytest.approx(sc0 / 2, rel=1e-14)
        assert out["e_ts"][0] == pytest.approx(sc0 / 2, rel=1e-14)


def test_equal_time_C_is_one(pair):
    _, s, g = pair
    assert np.max(np.abs(np.diag(s["C_d"]) - 1.0)) < 1e-12
    P = s["C_d"].shape[0]
    diag = np.array([np.diagonal(g["C"][n, n]) for n in range(P)])
    assert np.max(np.abs(diag - 1.0)) < 1e-12


def test_symmetries_and_causality(pair):
    _, s, g = pair
    P = s["C_d"].shape[0]
    for key in ("C_d", "C_o", "C_A", "Sigma_C"):
        assert np.array_equal(s[key], s[key].T)
    up = np.triu_indices(P)                     # t <= s, including the diagonal
    for key in ("R_d", "R_o", "Sigma_R"):
        assert np.all(s[key][up] == 0.0)
    assert np.all(np.triu(s["R_A"], 1) == 0.0)
    assert np.allclose(np.diag(s["R_A"]), 1.0 / s["t"][1])
    # R_d(t+dt, t) = 1 exactly, R_o(t+dt, t) = 0 (the delta in [C.36])
    assert np.all(np.diag(s["R_d"], -1) == 1.0)
    assert np.all(np.diag(s["R_o"], -1) == 0.0)
    # a property of the scheme: C_d(t+dt, t) = C_d(t, t) + dt * 0 = 1 exactly
    assert np.all(np.diag(s["C_d"], -1) == 1.0)
    # general: C_ij(t,s) = C_ji(s,t), R causal, R(t+dt,t) = I
    C, R = g["C"], g["R"]
    assert np.array_equal(C, np.transpose(C, (1, 0, 3, 2)))
    assert np.all(R[up] == 0.0)
    m = C.shape[-1]
    for n in range(P - 1):
        assert np.array_equal(R[n + 1, n], np.eye(m))


def test_e_tr_identity(pair):
    """[C.24] identity, as the scheme implies it exactly.

    Row n of step 3 at k = n reads
        C_A[n,n] = -dt sum_{l<n} Sigma_R[n,l] C_A[l,n] - dt sum_{l<=n} Sigma_C[n,l] R_A[n,l],
    so e_tr[n] = -C_A[n,n]/2 = (dt/2) sum_{k<=n} (R_A Sigma_C + C_A Sigma_R)[n,k]
    (left Riemann sum, k = n included, R_A[n,n] = 1/dt) to rounding.  Also checked:
    the matrix forms [D.5, D.6] R_A = (1/dt)(I + dt Sigma_R)^{-1},
    C_A = -(I + dt Sigma_R)^{-1} Sigma_C (I + dt Sigma_R)^{-T}, on the full grid.
    """
    _, s, g = pair
    for out in (s, g):
        dt = out["t"][1]
        RA, CA, SC, SR = out["R_A"], out["C_A"], out["Sigma_C"], out["Sigma_R"]
        P = RA.shape[0]
        low = np.tril(np.ones((P, P)))
        rhs = 0.5 * dt * np.sum(low * (RA * SC + CA * SR), axis=1)
        scale = np.max(np.abs(out["e_tr"])) + 1.0
        assert np.max(np.abs(out["e_tr"] - rhs)) < 1e-12 * scale
        Ainv = np.linalg.inv(np.eye(P) + dt * SR)
        assert np.allclose(RA, Ainv / dt, rtol=0, atol=1e-9 / dt)
        assert np.allclose(CA, -Ainv @ SC @ Ainv.T, rtol=0, atol=1e-9 * scale)


def test_errors_sane(pair):
    kw, s, g = pair
    for out in (s, g):
        assert np.all(out["e_tr"] >= 0.0)
        assert np.all(out["e_ts"] >= kw["tau"] ** 2 / 2 - 1e-12)
        assert np.allclose(out["rho"][0], 1.0)


def test_general_equals_symmetric(pair):
    """General DMFT from a symmetric init (a_i = a0, C = I, v = 0) == SymmDMFT."""
    kw, s, g = pair
    m = kw["m"]
    C, R = g["C"], g["R"]
    off = ~np.eye(m, dtype=bool)
    tol = 1e-12
    for i in range(m):
        assert np.max(np.abs(C[:, :, i, i] - s["C_d"])) < tol
        assert np.max(np.abs(R[:, :, i, i] - s["R_d"])) < tol
    for i, j in zip(*np.nonzero(off)):
        assert np.max(np.abs(C[:, :, i, j] - s["C_o"])) < tol
        assert np.max(np.abs(R[:, :, i, j] - s["R_o"])) < tol
    assert np.max(np.abs(g["a"] - s["a"][:, None])) < tol
    assert np.max(np.abs(g["v"] - s["v"][:, None, :])) < tol
    assert np.max(np.abs(g["nu"] - s["nu"][:, None])) < tol
    for key in ("rho", "e_tr", "e_ts", "C_A", "R_A", "Sigma_C", "Sigma_R"):
        sc = np.max(np.abs(s[key])) + 1.0
        assert np.max(np.abs(g[key] - s[key])) < tol * sc, key


def test_relu_is_rejected():
    """h''(1) = inf and C_d(t+dt, t) = 1 with R_d(t+dt, t) = 1: not finite, so refused."""
    h, dh, d2h = relu()
    with pytest.raises(FloatingPointError):
        solve_symmetric(h, dh, d2h, None, None, 0.0, 0.5, 0.3, 4, 1.0, 0.05, 10)


# ---------------------------------------------------------------- general only

def test_general_nonsymmetric_init():
    """Validation settings of spec section 9 (m = 4, alpha_bar = 1.5, tau = 1)."""
    h, dh, d2h = quad(0.1)
    m, N, dt = 4, 40, 0.05
    C1 = np.eye(m)
    C1[0, 2] = C1[2, 0] = C1[1, 3] = C1[3, 1] = 1.0       # w_1 = w_3, w_2 = w_4
    for a, C0 in ((np.array([1.0, 1.0, -1.0, -1.0]), C1),
                  (np.array([-1.0, -0.5, 1 / 3, 2 / 3]), np.eye(m))):
        g = solve_general(h, dh, d2h, None, None, 0.0, 1.0, 1.5, a, C0,
                          np.zeros((m, 1)), dt, N)
        assert np.all(np.isfinite(g["C"]))
        P = N + 1
        diag = np.array([np.diagonal(g["C"][n, n]) for n in range(P)])
        assert np.max(np.abs(diag - 1)) < 1e-12
        assert g["e_tr"][0] == pytest.approx(g["Sigma_C"][0, 0] / 2, rel=1e-14)
        assert g["e_ts"][0] == pytest.approx(g["Sigma_C"][0, 0] / 2, rel=1e-14)
        assert np.all(g["e_tr"] >= 0) and np.all(g["e_ts"] >= 0.5 - 1e-12)
        assert g["e_tr"][-1] < g["e_tr"][0]
        # Gram matrix of (w_i(t)) stays PSD
        assert np.linalg.eigvalsh(g["C"][N, N]).min() > -1e-10
    # in setting 1, neurons 1 and 3 (same w, opposite a) stay symmetric in pairs:
    # (1,2,3,4) -> (2,1,4,3) is a symmetry of the initial data
    g1 = solve_general(h, dh, d2h, None, None, 0.0, 1.0, 1.5,
                       np.array([1.0, 1.0, -1.0, -1.0]), C1, np.zeros((m, 1)), dt, N)
    perm = [1, 0, 3, 2]
    Cp = g1["C"][:, :, perm][:, :, :, perm]
    assert np.max(np.abs(Cp - g1["C"])) < 1e-12
    assert np.max(np.abs(g1["a"][:, perm] - g1["a"])) < 1e-12


# ------------------------------------------------------------- known results

def test_gaussian_model_numbers():
    """Spec section 3: m = 4, alpha_bar = 1.5, h = phihat = 0.9q + 0.5q^2, tau = 0.3,
    a0 = 1, eta = 0.01: at t = 4, DMFT a = 1.188, v = 0.484, C_d(t, 0) = 0.655."""
    h, dh, d2h = quad(0.9)
    ph, gph, n2 = target_1d(h, dh)
    s = solve_symmetric(h, dh, d2h, ph, gph, n2, 0.3, 1.5 / 4, 4, 1.0, 0.01, 400)
    assert s["a"][-1] == pytest.approx(1.188, abs=1.5e-3)
    assert s["v"][-1, 0] == pytest.approx(0.484, abs=1.5e-3)
    assert s["C_d"][-1, 0] == pytest.approx(0.655, abs=1.5e-3)


def test_mean_field_pure_noise_mf1():
    """Spec section 7 (mf1): m R_o -> R_o^mf1 = exp(-rho0 (t-s)) - 1 (t > s), with
    rho0 = alpha a0^2 h'(0); h = 0.9q + q^3/6, tau = 0.6, alpha = 0.3, a0 = 1.
    Also the spec's finite-m values m C_o(10, 3) = -0.314, -0.290, -0.282 (m = 20, 80, 320)."""
    h, dh, d2h = cubic()
    tau, alpha, dt = 0.6, 0.3, 0.025
    rho0 = alpha * dh(0.0)
    N, i3 = int(round(10 / dt)), int(round(3 / dt))
    errs = []
    for m, spec_val in ((20, -0.314), (80, -0.290), (320, -0.282)):
        s = solve_symmetric(h, dh, d2h, None, None, 0.0, tau, alpha, m, 1.0, dt, N)
        t = s["t"]
        T, S = np.meshgrid(t, t, indexing="ij")
        Ro_mf1 = np.where(T > S, np.exp(-rho0 * (T - S)) - 1.0, 0.0)
        errs.append(np.max(np.abs(m * s["R_o"] - Ro_mf1)))
        assert m * s["C_o"][N, i3] == pytest.approx(spec_val, abs=3e-3)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.03
    # closed form of C_o^mf1 at (10, 3)
    tp, tt = 3.0, 10.0
    co = (((tau ** 2 + rho0) / rho0) * np.exp(-2 * rho0 * tp)
          - (tau ** 2 / rho0) * np.exp(-rho0 * tp)) * np.exp(-rho0 * (tt - tp)) \
        + (tau ** 2 - rho0) / rho0 - (tau ** 2 / rho0) * np.exp(-rho0 * tp)
    assert m * s["C_o"][N, i3] == pytest.approx(co, abs=5e-3)


def test_lazy_first_regime_lz1():
    """Spec section 7 (lz1): a0 = gamma0 sqrt(m), pure noise, time t/m:
    e_tr(t/m) -> (1/2)[tau^2 + gamma0^2 h(1) + gamma0^2 h'(0) (exp(-2 r t) - 1)],
    r = alpha gamma0^2 h'(0), with error decreasing in m; and m (C_d(t/m, 0) - 1)
    -> exp(-r t) - (exp(-2 r t) + 1)/2 (= -0.30 at r t = 1.5)."""
    h, dh, d2h = cubic()
    tau, alpha, g0, dth = 0.6, 0.3, 1.0, 0.025
    r = alpha * g0 ** 2 * dh(0.0)
    N = int(round(3.0 / r / dth))
    errs, cd_errs = [], []
    for m in (10, 40, 160, 640):
        s = solve_symmetric(h, dh, d2h, None, None, 0.0, tau, alpha, m, g0 * np.sqrt(m),
                            dth / m, N)
        th = s["t"] * m
        etr_lz1 = 0.5 * (tau ** 2 + g0 ** 2 * h(1.0) + g0 ** 2 * dh(0.0) * (np.exp(-2 * r * th) - 1))
        errs.append(np.max(np.abs(s["e_tr"] - etr_lz1)))
        cd_lz1 = np.exp(-r * th) - (np.exp(-2 * r * th) + 1) / 2
        cd_errs.append(np.max(np.abs(m * (s["C_d"][:, 0] - 1) - cd_lz1)))
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs
    assert all(e1 > e2 for e1, e2 in zip(cd_errs, cd_errs[1:])), cd_errs
    assert errs[-1] < 0.01
    assert cd_errs[-1] < 0.02


def test_first_order_in_dt():
    """Error O(eta) [D.8]: successive differences halve when dt halves."""
    h, dh, d2h = quad(0.9)
    ph, gph, n2 = target_1d(h, dh)
    vals = []
    for dt in (0.04, 0.02, 0.01):
        s = solve_symmetric(h, dh, d2h, ph, gph, n2, 0.3, 0.375, 4, 1.0, dt,
                            int(round(2.0 / dt)))
        vals.append(np.array([s["e_tr"][-1], s["e_ts"][-1], s["a"][-1], s["C_d"][-1, 0]]))
    d1, d2 = vals[0] - vals[1], vals[1] - vals[2]
    ratio = np.abs(d1) / np.abs(d2)
    assert np.all((ratio > 1.6) & (ratio < 2.5)), ratio
