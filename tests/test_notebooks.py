"""The notebooks (jupytext py:percent scripts) run top to bottom in their quick mode, save their
figures to the folder named by DMFT_JAX_FIGURES (by default: next to themselves), and write
nothing anywhere else: not in the working directory, not in the temporary folder, not in
notebooks/."""

import os
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))

#: What each notebook writes (besides printing).
OUTPUTS = {
    "experiment": {"experiment_fig4.png", "experiment_sweep.png", "experiment_sweep.npz"},
    "hyperparameters": {"hyperparameters_a0.png"},
    "regimes": {"regimes_lz1.png", "regimes_lz2.png", "regimes_threshold.png",
                "regimes_mean_field.png", "regimes_third.png"},
}


def _files(folder: pathlib.Path) -> set:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


#: Notebooks run in the CPU suite; the others (~20 s each on the 2-core CPU) in the heavy tier
#: (`-m gpu`), to keep the suite within its time budget.
IN_CI = {"experiment"}


@pytest.mark.parametrize("path", [p if p.stem in IN_CI else pytest.param(p, marks=pytest.mark.gpu)
                                  for p in NOTEBOOKS], ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, tmp_path):
    figures, cwd, tmp = tmp_path / "figures", tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    before = _files(path.parent)
    env = dict(os.environ, SMOKE_TEST="1", MPLBACKEND="Agg", JAX_ENABLE_X64="1",
               DMFT_JAX_FIGURES=str(figures), TMPDIR=str(tmp),
               PYTHONPATH=os.pathsep.join(filter(None, [str(path.parents[1]),
                                                        os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _files(figures) == OUTPUTS[path.stem]
    assert all((figures / name).stat().st_size > 1000 for name in OUTPUTS[path.stem])
    assert _files(cwd) == set() and _files(path.parent) == before
    assert not [p for p in tmp.rglob("*") if p.suffix in (".npz", ".png")]
