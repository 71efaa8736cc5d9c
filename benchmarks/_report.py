"""Shared helpers of the benchmark scripts: results files made of replaceable sections, the
name of a solve's result code, and the reading and drawing of per-width records."""

from __future__ import annotations

import os
import re


def replace_section(path: str, kind: str, key: str, text: str, header: str) -> None:
    """Write `text` as the section `<!-- kind: key -->` ... `<!-- end kind: key -->` of the
    markdown file `path` (created with `header`), replacing that section if present and keeping
    every other section, so that runs on different machines or variants accumulate."""
    begin, end = f"<!-- {kind}: {key} -->", f"<!-- end {kind}: {key} -->"
    old = open(path).read() if os.path.exists(path) else header
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    with open(path, "w") as fh:
        fh.write(new)


#: The items of `dmft_jax.RESULTS` a benchmark reports by name.
RESULT_NAMES = ("successful", "diverged", "max_steps_reached", "step_too_small",
                "history_too_coarse", "invalid_input", "not_converged")


def result_name(sol) -> str:
    """The name of `sol.result` (an item of `dmft_jax.RESULTS`), "other" if none listed."""
    import dmft_jax as dj
    return next((name for name in RESULT_NAMES
                 if bool(sol.result == getattr(dj.RESULTS, name))), "other")


def solve_records(model, ctrl, label: str, pick, points: int = 400) -> tuple[dict, dict]:
    """Solve `model` adaptively (`dmft_jax.solve`, throw=False, with progress), timed after
    the solve is ready, and resample the one-time records `pick(sol, n)` (a dict of arrays
    over the n + 1 accepted times) at t = 0 and `points - 1` log-spaced times. Returns the raw
    records (with "t") and the run: the resampled records, "t", the wall time, the step and
    decimation counts, the result's name, the last time and step."""
    import time

    import dmft_jax as dj
    import jax
    import numpy as np
    start = time.perf_counter()
    sol = dj.solve(model, ctrl, throw=False, progress=True, label=label)
    jax.block_until_ready(sol.e_tr)
    wall = time.perf_counter() - start
    n = int(sol.stats["accepted"])
    raw = dict(pick(sol, n), t=np.asarray(sol.t)[:n + 1])
    t = raw["t"]
    grid = np.concatenate([[0.0], np.geomspace(t[1], t[-1], points - 1)])
    run = {key: np.interp(grid, t, x) for key, x in raw.items() if key != "t"}
    run.update(t=grid, wall=wall, steps=n, rejected=int(sol.stats["rejected"]),
               decimations=int(sol.stats["decimations"]),
               decimation_error=float(sol.stats["decimation_error"]),
               result=result_name(sol), t_end=float(t[-1]), last_step=float(t[-1] - t[-2]))
    return raw, run


def at(run: dict, key: str, x: float) -> float:
    """The record `key` of a per-width run (a dict with "m", "t" and records) at t / m = x,
    linearly interpolated."""
    import numpy as np
    return float(np.interp(x * run["m"], run["t"], run[key]))


def t_over_m_table(runs: list[dict], rows, xs, caption: str = "") -> list[str]:
    """Markdown lines of a table of per-width records at t / m = xs: one line per run and
    `rows` item (label, key, format[, scale(run)], the record times scale, default 1); "-"
    beyond a run's last time."""
    lines = ["", "At t / m = " + ", ".join(f"{x:g}" for x in xs) + caption + ":", "",
             "| m | quantity | " + " | ".join(f"{x:g}" for x in xs) + " |",
             "|---|---|" + "---|" * len(xs)]
    for run in runs:
        for label, key, fmt, *scale in rows:
            factor = scale[0](run) if scale else 1.0
            vals = [fmt.format(factor * at(run, key, x)) if x * run["m"] <= run["t"][-1]
                    else "-" for x in xs]
            lines.append(f"| {run['m']} | {label} | " + " | ".join(vals) + " |")
    return lines


def finish_figure(fig, axes, title: str, path: str, legend_size: int = 7, dpi: int = 110):
    """Legends on every axis, the title, a tight layout; write to `path` and close."""
    import matplotlib.pyplot as plt
    for axis in axes:
        axis.legend(fontsize=legend_size)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
