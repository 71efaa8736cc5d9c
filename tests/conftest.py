"""Test configuration: float64 (the library never sets it), a persistent compilation cache,
the repository root on sys.path (for the independent NumPy reference in benchmarks/)."""

import os
import pathlib
import sys

# The suite runs on two worker processes (pyproject addopts): on a GPU, each would otherwise
# preallocate 75% of the device memory and the second would fail.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

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
