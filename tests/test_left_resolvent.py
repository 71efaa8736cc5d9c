"""R_A by the left form of [C.19] (`dmft_jax._volterra.response_rows`).

R_A (1 + Sigma_R) = 1: row t_n of r_A is a triangular solve against the stored Sigma_R, so it
depends on Sigma_R and the grid only, never on earlier rows of r_A (whose quadrature errors
on a decimated history the right form (1 + Sigma_R) R_A = 1 carried into every later row).
"""

import jax
import jax.numpy as jnp
import numpy as np

from dmft_jax._stepper import EULER_QUADRATURE, TRAPEZOID_QUADRATURE
from dmft_jax._volterra import RESPONSE_BUFFERS, response_rows

# Sigma_R(t, s) = c + b exp(-lam (t - s)) for t > s: a constant part (Sigma_R keeps the weight
# of the directions the data do not see, ~0.7 under lazy initialization) and a decaying one.
C, B, LAM = 0.7, 1.2, 3.0


def _roots():
    """Poles of the Laplace transform of R_A = (1 + Sigma_R)^(-1):
    R_A(p) = p (p + lam) / (p^2 + (lam + c + b) p + c lam)."""
    s = LAM + C + B
    disc = np.sqrt(s * s - 4.0 * C * LAM)
    return np.array([(-s + disc) / 2.0, (-s - disc) / 2.0])


def rho_exact(t):
    """rho(t) = int_0^t R_A(t, s) ds = L^-1[(p + lam) / (p^2 + (lam + c + b) p + c lam)]."""
    p = _roots()
    return sum((p[i] + LAM) / (p[i] - p[1 - i]) * np.exp(p[i] * t) for i in range(2))


def _kernel_row(ts, n):
    idx = jnp.arange(ts.shape[0])
    return jnp.where(idx < n, C + B * jnp.exp(-LAM * (ts[n] - ts)), 0.0)


def _rows(ts, quadrature, bufs=None):
    """All rows of r_A on the grid `ts`, and rho at every time."""
    size = ts.shape[0]
    zeros = jnp.zeros((size, size))
    bufs = {key: zeros for key in RESPONSE_BUFFERS} if bufs is None else bufs
    r_jump = jnp.full((size,), -(C + B))            # r_A(t^+, t) = -Sigma_R(t^+, t)

    def step(bufs, n):
        wts = quadrature.weights(ts, n)
        bufs, r_row, _ = response_rows(_kernel_row(ts, n), jnp.zeros(size), bufs, r_jump, n,
                                       wts)
        return bufs, (r_row, 1.0 + jnp.dot(wts.w, r_row) + wts.upper * r_jump[n])

    return jax.lax.scan(step, bufs, jnp.arange(size))


def test_rho_tail_converges_at_second_order():
    """rho(30) = 4.2e-7 is 1 + an integral of O(1) values that cancel to 1e-7; on uniform
    trapezoid grids its relative error falls as h^2 (measured 4.3%, 1.1%, 0.27%)."""
    t_end = 30.0
    errors = []
    hs = np.array([0.2, 0.1, 0.05])
    for h in hs:
        ts = jnp.linspace(0.0, t_end, int(round(t_end / h)) + 1)
        _, (_, rho) = _rows(ts, TRAPEZOID_QUADRATURE)
        errors.append(abs(float(rho[-1]) / rho_exact(t_end) - 1.0))
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert slope >= 1.9, (errors, slope)
    assert errors[-1] < 5e-3, errors


def test_a_row_reads_sigma_r_only():
    """Garbage in the stored rows of r_A (and its masses) changes nothing in the next row:
    the left form never reads them."""
    ts = jnp.concatenate([jnp.linspace(0.0, 4.0, 9), jnp.linspace(4.2, 6.0, 10)])
    size = ts.shape[0]
    bufs, _ = _rows(ts[:size - 1], TRAPEZOID_QUADRATURE)
    pad = {key: jnp.zeros((size, size)).at[:size - 1, :size - 1].set(x)
           for key, x in bufs.items()}
    noise = jax.random.normal(jax.random.PRNGKey(0), (size, size))
    spoiled = dict(pad, R_A=pad["R_A"] + noise)
    n = size - 1
    wts = TRAPEZOID_QUADRATURE.weights(ts, n)
    r_jump = jnp.full((size,), -(C + B))
    _, row, _ = response_rows(_kernel_row(ts, n), jnp.zeros(size), pad, r_jump, n, wts)
    _, row2, _ = response_rows(_kernel_row(ts, n), jnp.zeros(size), spoiled, r_jump, n, wts)
    assert np.array_equal(np.asarray(row), np.asarray(row2))
    assert np.any(np.asarray(row) != 0.0)


def test_euler_rows_are_the_inverse_of_D5():
    """On Euler's weights the left form gives [D.5], R_A = (1/eta) (I + eta Sigma_R)^(-1),
    the same numbers as spec section 6's right recursion (a unit lower triangular matrix has
    one inverse)."""
    eta, size = 0.1, 40
    ts = eta * jnp.arange(size)
    bufs, (rows, _) = _rows(ts, EULER_QUADRATURE)
    tt = np.asarray(ts)
    lag = tt[:, None] - tt[None, :]
    sigma = np.where(lag > 0, C + B * np.exp(-LAM * np.where(lag > 0, lag, 0.0)), 0.0)
    r_a = np.linalg.inv(np.eye(size) + eta * sigma) / eta
    regular = r_a - np.diag(np.diag(r_a))
    assert np.allclose(np.diag(r_a), 1.0 / eta, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(rows), regular, rtol=1e-11, atol=1e-13)
    np.testing.assert_array_equal(np.asarray(bufs["R_A"]), np.asarray(rows))


def test_long_decimated_lazy_solve_reaches_interpolation():
    """Lazy Fig. 3 at m = 256 on 96 stored times (rtol 1e-3, fitted ends) to t = 60: through
    ~40 decimations the train error falls to the interpolation scale and stays there, as
    gradient flow requires (measured: |e_tr| <= 1.0e-8 for t >= 40). The right form of [C.19]
    (spec section 6's recursion), which left the decimated quadrature's error in the old
    columns of r_A, diverged at t = 31.7 here."""
    import dmft_jax as dj
    h = [0.0, 0.9, 0.5]
    model = dj.symmetric_dmft(h, dj.target("same", h), tau=0.3, alpha=0.3, m=256, gamma0=1.0,
                              fit_ends=True)
    sol = dj.solve(model, dj.Adaptive(60.0, rtol=1e-3, atol=1e-5, history=96, max_steps=5000,
                                      max_decimation_error=np.inf))
    n = int(sol.stats["accepted"])
    t, e_tr = np.asarray(sol.t)[:n + 1], np.asarray(sol.e_tr)[:n + 1]
    assert int(sol.stats["decimations"]) >= 30
    assert np.max(np.abs(e_tr[t >= 40.0])) < 1e-7, np.max(np.abs(e_tr[t >= 40.0]))
    assert e_tr[np.searchsorted(t, 10.0)] > 1e-5          # not interpolating from the start


def test_first_matrix_is_the_matrix_of_first():
    """`Merged.first_matrix`, which the left form solves with, is the linear map of
    `Merged.first` on a response row: first(x) = x @ A (d1 zero on the intervals j < k)."""
    from dmft_jax._volterra import Merged
    size = 7
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    idx = np.arange(size)
    d1 = jnp.where(idx[:, None] >= idx[None, :], jax.random.normal(k1, (size, size)), 0.0)
    x = jax.random.normal(k2, (size,))
    merged = Merged(d1, jnp.zeros_like(d1))
    np.testing.assert_allclose(np.asarray(x @ merged.first_matrix()),
                               np.asarray(merged.first(x, response=True)), rtol=1e-13,
                               atol=1e-14)
