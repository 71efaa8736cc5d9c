"""`dmft-jax solve --theory nongaussian`, `compare` and `grad` with the non-Gaussian DMFT
(issue 10, item 6). In-process through `dmft_jax._cli.main`, one small setting shared by every
solve (one compilation): m = 2, 10 Euler steps of dt = 0.1, 800 draws in 8 replicas, the linear
activation sigma = 0.8 z (--h 0,0.64), pure noise, a(0) = (1.2, 0.6), alpha_bar = 2, tau = 0.3
(the setting of tests/test_nongaussian.py's exact linear-sigma identity, spec 6.2).
"""

import dataclasses
import json
import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import dmft_jax as dj  # noqa: E402
from dmft_jax._cli import main  # noqa: E402

A0 = np.array([1.2, 0.6])
DT, STEPS, DRAWS, GROUPS = 0.1, 10, 800, 8
PHYSICS = ["--h", "0,0.64", "--target", "none", "--tau", "0.3", "--alpha", "1.0",
           "--dt", str(DT), "--steps", str(STEPS)]
NG = ["--theory", "nongaussian", "--draws", str(DRAWS), "--groups", str(GROUPS)]


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The init file, and the out files of seeds 0, 0 (again) and 1, and the Gaussian solve."""
    d = tmp_path_factory.mktemp("ng")
    np.savez(d / "init.npz", a=A0, C=np.eye(2))
    init = ["--init", str(d / "init.npz")]
    paths = {}
    for name, extra in (("s0", ["--seed", "0"]), ("again", ["--seed", "0"]),
                        ("s1", ["--seed", "1"]), ("gauss", None)):
        paths[name] = d / f"{name}.npz"
        flags = NG + extra if extra is not None else []
        assert main(["solve"] + PHYSICS + init + flags + ["--out", str(paths[name])]) == 0
    paths["dir"] = d
    return paths


def test_linear_sigma_equals_the_gaussian_solve(files):
    """Spec 6.2: for sigma = 0.8 z the non-Gaussian DMFT is the Gaussian one with h = 0.64 q
    (same grid, Euler): within 4.5 standard errors at every time t > 0 for a, e_tr, C(t, 0)."""
    ng, gauss = np.load(files["s0"]), np.load(files["gauss"])
    assert str(ng["theory"]) == "nongaussian" and "theory" not in gauss.files
    for name, ref in (("a", gauss["a"]), ("e_tr", gauss["e_tr"]),
                      ("C_t0", np.moveaxis(gauss["C"][:, 0], 0, 0))):
        x, se = ng[name][1:], ng[name + "_se"][1:]
        keep = se > 1e-12
        z = np.abs(x - ref[1:])[keep] / se[keep]
        assert keep.mean() > 0.5 and z.max() < 4.5, (name, z.max())


def test_out_file_equals_the_library(files):
    """The out file holds the library's solve of the same seed to 1e-12, and documented
    arrays: standard errors, diagnostics, metadata; no NaN anywhere."""
    f = np.load(files["s0"])
    model = dj.nongaussian_dmft([0.0, 0.64], None, tau=0.3, a=A0, C=np.eye(2), alpha=1.0,
                                draws=DRAWS, key=0, groups=GROUPS)
    sol = dj.solve(model, dj.TimeGrid(DT, STEPS))
    for name in ("t", "a", "v", "nu", "e_tr", "e_ts", "C_t0", "C_tt", "nu_k2", "clipped",
                 "sampling_mismatch", "stiffness", "stiff_fraction", "C_A"):
        np.testing.assert_allclose(f[name], np.asarray(getattr(sol, name)), rtol=1e-12,
                                   atol=1e-14, err_msg=name)
    for name in ("a", "v", "nu", "e_tr", "e_ts", "C_t0", "C_tt", "nu_k2"):
        np.testing.assert_allclose(f[name + "_se"], np.asarray(getattr(sol, name + "_se")),
                                   rtol=1e-12, atol=1e-14, err_msg=name)
    T = STEPS + 1
    np.testing.assert_allclose(f["C"], np.moveaxis(np.asarray(sol.C), (0, 1), (2, 3)),
                               rtol=1e-12, atol=1e-14)
    assert f["C"].shape == f["R"].shape == (T, T, 2, 2) and f["nu_gap"].shape == (T, 2)
    np.testing.assert_allclose(f["nu_gap"], np.abs(f["nu_k2"] - f["nu"]), rtol=1e-15)
    np.testing.assert_allclose(f["C_d0"], f["C_t0"][:, [0, 1], [0, 1]].mean(-1), rtol=1e-12)
    assert "rho" not in f.files and "R_A" not in f.files
    assert (str(f["method"]), int(f["draws"]), int(f["groups"]), int(f["seed"])) == \
        ("pass", DRAWS, GROUPS, 0)
    for name in f.files:
        if f[name].dtype.kind == "f":
            assert np.all(np.isfinite(f[name])), name


def test_seeds(files):
    """The same seed gives the identical file; another seed a different one, within error."""
    a, b, c = (np.load(files[k]) for k in ("s0", "again", "s1"))
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert not np.allclose(a["e_tr"], c["e_tr"])
    for name in ("e_tr", "a", "C_t0"):
        se = np.hypot(a[name + "_se"], c[name + "_se"])[1:]
        assert np.all(np.abs(a[name] - c[name])[1:] <= 4.5 * se + 1e-12), name


def test_json_summary_and_figure(files, capsys, tmp_path):
    """--json: e_tr, e_ts with standard errors at the last time; --plot writes the figure;
    compare overlays a non-Gaussian file (band) with a Gaussian one."""
    code, out, err = _run(capsys, ["solve"] + PHYSICS + NG + [
        "--init", str(files["dir"] / "init.npz"), "--json", "--plot", str(tmp_path / "p.png")])
    assert code == 0 and err == []
    summary = json.loads(out[-1])
    ref = np.load(files["s0"])
    assert summary["theory"] == "nongaussian" and summary["draws"] == DRAWS
    assert summary["e_tr"] == pytest.approx(float(ref["e_tr"][-1]), rel=1e-12)
    assert summary["e_ts_se"] == pytest.approx(float(ref["e_ts_se"][-1]), rel=1e-12)
    assert (tmp_path / "p.png").stat().st_size > 0
    code, out, _ = _run(capsys, ["compare", str(files["s0"]), str(files["gauss"]),
                                 "--observables", "e_tr,e_ts,a,C_d0",
                                 "--out", str(tmp_path / "c.png")])
    assert code == 0 and "2 series" in out[-1] and (tmp_path / "c.png").stat().st_size > 0


def test_path_wise_sampling(files, capsys, tmp_path):
    """--sampling paths (the path-wise weight side, spec 7.5): recorded in the JSON record and
    the out file; nothing clipped; the same physics as the factor construction within the
    Monte Carlo error plus their O(dt) difference (tests/test_nongaussian_paths.py)."""
    out = tmp_path / "paths.npz"
    code, lines, err = _run(capsys, ["solve"] + PHYSICS + NG + [
        "--init", str(files["dir"] / "init.npz"), "--sampling", "paths", "--json",
        "--out", str(out)])
    assert code == 0 and err == [], err
    assert json.loads(lines[-1])["sampling"] == "paths"
    f, ref = np.load(out), np.load(files["s0"])
    assert str(f["sampling"]) == "paths" and str(ref["sampling"]) == "factor"
    assert np.all(f["clipped"] == 0) and np.all(ref["clipped"] >= 0)
    for name in ("e_tr", "a_mean", "C_d0"):
        se = np.hypot(f[name + "_se"], ref[name + "_se"])
        assert np.all(np.abs(f[name] - ref[name]) <= 4 * se + 0.01), name


BAD = [
    (["--t-max", "3"], "--t-max"),
    (["--rtol", "1e-3"], "--rtol"),
    (["--dynamics", "gd", "--lr", "0.5"], "--dynamics gd"),
    (["--activation", "relu"], "relu"),
    (["--phihat", "0,1"], "--phihat"),
    (["--draws", "801"], "--draws"),
    (["--groups", "1"], "--groups"),
    (["--antithetic", "--draws", "808"], "--antithetic"),
    (["--method", "euler"], "--method euler"),
    (["--method", "trapezoid"], "--method trapezoid"),
    (["--tol", "1e-3"], "--tol"),
    (["--batch", "10"], "--batch"),
    (["--method", "fixed-point", "--batch", "30"], "--batch 30"),
    (["--exchangeable", "--a0", "1", "--init", "init.npz"], "--init"),
    (["--exchangeable", "--init", "init.npz"], "--exchangeable"),
    (["--steps", "100000", "--m", "2"], "memory"),
    (["--sampling", "paths", "--control-variates"], "--control-variates"),
    (["--method", "fixed-point", "--sampling", "paths"], "--sampling paths"),
    (["--sampling", "cholesky"], "--sampling"),
]


@pytest.mark.parametrize("extra, culprit", BAD)
def test_bad_invocation_is_one_line(extra, culprit, tmp_path, monkeypatch, capsys):
    """What the non-Gaussian theory cannot do: one line, exit 2, no traceback, no file."""
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "init.npz", a=A0, C=np.eye(2))
    argv = ["solve", "--theory", "nongaussian", "--m", "2", "--steps", "5", "--draws", "800",
            "--groups", "8"] + extra + ["--out", "x.npz"]
    if "--init" in extra:
        argv.remove("--m"), argv.remove("2")
    code, out, err = _run(capsys, argv)
    assert code == 2 and out == [] and len(err) == 1, err
    assert culprit in err[0] and "Traceback" not in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["init.npz"]


@pytest.mark.parametrize("extra", [["--draws", "800"], ["--method", "pass"], ["--seed", "1"],
                                   ["--sampling", "paths"]])
def test_gaussian_solve_refuses_nongaussian_flags(extra, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["solve", "--steps", "5"] + extra + ["--out", "x.npz"])
    assert code == 2 and len(err) == 1 and extra[0] in err[0] and os.listdir(tmp_path) == []


@pytest.mark.gpu  # heavy tier: a compilation of its own (CI time)
@pytest.mark.parametrize("sampling", ["factor", "paths"])
def test_grad_forward_equals_central_differences(sampling, capsys):
    """grad --theory nongaussian (forward mode, fixed draws) against central differences of the
    library's solve with the same seed: h = 0.6 q + 0.4 q^2, phi = sigma, m = 2, 8 steps of
    dt = 0.1, 400 draws in 4 replicas; the value is the library's to 1e-12. Both samplings."""
    argv = ["grad", "--theory", "nongaussian", "--h", "0,0.6,0.4", "--m", "2", "--a0", "1",
            "--alpha", "1", "--tau", "0.3", "--steps", "8", "--dt", "0.1", "--draws", "400",
            "--groups", "4", "--observable", "gap", "--wrt", "a0,tau,alpha",
            "--sampling", sampling]
    code, out, err = _run(capsys, argv)
    assert code == 0 and err == [], err
    res = json.loads(out[-1])
    grid = dj.TimeGrid(0.1, 8)

    @jax.jit
    def gap(a, tau, alpha):
        model = dj.nongaussian_dmft([0.0, 0.6, 0.4], "same", tau=0.3, a=[1.0, 1.0], alpha=1.0,
                                    draws=400, key=0, groups=4, paths=sampling == "paths")
        model = dataclasses.replace(model, a0=a, tau=tau, alpha_bar=2 * alpha)
        sol = dj.solve(model, grid, throw=False)
        return sol.e_ts[-1] - sol.e_tr[-1]

    x = dict(a=jnp.ones(2), tau=jnp.asarray(0.3), alpha=jnp.asarray(1.0))
    assert res["value"] == pytest.approx(float(gap(**x)), rel=1e-12)
    eps = 1e-5
    fd = {}
    for name, key in (("tau", "tau"), ("alpha", "alpha")):
        up, dn = dict(x, **{key: x[key] + eps}), dict(x, **{key: x[key] - eps})
        fd[name] = float(gap(**up) - gap(**dn)) / (2 * eps)
    fd["a0"] = [float(gap(**dict(x, a=x["a"].at[i].add(eps)))
                      - gap(**dict(x, a=x["a"].at[i].add(-eps)))) / (2 * eps) for i in range(2)]
    for name, want in fd.items():
        np.testing.assert_allclose(res["grad"][name], want, rtol=1e-5, atol=1e-9, err_msg=name)
    code, _, err = _run(capsys, argv + ["--mode", "reverse"])
    assert code == 2 and len(err) == 1 and "--mode reverse" in err[0]


@pytest.mark.gpu  # heavy tier: a compilation of its own (CI time)
def test_fixed_point_method(files, tmp_path, capsys):
    """--method fixed-point (dj.nongaussian_fixed_point) converges to the causal pass of the
    same seed within its tolerance, and records its iterations and residuals."""
    out = tmp_path / "fp.npz"
    code, lines, err = _run(capsys, ["solve"] + PHYSICS + NG + [
        "--init", str(files["dir"] / "init.npz"), "--method", "fixed-point", "--tol", "1e-4",
        "--batch", str(DRAWS // GROUPS // 2), "--out", str(out), "--json"])
    assert code == 0 and err == [], err
    assert json.loads(lines[-1])["converged"] is True
    f, ref = np.load(out), np.load(files["s0"])
    assert str(f["method"]) == "fixed-point" and f["fp_iterations"].shape == (GROUPS,)
    assert f["fp_residuals"][-1] <= 1e-4 and np.all(np.isfinite(f["fp_residuals"]))
    for name in ("a", "e_tr", "C_t0"):
        np.testing.assert_allclose(f[name], ref[name], rtol=0, atol=1e-4, err_msg=name)


@pytest.mark.gpu  # heavy tier: a compilation of its own (CI time)
def test_unstable_draws_exit_1_with_one_line(tmp_path, capsys):
    """Draws beyond the per-draw stability bound make the solve fail: exit 1, one line that
    counts them and names a smaller --dt, a JSON record, no file."""
    out = tmp_path / "u.npz"
    code, lines, err = _run(capsys, ["solve", "--theory", "nongaussian", "--h", "0,0.6,0.4",
                                     "--target", "none", "--m", "2", "--alpha", "1",
                                     "--a0", "1.2", "--dt", "1.0", "--steps", "20",
                                     "--draws", "4000", "--groups", str(GROUPS),
                                     "--out", str(out), "--json"])
    assert code == 1 and len(err) == 1 and "went unstable" in err[0] and "--dt" in err[0], err
    record = json.loads(lines[-1])
    assert record["diverged"] is True and record["unstable_draws"] > 0
    assert not out.exists()
