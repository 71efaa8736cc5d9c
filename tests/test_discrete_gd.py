"""The library's exact DMFT of discrete-time projected GD (`dmft_jax.DiscreteGD`, a `Map`
model on the shared loop; docs/discrete_gd.md [G.1]-[G.13]).

Checked against the independent NumPy reference (tests/reference/discrete_gd_numpy.py) in both
neuron algebras, with a target and a frozen second layer; first-order convergence to the flow
DMFT as the step goes to 0 (fitted slope); gradients in both modes against central finite
differences; vmap equals a loop.
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dmft_jax as dj
from helpers import loglog_slope

_HERE = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("discrete_gd_numpy",
                                               _HERE / "reference" / "discrete_gd_numpy.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

QUAD = [0.0, 0.9, 0.5]          # h = phihat = 0.9 q + q^2 / 2
NOISE = [0.0, 0.1, 0.5]         # the setting: h = q/10 + q^2/2


def _np_kernel(c):
    c1, c2 = c[1], c[2]
    return (lambda q: c1 * q + c2 * q**2, lambda q: c1 + 2 * c2 * q,
            lambda q: 2 * c2 * np.ones_like(np.asarray(q, float)))


def test_symmetric_matches_reference_with_target_and_frozen_layer():
    h, dh, d2h = _np_kernel(QUAD)
    ph, gph = (lambda v: h(v[0])), (lambda v: np.array([dh(v[0])]))
    for freeze in (False, True):
        model = dj.symmetric_dmft(QUAD, dj.target("same", QUAD), tau=0.3, alpha=0.3, m=4,
                                  a0=1.0, freeze_a=freeze)
        sol = dj.solve(dj.DiscreteGD(model), dj.TimeGrid(0.8, 15))
        r = ref.solve_symmetric(h, dh, d2h, ph, gph, h(1.0), 0.3, 1.2, 4, 1.0, 0.8, 15,
                                freeze_a=freeze)
        for key in ("a", "nu", "rho", "e_tr", "e_ts"):
            np.testing.assert_allclose(np.asarray(getattr(sol, key)).reshape(r[key].shape),
                                       r[key], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(np.moveaxis(np.asarray(sol.C), 0, -1), r["C"], atol=1e-13)
        np.testing.assert_allclose(np.moveaxis(np.asarray(sol.R), 0, -1), r["R"], atol=1e-13)


def test_general_matches_reference():
    """Spec section 9 "setting 2": independent w_i, a = (-1, -1/2, 1/3, 2/3), pure noise."""
    h, dh, d2h = _np_kernel(NOISE)
    a = np.array([-1.0, -0.5, 1.0 / 3.0, 2.0 / 3.0])
    model = dj.general_dmft(NOISE, None, tau=1.0, a=a, C=np.eye(4), alpha_bar=1.5)
    sol = dj.solve(dj.DiscreteGD(model), dj.TimeGrid(1.0, 12))
    r = ref.solve_general(h, dh, d2h, None, None, 0.0, 1.0, 1.5, a, np.eye(4), None, 1.0, 12)
    for key in ("a", "e_tr", "e_ts"):
        np.testing.assert_allclose(np.asarray(getattr(sol, key)), r[key], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.moveaxis(np.asarray(sol.C), (0, 1), (2, 3)), r["C"],
                               atol=1e-13)


def test_reduces_to_the_flow_at_first_order():
    """|GD(eta) - flow| at t = 1 shrinks like eta: fitted slope in (0.9, 1.1) for a, e_tr and
    C_d(t, 0) in the issue's pure-noise setting. The flow is the second-order Trapezoid at
    dt = 1/200 (its error, ~1e-7, is 2000x below the smallest GD offset, ~2e-4). The GD solves
    share one compilation: 40 steps for every eta, read at the step k = 1/eta where t = 1."""
    model = dj.symmetric_dmft(NOISE, None, tau=1.0, alpha=1.5 / 4, m=4, a0=1.0)
    flow = dj.solve(model, dj.TimeGrid(1.0 / 200, 200), dj.Trapezoid(), chunks=1)
    etas = (0.1, 0.05, 0.025)
    sols = [(dj.solve(dj.DiscreteGD(model), dj.TimeGrid(eta, 40)), int(round(1.0 / eta)))
            for eta in etas]
    for name in ("a", "e_tr", "C_d0"):
        errs = [abs(float(getattr(s, name)[k]) - float(getattr(flow, name)[-1]))
                for s, k in sols]
        slope = loglog_slope(etas, errs)
        assert 0.9 < slope < 1.1, (name, errs, slope)


@pytest.mark.parametrize("mode", ["forward", pytest.param("reverse", marks=pytest.mark.gpu)])
def test_vmap_over_steps_equals_a_loop_and_gradients_match_fd(mode):
    """vmap over the step size equals a loop; d e_tr / d a0 (forward mode in the CPU suite,
    reverse mode, whose adjoint compiles for ~15 s, in the heavy tier) equals central
    differences."""
    model = dj.symmetric_dmft(NOISE, None, tau=1.0, alpha=1.5 / 4, m=4, a0=1.0)

    def final(eta, a0):
        mod = dj.symmetric_dmft(NOISE, None, tau=1.0, alpha=1.5 / 4, m=4, a0=a0)
        return dj.solve(dj.DiscreteGD(mod), dj.TimeGrid(eta, 10)).e_tr[-1]

    etas = jnp.array([0.25, 0.5, 1.0])
    batched = jax.vmap(lambda e: final(e, 1.0))(etas)
    np.testing.assert_allclose(batched, [final(e, 1.0) for e in etas], rtol=1e-13)
    grid = dj.TimeGrid(0.5, 10)
    value, grads = dj.value_and_grad(dj.observables.e_tr, dj.DiscreteGD(model), grid,
                                     wrt="a0,tau", mode=mode)
    eps = 1e-5
    fd = (final(0.5, 1.0 + eps) - final(0.5, 1.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(grads["a0"], fd, rtol=1e-6)
    assert float(value) == pytest.approx(float(final(0.5, 1.0)), rel=1e-13)
