"""`dmft-jax solve --t-max` (issue 9): the adaptive solve on the command line. Its out file
equals the library's adaptive solve, documents its non-uniform times, resumes from a
checkpoint, and stops (exit 1) rather than return a history coarser than the tolerance."""

import json

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import dmft_jax as dj  # noqa: E402
from dmft_jax._cli import main  # noqa: E402

H = [0.0, 0.9, 0.0, 1.0 / 6.0]
#: Fig. 4's setting at m = 4; every run below shares one compilation (history 128).
FLAGS = ["solve", "--h", ",".join(map(str, H)), "--tau", "0.3", "--alpha", "0.3", "--m", "4",
         "--a0", "1", "--rtol", "1e-4", "--atol", "1e-6", "--history", "128",
         "--max-steps", "400", "--json"]


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def test_out_file_layout_matches_the_library_and_resumes(tmp_path, capsys):
    """t_max = 3 (no decimation): the one-time arrays on every accepted step equal
    `dj.solve(model, dj.Adaptive(...))` to 1e-12; two-time arrays on t_stored; --save-at
    interpolates; a second run with the same --checkpoint resumes ("resumed": true) and writes
    the same arrays."""
    out, ck = tmp_path / "a.npz", tmp_path / "ck.npz"
    code, lines, _ = _run(capsys, FLAGS + ["--t-max", "3", "--out", str(out),
                                           "--checkpoint", str(ck)])
    assert code == 0 and ck.exists()
    summary = json.loads(lines[-1])
    assert summary["resumed"] is False and summary["decimations"] == 0
    f = np.load(out)
    n = summary["accepted"]
    assert f["t"].shape == (n + 1,) and f["t"][-1] == 3.0 and np.all(np.diff(f["t"]) > 0)
    assert np.array_equal(f["t"], f["t_steps"]) and np.array_equal(f["t"], f["t_stored"])
    assert f["C_d"].shape == (n + 1, n + 1) and "t_stored" in str(f["layout"])
    assert json.loads(str(f["stats"]))["accepted"] == n

    model = dj.symmetric_dmft(dj.covariance(H), dj.target("same", H), tau=0.3, alpha=0.3, m=4,
                              a0=1.0)
    sol = dj.solve(model, dj.Adaptive(3.0, rtol=1e-4, atol=1e-6, max_steps=400, history=128))
    assert int(sol.stats["accepted"]) == n
    for key in ("t", "a", "e_tr", "e_ts", "C_d0"):
        np.testing.assert_allclose(f[key], np.asarray(getattr(sol, key))[: n + 1], rtol=1e-12,
                                   err_msg=key)

    again = tmp_path / "b.npz"
    code, lines, _ = _run(capsys, FLAGS + ["--t-max", "3", "--out", str(again),
                                           "--checkpoint", str(ck)])
    assert code == 0 and json.loads(lines[-1])["resumed"] is True
    g = np.load(again)
    for key in ("t", "a", "e_tr", "C_d", "R_o"):
        assert np.array_equal(f[key], g[key]), key

    saved = tmp_path / "s.npz"
    assert main(FLAGS + ["--t-max", "3", "--save-at", "0.5,1,2.5", "--out", str(saved)]) == 0
    s = np.load(saved)
    np.testing.assert_array_equal(s["t"], [0.0, 0.5, 1.0, 2.5])
    np.testing.assert_allclose(s["e_tr"], np.interp(s["t"], f["t"], f["e_tr"]), rtol=1e-12)


def test_a_history_coarser_than_the_tolerance_is_an_error(tmp_path, capsys):
    """t_max = 12 needs more than 128 stored times: the decimation would drop times that
    interpolation misses by more than the tolerance, so the solve stops with one line and exit
    1 (no file); --max-decimation-error 1e6 accepts the coarser history (and warns)."""
    out = tmp_path / "c.npz"
    code, _, err = _run(capsys, FLAGS + ["--t-max", "12", "--out", str(out)])
    assert code == 1 and not out.exists()
    assert any("history" in line and "error:" in line for line in err), err
    code, lines, err = _run(capsys, FLAGS + ["--t-max", "12", "--max-decimation-error", "1e6",
                                             "--out", str(out)])
    summary = json.loads(lines[-1])
    assert code == 0 and out.exists() and summary["decimations"] > 0
    assert summary["decimation_error"] > 1 and any("warning" in line for line in err)


def test_decimation_norm_row_is_passed_to_the_solver(tmp_path, capsys):
    """--decimation-norm row measures the interpolation error in units of atol + rtol max|row|
    (`dj.Adaptive(decimation_norm="row")`): the same coarse solve as above then reports a
    smaller decimation error; the entry-wise run's out file equals the library's decimated
    solve (the compilation of the first test's library solve: t_max and the allowance are
    traced)."""
    flags = FLAGS + ["--t-max", "12", "--max-decimation-error", "1e6"]
    errors = {}
    for norm in ("entry", "row"):
        out = tmp_path / f"{norm}.npz"
        code, lines, _ = _run(capsys, flags + ["--decimation-norm", norm, "--out", str(out)])
        assert code == 0
        errors[norm] = json.loads(lines[-1])["decimation_error"]
    assert errors["row"] < errors["entry"]
    model = dj.symmetric_dmft(dj.covariance(H), dj.target("same", H), tau=0.3, alpha=0.3, m=4,
                              a0=1.0)
    sol = dj.solve(model, dj.Adaptive(12.0, rtol=1e-4, atol=1e-6, history=128, max_steps=400,
                                      max_decimation_error=1e6))
    f = np.load(tmp_path / "entry.npz")
    n = int(sol.stats["accepted"])
    assert int(sol.stats["decimations"]) > 0
    np.testing.assert_allclose(f["e_tr"], np.asarray(sol.e_tr)[:n + 1], rtol=1e-12)
    code, _, err = _run(capsys, FLAGS + ["--decimation-norm", "row"])
    assert code == 2 and any("--t-max" in line for line in err)
