"""Test configuration: float64 (the library never sets it), a persistent compilation cache,
the repository root on sys.path (for the independent NumPy reference in benchmarks/)."""

import os
import pathlib
import sys

# The suite runs on two worker processes (pyproject addopts): on a GPU, each would otherwise
# preallocate 75% of the device memory and the second would fail.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The suite is mostly XLA compilation of programs that then run for a fraction of a second:
# the backend's lowest optimization level compiles them faster (measured on the 2-core CPU,
# the whole suite from a cold cache under a competing `yes`: 509.7 s -> 387.6 s). It
# changes how fast the code runs; what it computes agrees to rounding (fast-math stays off;
# the suite passes at both levels). Set before jax starts its backend; the command-line tests'
# subprocesses inherit it. A level given in XLA_FLAGS is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

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
