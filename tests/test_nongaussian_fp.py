"""The fixed-point iteration of the non-Gaussian DMFT (`dj.nongaussian_fixed_point`, spec 7.4):
with the same draws it converges to the causal pass's solution (the system is causal on the
grid, so the fixed point is unique and plain iteration reaches it in at most N + 1 iterations),
with any draw batch (the per-draw responses of one batch at a time), with Anderson acceleration
and time windows; the iteration limit gives RESULTS.not_converged; bad options raise.

Small: m = 2, h = 0.6 q + 0.4 q^2 with phi = sigma (a teacher, v(0) != 0), 10 Euler steps of
dt = 0.1, 400 draws in 4 replicas.
"""

import functools

import numpy as np
import pytest

import dmft_jax as dj

GRID = dj.TimeGrid(0.1, 10)
FIELDS = ("a", "v", "nu", "e_tr", "e_ts", "C_t0", "C_tt", "nu_k2", "C", "R", "C_A", "clipped",
          "sampling_mismatch", "stiffness", "e_tr_se", "a_se", "stein_v")


def _model(**kw):
    return dj.nongaussian_dmft([0.0, 0.6, 0.4], "same", tau=0.3, a=[1.2, 0.6],
                               v=[[0.3], [-0.2]], alpha_bar=2.0, draws=400, key=1, groups=4,
                               **kw)


@functools.lru_cache(maxsize=None)
def causal_pass():
    return dj.solve(_model(), GRID)


def _fp(**kw):
    opts = dict(tol=1e-12, max_iter=12, anderson=0, batch=50, throw=False)
    opts.update(kw)
    return dj.nongaussian_fixed_point(_model(), GRID, **opts)


def _max_diff(a, b):
    return max(float(np.nanmax(np.abs(np.asarray(getattr(a, f)) - np.asarray(getattr(b, f)))))
               for f in FIELDS)


def test_plain_iteration_reaches_the_causal_pass_in_at_most_n_plus_1_iterations():
    fp, ref = _fp(), causal_pass()
    assert fp.result == dj.RESULTS.successful
    its = np.asarray(fp.iterations)
    assert np.all(its <= GRID.steps + 1), its
    assert _max_diff(fp, ref) < 1e-11
    # Picard on a causal (Volterra) system: the residual falls faster than geometrically
    res = np.asarray(fp.residuals)[:, :4]
    assert np.all(res[:, 1:] < 0.3 * res[:, :-1]), res


@pytest.mark.gpu  # heavy tier: CI time under load
def test_anderson_and_windows_reach_the_same_fixed_point():
    fp = _fp(tol=1e-11, max_iter=30, anderson=4, window=4, batch=100)
    assert fp.result == dj.RESULTS.successful
    assert _max_diff(fp, causal_pass()) < 1e-9


@pytest.mark.gpu  # heavy tier: CI time under load
def test_iteration_limit_is_not_converged():
    slow = _fp(damping=0.3)                 # same compilation as the plain iteration
    assert slow.result == dj.RESULTS.not_converged
    assert np.all(np.asarray(slow.iterations) == 12)
    res = np.asarray(slow.residuals)
    assert np.all(np.isfinite(res)) and np.all(res[:, -1] > 1e-12)
    with pytest.raises(Exception, match="fixed-point iteration did not converge"):
        _fp(damping=0.3, throw=True)


@pytest.mark.parametrize("kw, match", [
    (dict(tol=0.0), "tol"), (dict(max_iter=0), "max_iter"), (dict(damping=1.5), "damping"),
    (dict(anderson=-1), "anderson"), (dict(window=0), "window"), (dict(batch=30), "batch"),
])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        dj.nongaussian_fixed_point(_model(), GRID, **kw)


def test_needs_a_non_gaussian_model_and_a_grid():
    with pytest.raises(ValueError, match="NonGaussianDMFT"):
        dj.nongaussian_fixed_point(dj.general_dmft([0, 1.0], tau=0.3, a=[1.0], C=[[1.0]],
                                                   alpha=1.0), GRID)
