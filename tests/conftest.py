"""Test configuration: float64 (the library never sets it), a persistent compilation cache,
the repository root on sys.path (for the independent NumPy reference in benchmarks/)."""

import os
import pathlib
import sys

# The suite runs on three worker processes (pyproject addopts): on a GPU, each would otherwise
# preallocate 75% of the device memory and the second would fail.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The suite is mostly XLA compilation of programs that then run for a fraction of a second.
# Two backend flags make the CPU compile faster: the lowest optimization level (measured on
# the 2-core CPU, the whole suite from a cold cache under a competing `yes`: 509.7 s ->
# 387.6 s) and XLA's older loop-fusion code generator (`--xla_cpu_use_fusion_emitters=false`:
# an adaptive m = 256 solve's program compiles in 1.9 s instead of 3.6 s; the whole suite,
# quiet, 446 s -> 237 s). They change how fast the code runs; what it computes agrees to
# rounding (fast-math stays off; the suite passes with and without them). Set before jax
# starts its backend; the workers and the command-line tests' subprocesses inherit them.
# Flags given in XLA_FLAGS are kept. XLA aborts the process on a flag it does not know, so
# the first process (pytest's controller) tries the fusion flag in a subprocess once and
# leaves it out if this jaxlib rejects it.
_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _FLAGS:
    _FLAGS += " --xla_backend_optimization_level=0"
if "xla_cpu_use_fusion_emitters" not in _FLAGS and "DMFT_JAX_TEST_FLAGS" not in os.environ:
    import subprocess
    _trial = (_FLAGS + " --xla_cpu_use_fusion_emitters=false").strip()
    _probe = subprocess.run([sys.executable, "-c", "import jax.numpy as j; j.zeros(1) + 1"],
                            env=dict(os.environ, XLA_FLAGS=_trial), capture_output=True)
    if _probe.returncode == 0:
        _FLAGS = _trial
os.environ["XLA_FLAGS"] = _FLAGS.strip()
os.environ["DMFT_JAX_TEST_FLAGS"] = "1"         # decided: workers and subprocesses keep it

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

_cache = os.environ.get("DMFT_JAX_TEST_CACHE", str(ROOT / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# The command-line tests, the demo and the notebooks run in subprocesses: the same cache lets
# them reuse what the suite (or an earlier subprocess) compiled for the same program.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
