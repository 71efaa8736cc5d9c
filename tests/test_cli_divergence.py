"""Divergence is never presented as a result (issue 12).

`solve`, `grad` and `threshold` compute one thing: when it diverges they exit 1 with one line
and a JSON record that says `diverged`. `experiment` and `sweep` mark what diverged (networks
or DMFT) in their summary, JSON and file. (`simulate`: tests/test_gaussian_model.py.) Small
grids, so each case compiles in a second or two.
"""

import json

import numpy as np
import pytest

from dmft_jax._cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def test_solve_divergence_exits_1_with_json(tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, lines, err = _run(capsys, ["solve", "--gamma0", "3", "--dt", "0.5", "--steps", "60",
                                     "--m", "4", "--json", "--out", str(out)])
    assert code == 1 and len(err) == 1 and "diverged at t = " in err[0] and "--dt" in err[0]
    record = json.loads(lines[-1])
    # The first step is already beyond Euler's stability bound (about dt < 0.05 here).
    assert record["diverged"] is True and 0.5 <= record["divergence_time"] <= 2.0
    assert f"t = {record['divergence_time']:.4g}" in err[0]
    assert "e_tr" not in record and not out.exists()


@pytest.mark.gpu  # heavy tier (CI time under load on the 2-core CPU)
def test_grad_divergence_exits_1_with_json(capsys):
    code, lines, err = _run(capsys, ["grad", "--gamma0", "3", "--dt", "0.5", "--steps", "60",
                                     "--m", "4"])
    assert code == 1 and len(err) == 1 and "diverged" in err[0] and "try --dt" in err[0]
    record = json.loads(lines[-1])
    assert record["diverged"] is True and record["value"] is None


def test_threshold_divergence_exits_1_with_json(capsys):
    code, lines, err = _run(capsys, ["threshold", "--h", "fig8", "--alpha", "0.5", "--range",
                                     "1.3,1.8", "--num", "4", "--steps", "40", "--dt", "3"])
    assert code == 1 and len(err) == 1 and "4 of 4 solves of the scan diverged" in err[0]
    record = json.loads(lines[-1])
    assert len(record["diverged"]) == 4 and record["threshold"] is None


def test_experiment_marks_a_diverged_dmft(tmp_path, capsys):
    """The example of issue 12, with a horizon that one step does not pass: the flow DMFT
    (Euler) of a step dt = 41.7 diverges; the networks do not. The DMFT values are not
    reported. (Full-batch GD gets the exact GD DMFT by default, which does not diverge in this
    one step; `--dmft-dynamics flow` asks for the flow, whose Euler step is unstable.)"""
    out = tmp_path / "e.npz"
    code, lines, err = _run(capsys, ["experiment", "--seeds", "2", "--t-max", "45", "--d", "50",
                                     "--m", "4", "--lr", "50", "--batch", "0", "--dmft",
                                     "--dmft-dynamics", "flow", "--json", "--out", str(out)])
    assert code == 0
    summary = json.loads(lines[-1])
    assert summary["dmft_diverged"] is True and summary["dmft_e_tr"] is None
    assert summary["diverged"] == 0 and np.isfinite(summary["e_tr"])
    assert len(err) == 1 and "the DMFT solve diverged" in err[0]
    assert bool(np.load(out)["dmft_diverged"])
    # the text line says so next to every observable
    code, lines, err = _run(capsys, ["experiment", "--seeds", "2", "--t-max", "45", "--d", "50",
                                     "--m", "4", "--lr", "50", "--batch", "0", "--dmft",
                                     "--dmft-dynamics", "flow"])
    assert code == 0 and lines[-1].count("(DMFT diverged)") == 4


def test_threshold_matches_the_library_when_nothing_diverges(capsys):
    """The command assembles the fit itself (to tell diverged from unrelaxed values); apart from
    its `diverged` list it must equal `dmft_jax.threshold` (same scan as tests/test_cli.py, so
    the compilation is shared)."""
    import dmft_jax as dj
    code, lines, _ = _run(capsys, ["threshold", "--h", "fig8", "--tau", "1", "--alpha", "0.5",
                                   "--range", "1.3,1.8", "--num", "4", "--steps", "400",
                                   "--dt", "0.2"])
    cli = json.loads(lines[-1])
    assert code == 0 and cli.pop("diverged") == []
    lib = dj.threshold(dj.covariance("fig8"), None, parameter="gamma0",
                       values=np.linspace(1.3, 1.8, 4), tau=1.0, m=None, alpha=0.5, dt=0.2,
                       steps=400)
    assert cli == json.loads(json.dumps(lib))
