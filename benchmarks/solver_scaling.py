"""Wall time and memory of the symmetric DMFT solver against a straightforward NumPy baseline.

    python benchmarks/solver_scaling.py                       # CPU: N = 256 ... 4096
    python benchmarks/solver_scaling.py --sizes 1024,2048,4096,8192 --numpy-max 0   # GPU

For each N: compile time (reported separately), the best run time of `--repeats` runs (compile
excluded), XLA's buffer sizes for the compiled solve (arguments + outputs + temporaries: the
memory the solve needs) and, on GPU, the device's peak bytes in use; the NumPy implementation
of the same scheme (benchmarks/numpy_reference.py, slicing the active block each step) with
its peak allocation (tracemalloc). The achieved bandwidth counts the bytes the solver must read
per step (9 L^2 float64 reads over the active L x L window: C_d, C_o once, R_d, R_o twice, R_A
twice and C_A once), against the machine's measured read bandwidth (a large reduction).
Problem: single-index mean field, h = phihat = 0.9 q + q^3/6, tau = 0.3, alpha = 0.3, a0 = 1,
m = 16, dt = 0.01.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import tracemalloc

os.environ.setdefault("JAX_ENABLE_X64", "1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy_reference  # noqa: E402

from dmft_jax import covariance, target  # noqa: E402
from dmft_jax import symmetric_dmft  # noqa: E402
from dmft_jax import TimeGrid  # noqa: E402
from dmft_jax import chunk_bounds, integrate  # noqa: E402

H = [0.0, 0.9, 0.0, 1.0 / 6.0]
M, TAU, ALPHA, A0, DT = 16, 0.3, 0.3, 1.0, 0.01
#: The measured configuration: 8 causal chunks at every N (the library chunks by default only
#: from dj.CHUNK_FROM steps on, where the run time outweighs the extra compile time).
CHUNKS = 8


def model():
    return symmetric_dmft(covariance(H), target("same", H), tau=TAU, alpha=ALPHA, m=M, a0=A0)


def bytes_read(steps: int) -> float:
    """Bytes the chunked solver reads: 9 L^2 float64 per step over its L x L window."""
    total = 0.0
    for lo, hi in chunk_bounds(steps, CHUNKS):
        size = min(hi + 1, steps + 1)
        total += (hi - lo) * 9 * size**2 * 8
    return total


def read_bandwidth() -> float:
    """Measured read bandwidth (bytes/s): the best of a few sums over a large float64 array."""
    n = 2**27 if jax.default_backend() == "cpu" else 2**29
    x = jnp.ones(n, jnp.float64)
    f = jax.jit(jnp.sum)
    f(x).block_until_ready()
    best = min(_timed(lambda: f(x).block_until_ready()) for _ in range(5))
    return 8 * n / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_jax(steps: int, repeats: int) -> dict:
    params, static = eqx.partition(model(), eqx.is_array)
    grid = TimeGrid(DT, steps)

    def run(p):
        return integrate(eqx.combine(p, static), grid, chunks=CHUNKS).e_tr

    start = time.perf_counter()
    compiled = jax.jit(run).lower(params).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    xla_bytes = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    out = compiled(params).block_until_ready()
    run_s = min(_timed(lambda: compiled(params).block_until_ready()) for _ in range(repeats))
    stats = jax.devices()[0].memory_stats() or {}
    return dict(compile_s=compile_s, run_s=run_s, xla_mb=xla_bytes / 2**20,
                device_peak_mb=stats.get("peak_bytes_in_use", 0) / 2**20,
                e_tr=float(out[-1]))


def bench_numpy(steps: int, measure_memory: bool) -> dict:
    """Time one NumPy solve; measure its peak allocation in a second (traced) run if asked."""
    from numpy.polynomial import polynomial as P
    c = np.array(H)
    d1, d2 = P.polyder(c), P.polyder(c, 2)
    fns = dict(h=lambda q: P.polyval(q, c), dh=lambda q: P.polyval(q, d1),
               d2h=lambda q: P.polyval(q, d2), phihat=lambda v: float(P.polyval(v[0], c)),
               grad_phihat=lambda v: np.array([P.polyval(v[0], d1)]), norm2=float(c.sum()))

    def solve():
        return numpy_reference.solve_symmetric(tau=TAU, alpha=ALPHA, m=M, a0=A0, dt=DT,
                                               steps=steps, **fns)
    start = time.perf_counter()
    res = solve()
    run_s = time.perf_counter() - start
    peak = None
    if measure_memory:
        tracemalloc.start()
        solve()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return dict(run_s=run_s, peak_mb=peak, e_tr=float(res["e_tr"][-1]))


def machine() -> str:
    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    return (f"{dev.platform}: {getattr(dev, 'device_kind', '')}; host {cpu}, {os.cpu_count()} cores; "
            f"jax {jax.__version__}, numpy {np.__version__}; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,512,1024,2048,4096")
    p.add_argument("--numpy-max", type=int, default=2048, help="largest N for the NumPy baseline")
    p.add_argument("--numpy-mem-max", type=int, default=1024,
                   help="largest N for which the NumPy peak allocation is traced (a second run)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", metavar="FILE", help="also append JSON lines here")
    args = p.parse_args()
    bandwidth = read_bandwidth()
    print(f"# machine: {machine()}")
    print(f"# measured read bandwidth: {bandwidth / 1e9:.1f} GB/s")
    print("| N | JAX compile (s) | JAX run (s) | JAX XLA buffers (MiB) | device peak (MiB) | "
          "NumPy run (s) | NumPy peak (MiB) | NumPy / JAX | achieved GB/s | fraction of bandwidth |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for steps in (int(s) for s in args.sizes.split(",")):
        j = bench_jax(steps, args.repeats)
        n = bench_numpy(steps, steps <= args.numpy_mem_max) if steps <= args.numpy_max else None
        if n is not None:
            assert abs(n["e_tr"] - j["e_tr"]) <= 1e-8 * abs(n["e_tr"]), (n["e_tr"], j["e_tr"])
        achieved = bytes_read(steps) / j["run_s"]
        row = [steps, f"{j['compile_s']:.2f}", f"{j['run_s']:.3f}", f"{j['xla_mb']:.0f}",
               f"{j['device_peak_mb']:.0f}" if j["device_peak_mb"] else "-",
               f"{n['run_s']:.2f}" if n else "-", f"{n['peak_mb']:.0f}" if n and n["peak_mb"] else "-",
               f"{n['run_s'] / j['run_s']:.1f}" if n else "-",
               f"{achieved / 1e9:.1f}", f"{achieved / bandwidth:.2f}"]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(dict(N=steps, jax=j, numpy=n, achieved_gbs=achieved / 1e9,
                                         bandwidth_gbs=bandwidth / 1e9, machine=machine())) + "\n")


if __name__ == "__main__":
    main()
