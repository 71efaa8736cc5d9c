"""Every bad invocation of the command line is one clean line (issue 12).

A table of bad invocations over all eight commands, each run in-process in an empty directory
holding only the input files below. Each must: exit non-zero (2: bad input), print no traceback,
print exactly one line on stderr that names the flag or file at fault, and leave no file behind
(neither an output nor a temporary file). Validation happens before any compilation, so the
whole table runs in seconds. A few subprocess checks cover what needs a real process: SIGINT
and SIGTERM during compilation, a solve and a write, and the installed console script.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from dmft_jax import _cli_io
from dmft_jax._cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
HUGE = str(10**8)


def _huge_header_npz(path):
    """An .npz whose array `a` claims 10^12 entries in its header but stores 80 bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("a.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
            fh.write(np.zeros(10).tobytes())
        with archive.open("C.npy", "w") as fh:
            np.lib.format.write_array(fh, np.eye(2))


def _short_member_npz(path):
    """An .npz whose arrays `a` and `t` claim 1000 entries but store 10 (truncated members)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("a", "t"):
            with archive.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array_header_1_0(
                    fh, {"descr": "<f8", "fortran_order": False, "shape": (1000,)})
                fh.write(np.zeros(10).tobytes())
        for name, arr in dict(C=np.eye(2), e_tr=np.zeros(10), e_ts=np.zeros(10),
                              v=np.zeros((10, 1)), gamma=np.zeros(10)).items():
            with archive.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, arr)


def _bad_crc_npz(path, source):
    """A copy of `source` (stored, uncompressed) with one data byte flipped."""
    raw = bytearray(source.read_bytes())
    at = raw.index(b"\x93NUMPY") + 200  # inside the first array's data
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def _make_inputs(d: pathlib.Path) -> None:
    """The input files the table refers to (relative names in the test's directory)."""
    (d / "empty.npz").write_bytes(b"")
    (d / "text.npz").write_text("not an archive\n")
    (d / "notadir").write_text("a file, not a directory\n")
    (d / "subdir").mkdir()
    np.savez(d / "good_init.npz", a=np.array([1.0, -0.5]), C=np.eye(2))
    whole = (d / "good_init.npz").read_bytes()
    (d / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    _huge_header_npz(d / "huge.npz")
    _short_member_npz(d / "short.npz")
    x = np.linspace(0, 1, 40)  # a valid --init file and a valid solve file at once
    np.savez(d / "both.npz", a=x, C=np.eye(40), t=x, e_tr=x, e_ts=x, v=x[:, None], gamma=x)
    _bad_crc_npz(d / "bad_crc.npz", d / "both.npz")
    np.savez(d / "strings.npz", a=np.array(["1", "2"]), C=np.eye(2))
    np.savez(d / "complex.npz", a=np.ones(2) + 1j, C=np.eye(2))
    np.savez(d / "object.npz", a=np.array([{"x": 1}, None], dtype=object), C=np.eye(2))
    np.savez(d / "only_a.npz", a=np.ones(2))
    np.savez(d / "nan.npz", a=np.array([1.0, np.nan]), C=np.eye(2))
    np.savez(d / "shape.npz", a=np.ones(2), C=np.eye(3))
    np.savez(d / "wide_v.npz", a=np.ones(2), C=np.eye(2), v=np.zeros((2, 3)))
    t = np.linspace(0, 1, 5)
    np.savez(d / "solve_short.npz", t=t, e_tr=t[:4], e_ts=t, a=t, gamma=t, v=t[:, None])
    np.savez(d / "exp_no_etr.npz", kind=np.asarray("experiment"), t=t, a=np.ones((2, 5)),
             diverged=np.zeros(2, bool))
    np.savez(d / "exp_object.npz", kind=np.asarray("experiment"), t=t, diverged=np.zeros(2, bool),
             **{k: np.ones((2, 5)) for k in ("a", "v", "e_ts")},
             e_tr=np.array([None] * 5, dtype=object))
    np.savez(d / "exp_nan.npz", kind=np.asarray("experiment"), t=t, diverged=np.zeros(2, bool),
             **{k: np.full((2, 5), np.nan) for k in ("a", "v", "e_tr", "e_ts")})
    np.savez(d / "exp_shape.npz", kind=np.asarray("experiment"), t=t, diverged=np.zeros(2, bool),
             **{k: np.ones((3, 5)) for k in ("a", "v", "e_tr", "e_ts")})
    np.savez(d / "exp_dynamics.npz", kind=np.asarray("experiment"), t=t,
             diverged=np.zeros(2, bool), dmft_dynamics=np.asarray("euler"),
             **{k: np.ones((2, 5)) for k in ("a", "v", "e_tr", "e_ts")})
    np.savez(d / "solve_dynamics.npz", t=t, e_tr=t, e_ts=t, a=t, gamma=t, v=t[:, None],
             dynamics=np.asarray(["gd", "flow"]))
    np.savez(d / "sweep_bad.npz", kind=np.asarray("sweep"), t=np.zeros((1, 1, 1, 1, 3)),
             axes=np.asarray("not json"), params=np.asarray("{}"))
    np.savez(d / "unknown_kind.npz", kind=np.asarray("movie"), t=t)
    (d / "grid_bad.json").write_text("{not json")
    (d / "grid_huge.json").write_text(json.dumps({"a0": list(np.linspace(0.5, 2, 400)),
                                                  "lr": list(np.linspace(0.01, 0.1, 400))}))
    (d / "grid_inf.json").write_text('{"lr": [0.1, 1e999]}')
    (d / "grid_key.toml").write_text("eta = [1, 2]\n")


# (argv, text the one error line must contain). Every example of issue 12 is here.
CASES = [
    # ---------------------------------------------------------------- solve: output locations
    (["solve", "--steps", "20", "--out", "nonexistent_dir/x.npz"], "nonexistent_dir"),
    (["solve", "--out", "notadir/x.npz"], "notadir"),
    (["solve", "--plot", "x.txt"], "--plot"),
    (["solve", "--plot", "x"], "--plot"),
    (["solve", "--out", "."], "--out"),
    (["solve", "--out", ""], "--out"),
    (["solve", "--out", "x"], "--out"),
    (["solve", "--out", "subdir"], "--out"),
    (["solve", "--out", "subdir/"], "--out"),
    (["solve", "--out", "x.npz", "--plot", "nonexistent_dir/x.png"], "--plot"),
    # ------------------------------------------------------------------ solve: --init files
    (["solve", "--init", "empty.npz"], "--init"),
    (["solve", "--init", "truncated.npz"], "--init"),
    (["solve", "--init", "text.npz"], "--init"),
    (["solve", "--init", "huge.npz"], "--init"),
    (["solve", "--init", "short.npz"], "--init"),
    (["solve", "--init", "bad_crc.npz"], "--init"),
    (["solve", "--init", "strings.npz"], "--init"),
    (["solve", "--init", "complex.npz"], "--init"),
    (["solve", "--init", "object.npz"], "--init"),
    (["solve", "--init", "only_a.npz"], "--init"),
    (["solve", "--init", "nan.npz"], "--init"),
    (["solve", "--init", "shape.npz"], "--init"),
    (["solve", "--init", "wide_v.npz"], "--init"),
    (["solve", "--init", "nofile.npz"], "--init"),
    (["solve", "--init", "subdir"], "--init"),
    (["solve", "--init", ""], "--init"),
    # ------------------------------------------------------------------ solve: sizes, values
    (["solve", "--steps", "10000000"], "--steps"),
    (["solve", "--steps", "100000", "--init", "good_init.npz"], "--steps"),
    (["solve", "--k", HUGE], "--k"),
    (["solve", "--activation", "relu", "--hermite-degree", "100000"], "--hermite-degree"),
    (["solve", "--a0", "1e200"], "--a0"),
    (["solve", "--gamma0", "nan"], "--gamma0"),
    (["solve", "--tau", "inf"], "--tau"),
    (["solve", "--dt", "inf"], "--dt"),
    (["solve", "--dt", "nan"], "--dt"),
    (["solve", "--dt", "0"], "--dt"),
    (["solve", "--alpha", "-1"], "--alpha"),
    (["solve", "--m", "0"], "--m"),
    (["solve", "--m", "2.5"], "--m"),
    (["solve", "--h", ""], "--h"),
    (["solve", "--h", "1"], "--h"),
    (["solve", "--h", "0,-0.5,1"], "--h"),
    (["solve", "--h", "0,1,x"], "--h"),
    (["solve", "--h", "0," + ",".join(["1"] * 300)], "--h"),
    (["solve", "--phihat", "0,1;"], "--phihat"),
    (["solve", "--phihat", "0,inf"], "--phihat"),
    (["solve", "--phi-norm2", "-1"], "--phi-norm2"),
    (["solve", "--target", "sigmoid"], "--target"),
    (["solve", "--activation", "sigmoid"], "--activation"),
    (["solve", "--init", "good_init.npz", "--a0", "2"], "--init"),
    # ------------------------------------------------------ solve: --dynamics gd (issue 11)
    (["solve", "--dynamics", "gd"], "--lr"),
    (["solve", "--lr", "0.5"], "--lr"),
    (["solve", "--dynamics", "sgd", "--lr", "0.5"], "--dynamics"),
    (["solve", "--dynamics", "gd", "--lr", "0"], "--lr"),
    (["solve", "--dynamics", "gd", "--lr", "nan"], "--lr"),
    (["solve", "--dynamics", "gd", "--lr", "-1"], "--lr"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--dt", "0.1"], "--dt"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--t-max", "3"], "--t-max"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--method", "euler"], "--method"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--rtol", "1e-3", "--history", "64"],
     "--rtol, --history"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--checkpoint", "c.npz"], "--checkpoint"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--save-at", "lin:4"], "--save-at"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--steps", "10000000"], "--steps"),
    (["solve", "--dynamics", "gd", "--lr", "1e6", "--alpha", "1e-300"], "--lr"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--init", "strings.npz"], "--init"),
    (["solve", "--dynamics", "gd", "--lr", "0.5", "--out", "x.txt"], "--out"),
    # ------------------------------------------------------- solve: adaptive (issue 9)
    (["solve", "--control-train-error"], "--control-train-error"),
    (["solve", "--max-decimation-error", "2"], "--max-decimation-error"),
    (["solve", "--t-max", "3", "--max-decimation-error", "0"], "--max-decimation-error"),
    (["solve", "--t-max", "3", "--max-decimation-error", "nan"], "--max-decimation-error"),
    (["solve", "--t-max", "3", "--dt", "0.1"], "--t-max"),
    (["solve", "--t-max", "3", "--method", "euler"], "--method"),
    (["solve", "--t-max", "3", "--save-at", "4"], "--save-at"),
    (["solve", "--t-max", "3", "--history", "4"], "--history"),
    (["solve", "--t-max", "3", "--checkpoint", "c.txt"], "--checkpoint"),
    # ------------------------------------------------------------------------------ demo
    (["demo", "--quick", "--out", "demo.txt"], "--out"),
    (["demo", "--quick", "--out", "nonexistent_dir/demo.png"], "nonexistent_dir"),
    (["demo", "--quick", "--out", "."], "--out"),
    (["demo", "--quick", "--out", "demo"], "--out"),
    # ------------------------------------------------------------------------ experiment
    (["experiment", "--out", "nonexistent_dir/x.npz"], "nonexistent_dir"),
    (["experiment", "--out", "x.txt"], "--out"),
    (["experiment", "--d", HUGE], "--d"),
    (["experiment", "--seeds", "2", "--t-max", "2", "--d", "50", "--m", "4", "--lr", "50",
      "--batch", "0", "--dmft"], "--lr"),
    (["experiment", "--lr", "inf"], "--lr"),
    (["experiment", "--batch", "-1"], "--batch"),
    (["experiment", "--t-max", "0"], "--t-max"),
    (["experiment", "--record-every", "nan"], "--record-every"),
    (["experiment", "--seeds", "0"], "--seeds"),
    (["experiment", "--phi-norm2", "1"], "--phi-norm2"),
    (["experiment", "--lr", "1e-300", "--t-max", "1000"], "--t-max"),
    (["experiment", "--dmft", "--dmft-dynamics", "gd"], "--dmft-dynamics"),
    (["experiment", "--dmft-dynamics", "gd", "--batch", "0"], "--dmft-dynamics"),
    (["experiment", "--dmft", "--dmft-dynamics", "euler"], "--dmft-dynamics"),
    # ----------------------------------------------------------------------------- sweep
    (["sweep", "--out", "nonexistent_dir/x.npz"], "nonexistent_dir"),
    (["sweep", "--out", "sweep"], "--out"),
    (["sweep", "--grid", "grid_huge.json"], "--grid"),
    (["sweep", "--grid-a0", ",".join(["1"] * 50), "--grid-lr", ",".join(["0.1"] * 50),
      "--grid-tau", ",".join(["0.3"] * 50)], "--grid"),
    (["sweep", "--grid-lr", "0.1,inf"], "--grid-lr"),
    (["sweep", "--grid-tau", "-1"], "--grid-tau"),
    (["sweep", "--grid", "grid_bad.json"], "--grid"),
    (["sweep", "--grid", "grid_inf.json"], "--grid"),
    (["sweep", "--grid", "grid_key.toml"], "--grid"),
    (["sweep", "--grid", "nofile.json"], "--grid"),
    (["sweep", "--dmft-dynamics", "gd", "--batch", "5"], "--dmft-dynamics"),
    (["sweep", "--no-dmft", "--batch", "0", "--dmft-dynamics", "flow"], "--dmft-dynamics"),
    # --------------------------------------------------------------------------- compare
    (["compare", "empty.npz"], "empty.npz"),
    (["compare", "truncated.npz"], "truncated.npz"),
    (["compare", "text.npz"], "text.npz"),
    (["compare", "nofile.npz"], "nofile.npz"),
    (["compare", "exp_no_etr.npz"], "exp_no_etr.npz"),
    (["compare", "exp_object.npz"], "exp_object.npz"),
    (["compare", "exp_nan.npz"], "exp_nan.npz"),
    (["compare", "exp_shape.npz"], "exp_shape.npz"),
    (["compare", "solve_short.npz"], "solve_short.npz"),
    (["compare", "sweep_bad.npz"], "sweep_bad.npz"),
    (["compare", "unknown_kind.npz"], "unknown_kind.npz"),
    (["compare", "huge.npz"], "huge.npz"),
    (["compare", "short.npz"], "short.npz"),
    (["compare", "bad_crc.npz"], "bad_crc.npz"),
    (["compare", "good_init.npz"], "good_init.npz"),
    (["compare", "exp_dynamics.npz"], "exp_dynamics.npz"),
    (["compare", "solve_dynamics.npz"], "solve_dynamics.npz"),
    (["compare", "solve_short.npz", "--out", "x.txt"], "--out"),
    (["compare", "solve_short.npz", "--out", "nonexistent_dir/c.png"], "nonexistent_dir"),
    (["compare", "solve_short.npz", "--observables", "bogus"], "--observables"),
    # -------------------------------------------------------------------------- simulate
    (["simulate", "--d", "100000"], "--d"),
    (["simulate", "--realizations", "1000000000"], "--realizations"),
    (["simulate", "--lr", "1000"], "--lr"),
    (["simulate", "--out", "nonexistent_dir/x.npz"], "nonexistent_dir"),
    (["simulate", "--out", "x.txt"], "--out"),
    (["simulate", "--t-max", "inf"], "--t-max"),
    (["simulate", "--batch-size", "0"], "--batch-size"),
    (["simulate", "--init", "strings.npz"], "--init"),
    (["simulate", "--init", "truncated.npz"], "--init"),
    # ------------------------------------------------------------------------- threshold
    (["threshold", "--range", "1.05,1.5", "--dt", "inf"], "--dt"),
    (["threshold", "--range", "1.05,1.5", "--tau", "inf"], "--tau"),
    (["threshold", "--range", "1.05,1.5", "--gamma0", "nan"], "--gamma0"),
    (["threshold", "--range", "1.05,1.5", "--steps", HUGE], "--steps"),
    (["threshold", "--range", "1.05,1.5", "--num", HUGE], "--num"),
    (["threshold", "--range", "1.0"], "--range"),
    (["threshold", "--range", "1,1"], "--range"),
    (["threshold", "--range", "1,nan"], "--range"),
    (["threshold", "--range", "1.05,1.5", "--m", "0"], "--m"),
    (["threshold", "--range", "1.05,1.5", "--num", "2"], "--num"),
    (["threshold", "--range=-1,1", "--a", "1"], "--range"),
    (["threshold", "--range=-1,1", "--a", "1", "--parameter", "alpha_bar"], "--range"),
    # ------------------------------------------------------------------------------ grad
    (["grad", "--steps", "10000000"], "--steps"),
    (["grad", "--time", "inf"], "--time"),
    (["grad", "--time", "99"], "--time"),
    (["grad", "--wrt", "a0,bogus"], "--wrt"),
    (["grad", "--dt", "-1"], "--dt"),
    (["grad", "--chunks", "0"], "--chunks"),
    (["grad", "--init", "empty.npz"], "--init"),
    (["grad", "--tau", "nan"], "--tau"),
    (["grad", "--dynamics", "gd"], "--lr"),
    (["grad", "--lr", "0.5"], "--lr"),
    (["grad", "--dynamics", "gd", "--lr", "0.5", "--dt", "0.1"], "--dt"),
    (["grad", "--dynamics", "gd", "--lr", "0.5", "--wrt", "a0,dt"], "--wrt"),
    (["grad", "--wrt", "lr"], "--wrt"),
    (["grad", "--dynamics", "gd", "--lr", "0.5", "--steps", "10", "--time", "99"], "--time"),
    (["grad", "--dynamics", "gd", "--lr", "0.5", "--steps", "10000000"], "--steps"),
    # ----------------------------------------------------------------------- no command
    (["bogus"], "bogus"),
]


def _listing(d: pathlib.Path) -> set:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_input")
    _make_inputs(d)
    return d


@pytest.mark.parametrize("argv,culprit", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_invocation_is_one_line(argv, culprit, inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    before = _listing(inputs)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dmft-jax {argv[0]}: error: ") and culprit in lines[0], lines[0]
    assert _listing(inputs) == before  # no output and no temporary file left behind
    assert out == ""


def test_the_table_covers_every_command():
    commands = {argv[0] for argv, _ in CASES}
    assert {"solve", "demo", "experiment", "sweep", "compare", "simulate", "threshold",
            "grad"} <= commands and len(CASES) >= 60


# ---------------------------------------------------------------------------- atomic writes
def test_concurrent_writes_leave_one_complete_file(tmp_path):
    """Two writers of the same file: the survivor is one of the two, complete; no temporary
    file remains."""
    final = str(tmp_path / "w.npz")
    data = {i: np.full(200_000, float(i)) for i in (1, 2)}
    threads = [threading.Thread(target=_cli_io.write_atomic,
                                args=("--out", final, lambda fh, i=i: np.savez(fh, x=data[i])))
               for i in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    x = np.load(final)["x"]
    assert float(x[0]) in (1.0, 2.0) and np.all(x == x[0]) and x.size == 200_000
    assert os.listdir(tmp_path) == ["w.npz"]


def test_failed_write_leaves_nothing(tmp_path):
    final = tmp_path / "w.npz"

    def broken(fh):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(_cli_io.SolveError, match="No space left"):
        _cli_io.write_atomic("--out", str(final), broken)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------- processes
def _env(cache: bool = False):
    """The environment of a subprocess: this repository first; with `cache`, the tests'
    persistent compilation cache (so that a warm run does not compile again)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("DMFT_JAX_TRACEBACK", None)
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = os.environ.get("DMFT_JAX_TEST_CACHE",
                                                          str(ROOT / ".jax_cache"))
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


def _wait_for(proc, text: str, timeout: float) -> str:
    """Read stderr lines until one contains `text` (returns what was read)."""
    seen, end = "", time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}: {seen!r}")


_WRITE_SCRIPT = """
import os, signal, sys, time
from dmft_jax import _cli_io
def writer(fh):
    fh.write(b"x" * 100000)
    os.kill(os.getpid(), signal.SIGINT)   # interrupted in the middle of the write
    time.sleep(30)
_cli_io._STATE["planned"] = ["w.npz"]
sys.exit(_cli_io.run_interruptible(
    lambda: _cli_io.write_atomic("--out", "w.npz", writer), "dmft-jax solve"))
"""


def test_sigint_during_a_write_leaves_no_file(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _WRITE_SCRIPT], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "dmft-jax solve: interrupted by SIGINT; not written: w.npz"]
    assert os.listdir(tmp_path) == []


def test_interrupts_during_compilation_and_solve(tmp_path):
    """SIGINT while the solver compiles (this used to segfault, exit 139) and SIGTERM in the
    middle of a solve (this used to wait for the end): exit 130 / 143 within a second or two,
    one line naming the file not written, no file, no temporary file. A general DMFT with
    m = 16 on 120 steps compiles in seconds and then runs for several seconds."""
    np.savez(tmp_path / "init.npz", a=np.linspace(-1, 1, 16), C=np.eye(16))
    argv = [sys.executable, "-m", "dmft_jax", "solve", "--init", "init.npz", "--steps", "120",
            "--dt", "0.02", "--progress", "--out", "big.npz"]
    for sig, wait_for, code, cache in ((signal.SIGINT, "compiling", 130, False),
                                       (signal.SIGTERM, "dmft: step", 143, True)):
        proc = subprocess.Popen(argv, cwd=tmp_path, env=_env(cache), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(proc, wait_for, timeout=120)
            sent = time.monotonic()
            proc.send_signal(sig)
            rest = proc.communicate(timeout=30)[1]
        finally:
            proc.kill()
        assert proc.returncode == code, rest
        assert time.monotonic() - sent < 5
        last = rest.strip().splitlines()[-1]
        assert last == f"dmft-jax solve: interrupted by {sig.name}; not written: big.npz", rest
        assert "Traceback" not in rest
        assert sorted(os.listdir(tmp_path)) == ["init.npz"]


def test_console_script_reports_bad_input(tmp_path):
    """The installed `dmft-jax` script (or `python -m dmft_jax` without it)."""
    script = shutil.which("dmft-jax")
    exe = [script] if script else [sys.executable, "-m", "dmft_jax"]
    proc = subprocess.run(exe + ["threshold", "--range", "1.05,1.5", "--dt", "inf"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "dmft-jax threshold: error: argument --dt: must be a finite number in (0, 1e+06], "
        "got 'inf'"]
