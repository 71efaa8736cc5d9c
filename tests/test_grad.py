"""Exact hyperparameter derivatives of DMFT observables (`dmft_jax._adjoint`), the
trainer's meta-gradients (`dmft_jax._trainer_grad`) and `dmft-jax grad`.

Every derivative is checked against central finite differences of the solver itself (a fourth
order stencil on the primal output of the compiled solve at perturbed parameters), to 1e-5
relative in float64.
"""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dmft_jax import _adjoint as adj  # noqa: E402
from dmft_jax import _cli  # noqa: E402
from dmft_jax import _observables as obs  # noqa: E402
from dmft_jax._covariance import covariance, target  # noqa: E402
from dmft_jax._dmft import general_dmft, symmetric_dmft  # noqa: E402
from dmft_jax._grid import TimeGrid  # noqa: E402
from dmft_jax._stepper import Euler, Trapezoid  # noqa: E402
from dmft_jax._network import problem  # noqa: E402
from dmft_jax._train import Protocol  # noqa: E402
from dmft_jax._trainer_grad import trainer_value, trainer_value_and_grad  # noqa: E402

H = [0.0, 0.9, 0.5, 0.1]
PHIHAT = [0.0, 0.8, 0.3]
STEPS, DT, T = 24, 0.05, 0.83   # T / dt = 16.6: between grid points
RTOL_FD = 1e-5

SYM_WRT = ("a0", "gamma0", "tau", "alpha", "alpha_bar", "h1", "h2", "h3", "h4", "phihat1",
           "phihat2", "norm2", "dt")
GEN_WRT = ("a0", "gamma0", "tau", "alpha", "h1", "h2", "h3", "phihat1", "phihat2", "phihat3",
           "norm2", "dt")


def probe(sol):
    """A scalar that depends on every part of the solution (C_A, a, v, C, R through e_ts)."""
    return (obs.e_ts(sol, T) + 0.5 * obs.e_tr(sol, T) + 0.3 * jnp.sum(obs.gamma(sol, T))
            + 0.2 * jnp.sum(obs.v(sol, T)) + 0.1 * obs.min_e_ts(sol, temperature=0.05))


def _target():
    return target(PHIHAT, H, norm2=1.0)


def symmetric():
    return symmetric_dmft(covariance(H), _target(), tau=0.3, alpha=0.5, m=3, a0=0.9)


def general():
    a = [0.8, 1.1]
    C = [[1.0, 0.3], [0.3, 1.0]]
    v = [[0.1], [0.0]]
    return general_dmft(covariance(H), _target(), tau=0.3, alpha=0.5, a=a, C=C, v=v)


def finite_differences(model, grid, wrt, observable=probe):
    """Central differences (4th order) of the solve, per parameter entry.

    The solve is the primal output of the compiled forward-mode program, run on eagerly
    perturbed models: no derivative enters the differences.
    """
    zeros = adj.zero_perturbations(model, grid, wrt)
    out = {}
    for name, zero in zeros.items():
        eps = 1e-5 if name == "dt" else 1e-4
        grad = np.zeros(zero.shape)
        for idx in np.ndindex(zero.shape):
            def at(x):
                mod, grd = adj.perturbed(model, grid, {name: zero.at[idx].set(x)})
                return float(adj.value_and_jvp(observable, mod, grd, wrt, zeros)[0])
            grad[idx] = (8 * (at(eps) - at(-eps)) - (at(2 * eps) - at(-2 * eps))) / (12 * eps)
        out[name] = grad
    return out


def _assert_fd(grads, fd):
    for name, want in fd.items():
        got = np.asarray(grads[name])
        err = np.max(np.abs(got - want) / (np.abs(want) + 1e-9))
        assert err < RTOL_FD, f"{name}: gradient {got} vs finite differences {want} ({err:.2e})"


def _case(name):
    model = symmetric() if name == "symmetric" else general()
    wrt = SYM_WRT if name == "symmetric" else GEN_WRT
    grid = TimeGrid(DT, STEPS)
    # Pad the coefficients of h, phihat up to the largest p in wrt (what the derivative code
    # does inside), so that the perturbed models of the finite differences share one shape.
    model, grid = adj.perturbed(model, grid, adj.zero_perturbations(model, grid, wrt))
    # The symmetric reverse pass runs on 2 causal chunks (a windowed backward loop, as in every
    # solve of >= dj.CHUNK_FROM steps); the general one on a single loop.
    chunks = 2 if name == "symmetric" else None
    rev = adj.lower(probe, model, grid, wrt, "reverse", chunks).compile()
    return dict(name=name, model=model, grid=grid, wrt=wrt,
                reverse=adj.value_and_grad(probe, model, grid, wrt, "reverse", chunks),
                memory=rev.compiled.memory_analysis().temp_size_in_bytes,
                forward=adj.value_and_grad(probe, model, grid, wrt, mode="forward"),
                fd=finite_differences(model, grid, wrt))


@pytest.fixture(scope="module")
def symmetric_case():
    return _case("symmetric")


@pytest.fixture(scope="module")
def general_case():
    return _case("general")


# Both cases run in the heavy tier (`-m gpu`): their forward, reverse and 13-parameter
# finite-difference compilations take ~35 s (symmetric) and ~25 s (general) of the CPU suite.
# The CPU suite keeps `dmft-jax grad` against finite differences of the solve (below), the
# discrete-GD and the trainer's gradients against finite differences.
@pytest.fixture(params=[pytest.param("symmetric_case", marks=pytest.mark.gpu),
                        pytest.param("general_case", marks=pytest.mark.gpu)])
def case(request):
    return request.getfixturevalue(request.param)


def test_forward_matches_finite_differences(case):
    _assert_fd(case["forward"][1], case["fd"])


def test_reverse_matches_finite_differences(case):
    _assert_fd(case["reverse"][1], case["fd"])


def test_reverse_equals_forward(case):
    (vf, gf), (vr, gr) = case["forward"], case["reverse"]
    np.testing.assert_allclose(vr, vf, rtol=1e-13)
    for name in case["wrt"]:
        np.testing.assert_allclose(gr[name], gf[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_shapes_and_chain_rules(case):
    model, grads = case["model"], case["forward"][1]
    assert grads["a0"].shape == np.shape(model.a0)
    m = model.m
    np.testing.assert_allclose(grads["gamma0"], np.sqrt(m) * grads["a0"], rtol=1e-12)
    if "alpha_bar" in grads:
        np.testing.assert_allclose(grads["alpha"], m * grads["alpha_bar"], rtol=1e-12)


@pytest.mark.gpu
def test_reverse_memory_is_quadratic(general_case):
    """temp bytes of the compiled reverse pass at N and 2N: ratio ~4 (O(N^2)), not ~8.
    (Heavy: one more reverse compilation, ~14 s on the 2-core CPU; the reverse pass's memory
    is also measured by benchmarks/grad_cost.py.)"""
    case = general_case
    big = TimeGrid(DT, 2 * STEPS)
    args = (probe, case["model"], big, case["wrt"], "reverse", None)
    temp2 = adj.lower(*args).compile().compiled.memory_analysis().temp_size_in_bytes
    ratio = temp2 / case["memory"]
    assert 2.5 < ratio < 5.0, f"temp {case['memory']} -> {temp2} bytes (ratio {ratio:.2f})"
    # In units of the history itself (2 m^2 + 2 two-time buffers of L x L float64).
    history = (2 * case["model"].m ** 2 + 2) * 8 * (STEPS + 1) ** 2
    assert case["memory"] < 10 * history, f"temporaries {case['memory'] / history:.1f} histories"


@pytest.fixture(scope="module")
def solved():
    model, grid = symmetric(), TimeGrid(DT, STEPS)
    final = jax.jit(adj.final_state, static_argnums=3)(model, grid, Euler(), None)
    return model, grid, final


@pytest.mark.parametrize("stepper", [Euler(), Trapezoid()], ids=["euler", "trapezoid"])
def test_state_before_rebuilds_each_step(stepper):
    """Masking the final history gives the state before step n (every entry is written once,
    also by the predictor-corrector, which clears its provisional row), for every n and for
    the final row."""
    model, grid = symmetric(), TimeGrid(DT, STEPS)
    final = jax.jit(adj.final_state, static_argnums=3)(model, grid, stepper, None)
    assert model.advancing() == {"a", "v", "C", "R"}

    @jax.jit
    def replay(final):
        # (state after n steps, masked final history) for n = 0..N - 1, then the final row N;
        # the final history peeled step by step (`unwrite`, as the backward pass does).
        def body(s, n):
            nxt = stepper.step(model, n, s, grid.ts).state
            return nxt, (s, adj.state_before(model, final, n))
        last, pairs = jax.lax.scan(body, model.init(grid.size), jnp.arange(grid.steps))
        last = model.row(grid.steps, last, stepper.quadrature.weights(grid.ts, grid.steps))[0]

        def peel(s, n):
            s = adj.unwrite(model, s, n)
            return s, s
        _, peeled = jax.lax.scan(peel, model.clear_aux(grid.steps, final),
                                 jnp.arange(grid.steps - 1, -1, -1))
        return pairs, last, jtu.tree_map(lambda x: x[::-1], peeled)

    (want, got), last, peeled = replay(final)
    for a, b, c in zip(jtu.tree_leaves(got), jtu.tree_leaves(want), jtu.tree_leaves(peeled)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-16)
        np.testing.assert_array_equal(a == 0, b == 0)
        np.testing.assert_array_equal(a, c)
    # The final row N writes the auxiliaries of row N only: the backward pass relies on it.
    for a, b in zip(jtu.tree_leaves(last), jtu.tree_leaves(final)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-16)


def test_observables(solved):
    model, grid, final = solved

    @jax.jit
    def values(final):
        sol = model.solution(final, grid.ts)
        return sol, dict(at=obs.e_ts(sol, T), end=obs.e_ts(sol), node=obs.e_ts(sol, 2 * DT),
                         many=obs.e_ts(sol, jnp.array([0.0, T])), gap=obs.gap(sol, T),
                         e_tr=obs.e_tr(sol, T), min=obs.min_e_ts(sol),
                         soft=obs.min_e_ts(sol, temperature=1e-4),
                         t_soft=obs.argmin_time(sol, temperature=1e-6),
                         t_min=obs.argmin_time(sol))

    sol, out = values(final)
    e = np.asarray(sol.e_ts)
    i = int(np.floor(T / DT))
    w = T / DT - i
    np.testing.assert_allclose(out["at"], (1 - w) * e[i] + w * e[i + 1], rtol=1e-14)
    np.testing.assert_allclose(out["end"], e[-1])
    np.testing.assert_allclose(out["node"], e[2], rtol=1e-14)
    np.testing.assert_allclose(out["many"], [e[0], out["at"]], rtol=1e-14)
    np.testing.assert_allclose(out["gap"], out["at"] - out["e_tr"], rtol=1e-14)
    assert out["min"] == e.min()
    assert e.min() - 1e-4 * np.log(STEPS + 1) - 1e-12 <= out["soft"] <= e.mean()
    assert abs(out["t_soft"] - out["t_min"]) < 1e-9 and out["t_min"] == sol.t[np.argmin(e)]


def test_bad_names():
    model, grid = symmetric(), TimeGrid(DT, 4)
    with pytest.raises(ValueError, match="unknown parameter 'beta'"):
        adj.parse_wrt("a0,beta")
    with pytest.raises(ValueError, match="mode"):
        adj.value_and_grad(probe, model, grid, "a0", mode="sideways")
    with pytest.raises(ValueError, match="polynomial"):
        adj.zero_perturbations(symmetric_dmft("erf", tau=0.1, alpha=0.5, m=2, a0=1.0), grid, "h1")


# ------------------------------------------------------------------------------- the trainer
def test_trainer_meta_gradient_matches_finite_differences():
    """d/d(a0, lr, tau) of the seed-averaged test error at a gradient-flow time, through 20
    projected GD steps, against finite differences of the trainer with the same seeds."""
    prob, proto = problem(H[:3], "same"), Protocol(m=3, d=16, steps=20, record_every=5)
    keys = jr.split(jr.PRNGKey(0), 2)
    hyper = dict(a0=1.0, lr=0.2, tau=0.3, alpha=0.5)
    observable = jtu.Partial(obs.e_ts, time=0.9)   # records every 0.42: between two of them
    value, grads = trainer_value_and_grad(observable, keys, prob, proto, **hyper,
                                          wrt="a0,lr,tau")
    np.testing.assert_allclose(value, trainer_value(observable, keys, prob, proto, **hyper),
                               rtol=1e-13)
    for name in ("a0", "lr", "tau"):
        def at(x):
            return float(trainer_value(observable, keys, prob, proto,
                                       **dict(hyper, **{name: hyper[name] + x})))
        eps = 1e-4
        fd = (8 * (at(eps) - at(-eps)) - (at(2 * eps) - at(-2 * eps))) / (12 * eps)
        assert abs(grads[name] - fd) < RTOL_FD * abs(fd), (name, float(grads[name]), fd)


# ----------------------------------------------------------------------------------- the CLI
CLI_FLAGS = ["--h", "0,0.9,0.5", "--phihat", "0,0.8,0.3", "--phi-norm2", "1.0", "--tau", "0.3",
             "--alpha", "0.5", "--m", "3", "--steps", "16", "--dt", "0.05"]


def _run(capsys, argv):
    code = _cli.main(argv)
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip()


def test_cli_grad_matches_finite_differences_of_solve(capsys):
    code, lines, _ = _run(capsys, ["grad", *CLI_FLAGS, "--a0", "0.9", "--wrt", "a0,tau",
                                   "--mode", "forward"])
    assert code == 0 and len(lines) == 1
    out = json.loads(lines[0])
    assert set(out) >= {"value", "grad", "mode", "seconds"} and out["mode"] == "forward"

    def e_ts(a0=0.9, tau=0.3):
        flags = [f if f != "0.3" else str(tau) for f in CLI_FLAGS]
        code, lines, _ = _run(capsys, ["solve", *flags, "--a0", repr(a0), "--json"])
        assert code == 0
        return json.loads(lines[-1])["e_ts"]

    eps = 1e-4
    assert abs(out["value"] - e_ts()) < 1e-13
    for name, fd in (("a0", (e_ts(a0=0.9 + eps) - e_ts(a0=0.9 - eps)) / (2 * eps)),
                     ("tau", (e_ts(tau=0.3 + eps) - e_ts(tau=0.3 - eps)) / (2 * eps))):
        assert abs(out["grad"][name] - fd) < RTOL_FD * abs(fd), (name, out["grad"][name], fd)
    # the custom adjoint (reverse mode) gives the same derivatives
    code, lines, _ = _run(capsys, ["grad", *CLI_FLAGS, "--a0", "0.9", "--wrt", "a0,tau",
                                   "--mode", "reverse"])
    assert code == 0 and json.loads(lines[0])["mode"] == "reverse"
    for name in ("a0", "tau"):
        np.testing.assert_allclose(json.loads(lines[0])["grad"][name], out["grad"][name],
                                   rtol=1e-10, err_msg=name)


@pytest.mark.parametrize("argv, flag", [
    (["--wrt", "a0,bogus"], "--wrt"),
    (["--observable", "bogus"], "--observable"),
    (["--mode", "sideways"], "--mode"),
    (["--observable", "min_e_ts", "--time", "0.5"], "--time"),
    (["--time", "99"], "--time"),
    (["--temperature", "0.1"], "--temperature"),
])
def test_cli_grad_bad_input_names_the_flag(capsys, argv, flag):
    code, lines, err = _run(capsys, ["grad", *CLI_FLAGS, *argv])
    assert code == 2 and not lines
    assert len(err.splitlines()) == 1 and flag in err and err.startswith("dmft-jax grad: error:")
