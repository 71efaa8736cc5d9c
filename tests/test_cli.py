"""The `dmft-jax` command line: agreement with an independent implementation, errors."""

import json
import os
import subprocess
import sys

import chex
import numpy as np
import pytest

import numpy_reference as ref
from dmft_jax._cli import main

CUBIC = [0.0, 0.9, 0.0, 1.0 / 6.0]


def reference(case):
    """The independent NumPy implementation of spec section 6 (benchmarks/numpy_reference.py),
    with h as a NumPy polynomial (eager jnp calls per step would compile hundreds of kernels)."""
    h = np.polynomial.Polynomial(CUBIC)
    dh, d2h = h.deriv(), h.deriv(2)
    f = dict(h=h, dh=dh, d2h=d2h)
    if case["target"] == "none":
        f.update(phihat=None, grad_phihat=None, norm2=0.0)
    else:
        f.update(phihat=lambda v: float(h(v[0])), grad_phihat=lambda v: np.array([dh(v[0])]),
                 norm2=float(h(1.0)))
    m = case["m"]
    a0 = case.get("gamma0", 0) * np.sqrt(m) if "gamma0" in case else case["a0"]
    return ref.solve_symmetric(tau=case["tau"], alpha=case["alpha"], m=m, a0=a0, dt=case["dt"],
                               steps=case["steps"], freeze_a=case.get("freeze", False), **f)


CASES = {
    "pure-noise-lazy": dict(target="none", tau=0.6, alpha=0.4, m=8, gamma0=1.0, dt=0.02, steps=120),
    "frozen-a": dict(target="same", tau=0.3, alpha=0.3, m=6, a0=1.5, dt=0.05, steps=100, freeze=True),
    "single-index-mean-field": dict(target="same", tau=0.3, alpha=0.3, m=16, a0=1.0, dt=0.05,
                                    steps=100),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_solve_out_matches_independent_implementation(name, tmp_path):
    """`dmft-jax solve --out` agrees with the NumPy reference to 1e-8 relative (issue 2)."""
    case = CASES[name]
    out = tmp_path / "sol.npz"
    argv = ["solve", "--h", ",".join(map(str, CUBIC)), "--target", case["target"],
            "--tau", str(case["tau"]), "--alpha", str(case["alpha"]), "--m", str(case["m"]),
            "--dt", str(case["dt"]), "--steps", str(case["steps"]), "--out", str(out)]
    argv += ["--gamma0", str(case["gamma0"])] if "gamma0" in case else ["--a0", str(case["a0"])]
    argv += ["--freeze-a"] if case.get("freeze") else []
    assert main(argv) == 0
    got, want = np.load(out), reference(case)
    for key in ("t", "a", "v", "e_tr", "e_ts", "C_d", "C_o", "R_d", "R_o", "nu"):
        x, y = np.asarray(got[key]), np.asarray(want[key]).reshape(np.shape(got[key]))
        scale = max(np.max(np.abs(y)), 1e-300)  # relative to the array's largest entry
        chex.assert_trees_all_close(x, y, rtol=0.0, atol=1e-8 * scale, custom_message=key)
    chex.assert_shape(got["v"], (case["steps"] + 1, 1))


def test_json_summary(capsys):
    assert main(["solve", "--steps", "20", "--m", "4", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(line)
    assert {"e_tr", "e_ts", "wall_time_s", "compile_time_s"} <= set(summary)
    assert summary["e_tr"] <= summary["e_ts"]


BAD = [
    (["--m", "0"], "--m"),
    (["--dt", "0"], "--dt"),
    (["--dt", "-0.1"], "--dt"),
    (["--steps", "0"], "--steps"),
    (["--alpha", "0"], "--alpha"),
    (["--alpha", "-1"], "--alpha"),
    (["--tau", "-0.5"], "--tau"),
    (["--h", "0,-0.5,1"], "--h"),
    (["--h", "0,0,0"], "--h"),
    (["--phihat", "0,1;0,1", "--k", "3"], "k"),
    (["--m", "two"], "--m"),
    (["--activation", "sigmoid"], "--activation"),
]


@pytest.mark.parametrize("extra,flag", BAD)
def test_bad_input_is_one_line_naming_the_flag(extra, flag, capsys):
    assert main(["solve", "--steps", "5"] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "Traceback" not in err, err


def test_bad_init_file(tmp_path, capsys):
    path = tmp_path / "init.npz"
    np.savez(path, a=np.ones(2), C=np.array([[1.0, 0.3], [0.2, 1.0]]))
    assert main(["solve", "--init", str(path), "--steps", "5"]) == 2
    assert "symmetric" in capsys.readouterr().err
    np.savez(path, a=np.ones(2), C=np.eye(2), v=np.zeros((2, 2)))
    assert main(["solve", "--init", str(path), "--steps", "5"]) == 2
    assert "mismatched k" in capsys.readouterr().err


def test_diverging_solve_names_time_and_step(tmp_path, capsys):
    out = tmp_path / "bad.npz"
    code = main(["solve", "--gamma0", "3", "--dt", "0.5", "--steps", "60", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "diverged at t =" in err and "try --dt" in err
    assert not out.exists()


def test_general_init_writes_documented_layout(tmp_path):
    init, out = tmp_path / "init.npz", tmp_path / "gen.npz"
    C = np.eye(3)
    C[0, 1] = C[1, 0] = 0.5
    np.savez(init, a=np.array([1.0, -0.5, 0.7]), C=C, v=np.array([[0.1], [0.0], [0.2]]))
    assert main(["solve", "--init", str(init), "--steps", "20", "--out", str(out)]) == 0
    got = np.load(out)
    chex.assert_shape([got["a"], got["v"]], [(21, 3), (21, 3, 1)])
    chex.assert_shape([got["C"], got["R"]], (21, 21, 3, 3))
    chex.assert_trees_all_close(got["C"][0, 0], C)


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "dmft_jax", "solve", "--steps", "10", "--m", "2",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "e_ts" in json.loads(proc.stdout.strip().splitlines()[-1])


def test_threshold_prints_one_json_line(capsys):
    """`dmft-jax threshold` (lz2, m = infinity): a JSON line with the documented keys; the fitted
    threshold lies below the scanned (interpolating) values, and t_rel falls with gamma0."""
    code = main(["threshold", "--h", "fig8", "--tau", "1", "--alpha", "0.5", "--range", "1.3,1.8",
                 "--num", "4", "--steps", "400", "--dt", "0.2"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"parameter", "threshold", "threshold_err", "exponent", "exponent_err", "points"} <= set(out)
    assert out["parameter"] == "gamma0" and out["threshold"] < 1.3
    t_rel = [p[1] for p in out["points"]]
    assert all(x > y for x, y in zip(t_rel, t_rel[1:]))


def test_threshold_bad_range(capsys):
    assert main(["threshold", "--range", "1.0"]) == 2
    assert "--range" in capsys.readouterr().err


def test_demo_quick_writes_its_figure(tmp_path):
    """`dmft-jax demo --quick` writes a real figure. Its wide solve (m = 64, adaptive, to
    t = 2) is in the second regime: the test error sits near the plateau [2.7] (within 0.2 at
    m = 64, where its O(m^-1/2) distance is ~0.13) while the train error falls below it; its
    long solve (m = 4) reaches interpolation (e_tr -> 0) with gamma grown above gamma0 = 1
    (third regime)."""
    from dmft_jax._demo import (QUICK, QUICK_HISTORY, QUICK_T_WIDE, QUICK_WIDE, plateau,
                                solve_wide, solve_widths)
    path = tmp_path / "demo.png"
    assert main(["demo", "--quick", "--out", str(path)]) == 0
    assert path.stat().st_size > 20_000
    res = solve_widths(QUICK[:1], log=lambda s: None)[4]
    assert res["e_tr"][-1] < 1e-3 < res["e_ts"][-1] and res["gamma"][-1] > 1.3
    wide = solve_wide(QUICK_WIDE, QUICK_T_WIDE, log=lambda s: None, history=QUICK_HISTORY)[64]
    assert wide["t"][-1] == QUICK_T_WIDE
    assert abs(wide["e_ts"][-1] - plateau(2.5)) < 0.2
    assert wide["e_tr"][-1] < plateau(2.5) - 1.0 and np.all(np.diff(wide["e_tr"]) <= 1e-12)


def test_threshold_without_range_finds_the_interpolating_side(capsys):
    """`dmft-jax threshold` without --range (lz2, gamma0 scan): the automatic search brackets
    the relaxation boundary (the last relaxed value relaxes within its horizon, the first
    value beyond it does not: checked by solving both again), every reported point relaxed
    within the horizon, none left unrelaxed, and the fitted threshold lies beyond the bracket
    (t_rel diverges there); progress lines go to stderr."""
    from dmft_jax._threshold import relaxation_scan
    code = main(["threshold", "--h", "fig8", "--tau", "1", "--alpha", "0.5", "--num", "4",
                 "--steps", "320", "--dt", "0.2"])
    captured = capsys.readouterr()
    assert code == 0
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert "bracket:" in captured.err and "scan:" in captured.err
    assert out["range"] == "auto" and out["parameter"] == "gamma0" and not out["unrelaxed"]
    t_rel = np.array([p[1] for p in out["points"]])
    assert len(t_rel) >= 3 and np.all(np.isfinite(t_rel)) and np.all(t_rel <= 64.0)
    relaxed, beyond = out["bracket"]
    assert beyond < relaxed                                     # gamma0: relaxes above x*
    assert out["threshold"] < beyond
    # the bracket at the horizon it was found on (T or T/2): relaxed, then not relaxed
    for steps in (320, 160):
        _, _, t = relaxation_scan([0.0, 0.3, 0.5], parameter="gamma0", values=[relaxed, beyond],
                                  alpha=0.5, dt=0.2, steps=steps, batch=4)   # compiled above
        if np.isfinite(t[0]) and np.isinf(t[1]):
            break
    else:
        raise AssertionError(f"not a bracket at either horizon: {t}")


def test_entry_point_chooses_the_cpu_code_generator(monkeypatch):
    """`dmft-jax` as the process's entry point adds --xla_cpu_use_fusion_emitters=false to
    XLA_FLAGS on the jaxlib releases it was measured on, keeps a value the user gave, and
    stays out with DMFT_JAX_XLA_DEFAULTS=1 or on other releases."""
    import importlib.metadata

    from dmft_jax import _cli

    def flags_after(env: dict, release: str) -> str:
        for key in ("XLA_FLAGS", "DMFT_JAX_XLA_DEFAULTS"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(importlib.metadata, "version", lambda name: release)
        _cli._cpu_codegen()
        return os.environ.get("XLA_FLAGS", "")

    ours = "--xla_cpu_use_fusion_emitters=false"
    assert flags_after({"XLA_FLAGS": "--a=1"}, "0.10.2") == "--a=1 " + ours
    assert flags_after({}, "0.10.7") == ours
    kept = "--xla_cpu_use_fusion_emitters=true"
    assert flags_after({"XLA_FLAGS": kept}, "0.10.2") == kept
    assert flags_after({"DMFT_JAX_XLA_DEFAULTS": "1"}, "0.10.2") == ""
    assert flags_after({}, "0.12.0") == ""
