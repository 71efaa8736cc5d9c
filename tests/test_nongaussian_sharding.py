"""Draws sharded across devices (issue 10, item 4; marked `gpu`: run with `-m gpu`): with two
(simulated CPU) devices the causal pass splits its replicas and the fixed-point iteration a
batch's draws between them, and both give the single-device results (common random numbers:
the same draws)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest


SETUP = """
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
import equinox as eqx
import dmft_jax as dj
model = dj.nongaussian_dmft([0.0, 0.6, 0.4], "same", tau=0.3, a=[1.2, 0.6], v=[[0.3], [-0.2]],
                            alpha_bar=2.0, draws=400, key=1, groups=4)
grid = dj.TimeGrid(0.1, 6)
"""
FIELDS = ("a", "v", "nu", "e_tr", "e_ts", "C_t0", "C", "R", "C_A", "e_tr_se", "clipped")


def _results(ns):
    sol = ns["dj"].solve(ns["model"], ns["grid"])
    fp = ns["dj"].nongaussian_fixed_point(ns["model"], ns["grid"], tol=1e-12, max_iter=10,
                                          anderson=0, batch=50)
    out = {f"pass_{k}": np.asarray(getattr(sol, k)) for k in FIELDS}
    out.update({f"fp_{k}": np.asarray(getattr(fp, k)) for k in FIELDS})
    return out


@pytest.mark.gpu      # ~45 s of compilation in two processes: with the heavy checks, not in CI
def test_two_devices_give_the_single_device_result(tmp_path):
    ns = {}
    exec(SETUP, ns)
    here = _results(ns)
    path = tmp_path / "two.npz"
    script = SETUP + textwrap.dedent(f"""
        assert jax.device_count() == 2
        state = eqx.filter_jit(lambda mdl: mdl.init(grid.size))(model)
        shard = state["Y"][0].sharding       # the first block of the responses
        assert len(shard.device_set) == 2 and not shard.is_fully_replicated, shard
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_nongaussian_sharding import _results
        np.savez({str(path)!r}, **_results(globals()))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = np.load(path)
    for key, val in here.items():
        np.testing.assert_allclose(two[key], val, rtol=0, atol=1e-12, err_msg=key)
