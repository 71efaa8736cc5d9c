"""Mean-field ODEs [G.44] and per-neuron [3.4] (spec section 7) on the common stepping loop."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dmft_jax._covariance import target as make_target  # noqa: E402
from dmft_jax._dmft import symmetric_dmft  # noqa: E402
from dmft_jax._grid import TimeGrid  # noqa: E402
from dmft_jax._integrate import solve  # noqa: E402
from dmft_jax._meanfield import mean_field_model, mean_field_neurons_model  # noqa: E402

CUBIC = [0.0, 0.9, 0.0, 1.0 / 6.0]
FIG4 = dict(tau=0.3, alpha=0.3, a0=1.0)      # spec section 9, figure 4
N, DT = 200, 0.025


def test_mean_field_ode_vs_dmft_error_one_over_m():
    """a, v, e_ts, e_tr of the symmetric DMFT (a0 = 1, phi = sigma) approach [G.44] as 1/m
    (t <= 5; e_tr = -C_A(t,t)/2 carries an extra O(dt) offset of the discretized DMFT)."""
    tgt = make_target("same", CUBIC)
    ode = solve(mean_field_model(CUBIC, tgt, **FIG4), TimeGrid(DT, N))
    ms = (20, 80, 320)
    errs = {k: [] for k in ("a", "v", "e_ts", "e_tr")}
    for m in ms:
        sol = solve(symmetric_dmft(CUBIC, tgt, m=m, **FIG4), TimeGrid(DT, N))
        errs["a"].append(float(jnp.max(jnp.abs(sol.a - ode.a))))
        errs["v"].append(float(jnp.max(jnp.abs(sol.v - ode.v))))
        errs["e_ts"].append(float(jnp.max(jnp.abs(sol.e_ts - ode.e_ts))))
        errs["e_tr"].append(float(jnp.max(jnp.abs(sol.e_tr - ode.e_tr))))
    print("\nmean-field ODE [G.44] vs DMFT (t <= 5):")
    for name, e in errs.items():
        slope = np.polyfit(np.log(ms), np.log(e), 1)[0]
        print(f"  {name:5s} " + "  ".join(f"m={m}: {x:.3e}" for m, x in zip(ms, e))
              + f"  slope {slope:.2f}  m*err {[round(m * x, 3) for m, x in zip(ms, e)]}")
        assert all(b < a for a, b in zip(e, e[1:]))
        assert slope < (-0.7 if name == "e_tr" else -0.85)      # error ~ 1/m


def test_mean_field_converges_to_bayes():
    """k = 1, phihat = h, h'(0) > 0: (a, v) -> (1, 1) (slowly) and e -> tau^2 / 2 [G.44]."""
    tgt = make_target("same", CUBIC)
    sol = solve(mean_field_model(CUBIC, tgt, **FIG4), TimeGrid(1.0, 400))
    assert abs(float(sol.a[-1]) - 1) < 0.02 and abs(float(sol.v[-1, 0]) - 1) < 0.02
    assert abs(float(sol.e_ts[-1]) - 0.5 * FIG4["tau"] ** 2) < 1e-4
    assert float(jnp.max(jnp.diff(sol.e_ts))) <= 1e-12           # gradient flow


def test_neurons_identical_equal_symmetric_and_descend():
    tgt = make_target("same", CUBIC)
    grid = TimeGrid(DT, 100)
    sym = solve(mean_field_model(CUBIC, tgt, **FIG4), grid)
    same = solve(mean_field_neurons_model(CUBIC, tgt, tau=0.3, alpha=0.3, a0=np.ones(3),
                                          v0=np.zeros((3, 1))), grid)
    assert float(jnp.max(jnp.abs(same.a - sym.a[:, None]))) < 1e-14
    assert float(jnp.max(jnp.abs(same.e_ts - sym.e_ts))) < 1e-14
    rng = np.random.default_rng(0)
    a0, v0 = rng.normal(size=4), rng.uniform(-0.5, 0.5, size=(4, 1))
    mixed = solve(mean_field_neurons_model(CUBIC, tgt, tau=0.3, alpha=0.3, a0=a0, v0=v0), grid)
    assert float(jnp.max(jnp.diff(mixed.e_ts))) <= 1e-12        # error never increases
    assert float(jnp.max(jnp.abs(mixed.v))) <= 1 + 1e-6          # stays in the unit ball
    e0 = 0.5 * (0.09 + 1.0666666666666667 - 2 * np.mean(a0 * (0.9 * v0[:, 0] + v0[:, 0] ** 3 / 6))
                + np.mean(np.outer(a0, a0) * (0.9 * (v0 @ v0.T) + (v0 @ v0.T) ** 3 / 6)))
    assert abs(float(mixed.e_ts[0]) - e0) < 1e-12


def test_meanfield_rejects_bad_shapes():
    tgt = make_target("same", CUBIC)
    with pytest.raises(ValueError):
        mean_field_model(CUBIC, tgt, tau=0.3, alpha=0.3, a0=1.0, v0=np.zeros(2))
    with pytest.raises(ValueError):
        mean_field_neurons_model(CUBIC, tgt, tau=0.3, alpha=0.3, a0=np.ones(3), v0=np.zeros((2, 1)))
