"""The general DMFT (spec section 4) for any deterministic initialization.

Checks: it reduces to SymmDMFT (section 5) on a symmetric initialization; neuron permutations
commute with the solve; m = 1 matches direct computations (the symmetric solver and the
independent NumPy reference); the CLI rejects a bad --init Gram matrix in one line.
Equation labels refer to docs/equations.md.
"""

import jax

jax.config.update("jax_enable_x64", True)

import pathlib
import sys

import numpy as np
import pytest

import dmft_jax as dj
from dmft_jax._cli import main
from dmft_jax._covariance import covariance, target
from dmft_jax._dmft import general_dmft, symmetric_dmft

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import numpy_reference as ref  # noqa: E402

H = [0.0, 0.9, 0.5]          # h = phihat = 0.9 q + q^2/2 (spec section 3's single-index case)
TAU, ALPHA, DT, STEPS = 0.3, 0.4, 0.05, 24


def single_index():
    return covariance(H), target("same", H)


def solve(model, stepper=None):
    return dj.solve(model, dj.TimeGrid(DT, STEPS), stepper)


def random_init(m, k, seed):
    """a (m,), a Gram matrix C of m random unit vectors, and their overlaps v with k directions."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(m, 6))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    return rng.normal(size=m), w @ w.T, 0.3 * w[:, :k]


@pytest.mark.parametrize("stepper", ["euler", "trapezoid"])
def test_general_equals_symmetric_on_symmetric_init(stepper):
    """a_i(0) = a0, C(0, 0) = I, v(0) = 0: the general solution is D I + O (J - I) (spec section 5),
    on the Euler grid of spec section 6 and on the trapezoid/ETD2 stepper, whose exponential of
    the stiff part acts on C(t, t) as the Lyapunov operator y -> K y + y K^T (m x m matrices) or
    2 K (the two-number algebra). Lazy scale (a0 = sqrt(m)) with steps of ~1.5 / rate for the
    trapezoid: there an explicit treatment of C(t, t) was 1.5% off in e_tr."""
    h, tg = single_index()
    m, a0 = 3, (0.8 if stepper == "euler" else np.sqrt(3.0))
    st = dj.Trapezoid() if stepper == "trapezoid" else None
    sym = solve(symmetric_dmft(h, tg, tau=TAU, alpha=ALPHA, m=m, a0=a0), st)
    gen = solve(general_dmft(h, tg, tau=TAU, alpha=ALPHA, a=np.full(m, a0), C=np.eye(m)), st)
    off = ~np.eye(m, dtype=bool)
    for name in ("a", "nu"):
        np.testing.assert_allclose(getattr(gen, name), np.repeat(np.asarray(getattr(sym, name))[:, None], m, 1),
                                   rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(gen.v, np.repeat(np.asarray(sym.v)[:, None], m, 1), atol=1e-12)
    for full, d_part, o_part in ((gen.C, sym.C_d, sym.C_o), (gen.R, sym.R_d, sym.R_o)):
        full = np.asarray(full)
        for i in range(m):
            np.testing.assert_allclose(full[i, i], d_part, atol=1e-12)
        np.testing.assert_allclose(full[off], np.broadcast_to(o_part, (m * (m - 1),) + o_part.shape),
                                   atol=1e-12)
    for name in ("e_tr", "e_ts", "rho", "C_A", "R_A"):
        np.testing.assert_allclose(getattr(gen, name), getattr(sym, name), rtol=1e-12, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("scale", [1e-4, 0.3, 5.0, 80.0, 3000.0])
def test_lyapunov_phi_functions(scale):
    """phi_k(L) y for L y = A y + y A^T by scaling and squaring on m x m matrices equals
    phi_k of the m^2 x m^2 Kronecker matrix (block exponential), from |h K| = 1e-4 (Taylor
    only) to 3000 (12 doublings), also for a non-symmetric A."""
    from dmft_jax._algebra import lyapunov_phi
    from dmft_jax._stepper import phi_matrices
    rng = np.random.default_rng(1)
    m = 3
    g = rng.normal(size=(m, m))
    k = g @ g.T + np.eye(m) + 0.3 * rng.normal(size=(m, m))
    k *= scale / np.linalg.norm(k, 2)
    y = rng.normal(size=(m, m))
    big = np.kron(k, np.eye(m)) + np.kron(np.eye(m), k)        # on row-major vec(y)
    ref = phi_matrices(-jax.numpy.asarray(big))
    for order in (0, 1, 2):
        got = np.asarray(lyapunov_phi(-jax.numpy.asarray(k), jax.numpy.asarray(y), order))
        want = (np.asarray(ref[order]) @ y.reshape(-1)).reshape(m, m)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-13 * np.max(np.abs(want)) + 1e-300,
                                   err_msg=f"phi_{order}")


def test_lyapunov_phi_gradient_at_degenerate_rates():
    """K = c I + d J (the symmetric initialization: eigenvalues repeated): the derivative of
    phi_2(-h L) y in c and d matches central differences (an eigendecomposition's would not)."""
    from dmft_jax._algebra import lyapunov_phi
    m = 4
    y = jax.numpy.asarray(np.eye(m) + 0.2)

    def f(p):
        k = p[0] * jax.numpy.eye(m) + p[1] * jax.numpy.ones((m, m))
        return jax.numpy.sum(lyapunov_phi(-0.5 * k, y, 2) * y)

    p = jax.numpy.asarray([3.0, 1.5])
    grad = np.asarray(jax.grad(f)(p))
    eps = 1e-6
    fd = [(f(p.at[i].add(eps)) - f(p.at[i].add(-eps))) / (2 * eps) for i in range(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-7)


def test_permuted_initialization_gives_permuted_solution():
    """Relabelling the neurons relabels a_i, v_i, C_ij, R_ij; e_tr and e_ts do not change."""
    h, tg = single_index()
    a, C, v = random_init(3, 1, seed=1)
    perm = np.array([2, 0, 1])
    base = solve(general_dmft(h, tg, tau=TAU, alpha=ALPHA, a=a, C=C, v=v))
    moved = solve(general_dmft(h, tg, tau=TAU, alpha=ALPHA, a=a[perm], C=C[np.ix_(perm, perm)],
                               v=v[perm]))
    np.testing.assert_allclose(moved.a, np.asarray(base.a)[:, perm], atol=1e-12)
    np.testing.assert_allclose(moved.v, np.asarray(base.v)[:, perm], atol=1e-12)
    for name in ("C", "R"):
        np.testing.assert_allclose(getattr(moved, name),
                                   np.asarray(getattr(base, name))[np.ix_(perm, perm)], atol=1e-12)
    for name in ("e_tr", "e_ts"):
        np.testing.assert_allclose(getattr(moved, name), getattr(base, name), rtol=1e-12)
    assert not bool(base.diverged)


def test_width_one_matches_symmetric_solver():
    """m = 1: the general and the symmetric DMFT are the same equations (no off-diagonal part)."""
    h, tg = single_index()
    sym = solve(symmetric_dmft(h, tg, tau=TAU, alpha=ALPHA, m=1, a0=1.3))
    gen = solve(general_dmft(h, tg, tau=TAU, alpha=ALPHA, a=[1.3], C=[[1.0]]))
    np.testing.assert_allclose(np.asarray(gen.a)[:, 0], sym.a, atol=1e-12)
    np.testing.assert_allclose(np.asarray(gen.C)[0, 0], sym.C_d, atol=1e-12)
    np.testing.assert_allclose(gen.e_tr, sym.e_tr, rtol=1e-12)


def test_width_one_with_overlap_matches_numpy_reference():
    """m = 1 with v(0) != 0 (no symmetric counterpart) against the independent NumPy solver."""
    h, tg = single_index()
    gen = solve(general_dmft(h, tg, tau=TAU, alpha_bar=ALPHA, a=[0.7], C=[[1.0]], v=[[0.4]]))
    out = ref.solve_general(
        lambda q: 0.9 * q + 0.5 * q**2, lambda q: 0.9 + q, lambda q: np.ones_like(np.asarray(q, float)),
        lambda v: 0.9 * v[0] + 0.5 * v[0] ** 2, lambda v: np.array([0.9 + v[0]]), 1.4, TAU, ALPHA,
        [0.7], [[1.0]], [[0.4]], DT, STEPS)
    np.testing.assert_allclose(gen.a, out["a"], atol=1e-12)
    np.testing.assert_allclose(gen.v, out["v"], atol=1e-12)
    np.testing.assert_allclose(np.moveaxis(np.asarray(gen.C), (0, 1), (2, 3)), out["C"], atol=1e-12)
    np.testing.assert_allclose(gen.e_tr, out["e_tr"], atol=1e-12)
    np.testing.assert_allclose(gen.e_ts, out["e_ts"], atol=1e-12)


# ------------------------------------------------------------------------------ --init validation
BAD_GRAMS = {
    "not symmetric": (np.array([[1.0, 0.2], [0.1, 1.0]]), "not symmetric"),
    "diagonal": (np.array([[1.0, 0.0], [0.0, 0.9]]), "unit diagonal"),
    "not PSD": (np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]),
                "positive semidefinite"),
}


@pytest.mark.parametrize("command", ["solve", "simulate"])
@pytest.mark.parametrize("case", sorted(BAD_GRAMS))
def test_cli_rejects_bad_gram_matrix(tmp_path, capsys, command, case):
    C, words = BAD_GRAMS[case]
    path = tmp_path / "init.npz"
    np.savez(path, a=np.ones(C.shape[0]), C=C)
    rc = main([command, "--init", str(path), "--h", "validation", "--target", "none"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dmft-jax {command}: error: --init")
    assert words in lines[0]
    assert "Traceback" not in err
