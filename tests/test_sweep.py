"""Sweeps of networks and their DMFT in one compiled graph: labels, save/load, 1 vs 4 devices,
and the `experiment` / `sweep` / `compare` commands."""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dmft_jax._cli import main  # noqa: E402
from dmft_jax._network import problem  # noqa: E402
from dmft_jax._sweep import SweepResult, sweep  # noqa: E402
from dmft_jax._train import OBSERVABLES  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUBIC = [0.0, 0.9, 0.0, 1.0 / 6.0]
GRID = dict(m=4, d=20, steps=8, record_every=4, seeds=3, a0=[0.5, 1.0], lr=[0.05, 0.1],
            alpha=[0.3, 0.5], batch=6, projection="ball")


@pytest.fixture(scope="module")
def small_sweep():
    return sweep(problem(CUBIC), **GRID)


def test_sweep_labels(small_sweep):
    """Shapes (seed, a0, lr, tau, alpha, T); t = k record_every lr d / n; a(0) = a0 in the
    experiment and the DMFT; a seed shares its data and W(0) across the grid."""
    res = small_sweep
    shape = (2, 2, 1, 2)
    assert res.grid_shape == shape and res.t.shape == (*shape, 3)
    for name in OBSERVABLES:
        assert res.experiment[name].shape == (3, *shape, 3)
        assert res.dmft[name].shape == (*shape, 3)
    assert res.experiment["diverged"].shape == (3, *shape)
    n = np.array([24, 40])  # round(alpha m d)
    expected = np.arange(3) * 4 * np.array([0.05, 0.1])[:, None, None] * 20 / n[:, None]
    np.testing.assert_allclose(res.t[0, :, 0], expected, rtol=1e-12)
    a0 = np.array([0.5, 1.0])[:, None, None, None]
    np.testing.assert_allclose(res.experiment["a"][..., 0], np.broadcast_to(a0, (3, *shape)))
    np.testing.assert_allclose(res.dmft["a"][..., 0], np.broadcast_to(a0, shape))
    c_o0 = res.experiment["C_o"][..., 0]  # depends on W(0) only: the seed's
    np.testing.assert_array_equal(c_o0, np.broadcast_to(c_o0[:, :1, :1, :, :1], c_o0.shape))
    assert len(np.unique(c_o0[:, 0, 0, 0, 0])) == 3
    h1 = 0.9 + 1 / 6  # [C.46] at t = 0 (v = 0, C_o = 0): (tau^2 + h(1) + a0^2 h(1) / m) / 2
    np.testing.assert_allclose(res.dmft["e_ts"][..., 0],
                               np.broadcast_to(0.5 * (0.09 + h1 + a0**2 * h1 / 4), shape))


def test_sweep_save_load_and_stats(small_sweep, tmp_path):
    res = small_sweep
    path = tmp_path / "sweep.npz"
    res.save(path)
    back = SweepResult.load(path)
    for name, arr in res.experiment.items():
        np.testing.assert_array_equal(back.experiment[name], arr)
    for name, arr in res.dmft.items():
        np.testing.assert_array_equal(back.dmft[name], arr)
    np.testing.assert_array_equal(back.t, res.t)
    assert back.params == json.loads(json.dumps(res.params))
    point = back.point(a0=1.0, lr=0.1, alpha=0.5)
    np.testing.assert_array_equal(point["a"], res.experiment["a"][:, 1, 1, 0, 1])
    np.testing.assert_array_equal(point["dmft_e_tr"], res.dmft["e_tr"][1, 1, 0, 1])
    mean, se, count = back.stats("e_tr")
    np.testing.assert_allclose(mean, res.experiment["e_tr"].mean(axis=0))
    np.testing.assert_allclose(se, res.experiment["e_tr"].std(axis=0, ddof=1) / np.sqrt(3))
    assert np.all(count == 3)
    with pytest.raises(KeyError, match="lr"):
        back.point(lr=0.3)


_DEVICES = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = sys.argv[2] + " --xla_force_host_platform_device_count=4"
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from dmft_jax._network import problem
    from dmft_jax._sweep import SweepResult, sweep
    assert len(jax.devices()) == 4
    one = SweepResult.load(sys.argv[1])
    four = sweep(problem([0.0, 0.9, 0.0, 1.0 / 6.0]), **{GRID!r})
    assert four.params["devices"] == 4 and one.params["devices"] == 1
    for a, b in ((one.experiment, four.experiment), (one.dmft, four.dmft)):
        for k in a:
            x, y = np.asarray(a[k]), np.asarray(b[k])
            if x.dtype.kind != "f":
                assert np.array_equal(x, y), k
                continue
            assert np.array_equal(np.isfinite(x), np.isfinite(y)), k
            ok = np.isfinite(x)
            assert np.allclose(x[ok], y[ok], rtol=1e-13, atol=1e-300), k
    print("identical")
""").replace("{GRID!r}", repr(GRID))


@pytest.mark.gpu  # heavy tier (CI time): four simulated devices, a compilation of their own
def test_one_and_four_devices_identical(small_sweep, tmp_path):
    """The sweep sharded over 4 CPU devices (12 runs, 8 DMFTs) equals the 1-device one to
    rounding, with the same non-finite entries and flags (subprocess: the device count is
    fixed when JAX starts; it compiles with this process's backend flags). Bit for bit under
    XLA's default CPU code generator; with the suite's older one (conftest) a sharded reduction
    can differ in the last bit (measured: 2.6e-16 relative in e_tr)."""
    assert small_sweep.params["devices"] == len(jax.devices()) == 1
    path = tmp_path / "one.npz"
    small_sweep.save(path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    flags = " ".join(f for f in env.pop("XLA_FLAGS", "").split()
                     if "force_host_platform_device_count" not in f)
    out = subprocess.run([sys.executable, "-c", _DEVICES, str(path), flags],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "identical" in out.stdout


# -------------------------------------------------------------------------------------- CLI
def test_cli_experiment_writes_documented_arrays(tmp_path, capsys):
    out = tmp_path / "exp.npz"
    code = main(["experiment", "--m", "4", "--d", "20", "--seeds", "4", "--batch", "6",
                 "--t-max", "0.6", "--record-every", "0.2", "--dmft", "--out", str(out),
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    data = np.load(out)
    T = len(data["t"])
    np.testing.assert_allclose(data["t"], 0.1 * 20 / 24 * np.arange(T) * 2, rtol=1e-12)
    assert abs(data["t"][-1] - 0.6) < 0.1
    for name in OBSERVABLES:
        assert data[name].shape == (4, T), name
        assert data[f"dmft_{name}"].shape == (T,), name
    assert data["diverged"].shape == (4,) and data["divergence_time"].shape == (4,)
    assert summary["seeds"] == 4 and summary["diverged"] == 0
    params = json.loads(str(data["params"]))
    assert params["projection"] == "ball" and params["batch"] == 6 and params["n"] == [24]
    # compare draws the experiment with its DMFT lines
    fig = tmp_path / "cmp.png"
    assert main(["compare", str(out), "--out", str(fig), "--observables", "a,e_tr"]) == 0
    assert fig.stat().st_size > 1000


@pytest.mark.parametrize("argv,flag", [
    (["experiment", "--batch", "500", "--m", "4", "--d", "20"], "--batch"),
    (["experiment", "--lr", "0", "--batch", "0"], "--lr"),
    (["experiment", "--record-every", "-1", "--batch", "0"], "--record-every"),
    (["sweep", "--grid-lr", "0.1,x"], "--grid-lr"),
    (["sweep", "--grid-alpha", "0.3,-1"], "--grid-alpha"),
    (["compare", "nofile.npz"], "nofile.npz"),
])
def test_cli_errors_are_one_line_naming_the_flag(argv, flag, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and flag in err, err


def test_cli_sweep_grid_file(small_sweep, tmp_path, capsys):
    """`sweep` with a TOML grid and flags reproduces the library sweep `small_sweep` (same
    shapes, so its compilation is reused from the persistent cache)."""
    grid = tmp_path / "grid.toml"
    grid.write_text("a0 = [0.5, 1.0]\nalpha = [0.3, 0.5]\n")
    out = tmp_path / "sweep.npz"
    assert main(["sweep", "--grid", str(grid), "--grid-lr", "0.05,0.1", "--h", "cubic",
                 "--m", "4", "--d", "20", "--seeds", "3", "--batch", "6", "--steps", "8",
                 "--record-every", "0.1", "--out", str(out)]) == 0
    res = SweepResult.load(out)
    assert res.grid_shape == (2, 2, 1, 2) and res.params["record_every"] == 4
    for name in ("a", "e_tr", "e_ts"):
        np.testing.assert_allclose(res.experiment[name], small_sweep.experiment[name], rtol=1e-12)
        np.testing.assert_allclose(res.dmft[name], small_sweep.dmft[name], rtol=1e-12)
    bad = tmp_path / "bad.json"
    bad.write_text('{"eta": [1]}')
    assert main(["sweep", "--grid", str(bad)]) == 2
    assert "--grid" in capsys.readouterr().err
    fig = tmp_path / "cmp.png"
    assert main(["compare", str(out), "--out", str(fig)]) == 0
    assert fig.stat().st_size > 1000
