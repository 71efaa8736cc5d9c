"""dt -> 0 extrapolation of the non-Gaussian DMFT rows of benchmarks/results/nongaussian.md.

Reads the non-Gaussian rows "non-Gaussian DMFT dt=<dt>" and the networks rows of the given
sections (written by `nongaussian_check.py`), fits X(dt) = X0 + c dt by weighted least squares
at each time (the Euler scheme is first order, spec 7.9 item 2; D.8 for the Gaussian DMFT), and
compares X0 with the networks. Writes the section `extrapolation <name>`.

Usage: python benchmarks/nongaussian_extrapolate.py NAME SECTION [SECTION ...]
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "results", "nongaussian.md")
CELL = re.compile(r"([-0-9.]+) \(([-0-9.]+)\)")


def tables(text: str) -> dict:
    """{(observable, row label): [(value, se), ...]} of one section."""
    out, name = {}, None
    for line in text.splitlines():
        head = re.match(r"\*\*(\w+)\*\*", line)
        if head:
            name = head.group(1)
        elif name and line.startswith("| ") and not line.startswith("| |"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            vals = [CELL.match(c) for c in cells[1:]]
            if all(vals):
                out[(name, cells[0])] = [(float(v.group(1)), float(v.group(2))) for v in vals]
    return out


def main(argv):
    name, sections = argv[0], argv[1:]
    text = open(OUT).read()
    rows, net, times = {}, None, None
    for key in sections:
        body = re.search(re.escape(f"<!-- nongaussian: {key} -->") + r"(.*?)"
                         + re.escape(f"<!-- end nongaussian: {key} -->"), text, re.S).group(1)
        times = times or re.search(r"\| \| (t = .*) \|", body).group(1).split(" | ")
        for (obs, label), vals in tables(body).items():
            dt = re.match(r"non-Gaussian DMFT dt=([0-9.]+)", label)
            if dt:
                rows.setdefault(obs, {})[float(dt.group(1))] = vals
            elif label == "networks":
                net = net or {}
                net[obs] = vals
    lines = [f"## dt -> 0 extrapolation: {name}", "",
             "Written by `benchmarks/nongaussian_extrapolate.py` from the sections "
             + ", ".join(f"`{s}`" for s in sections)
             + ". Weighted least-squares fit X(dt) = X0 + c dt over the non-Gaussian rows; "
             "z = (X0 - networks) / combined standard error.", "",
             "| observable | dts | " + " | ".join(times) + " |",
             "|---|---|" + "---|" * len(times)]
    for obs, by_dt in rows.items():
        dts = np.array(sorted(by_dt))
        cells, zs = [], []
        for j in range(len(times)):
            x = np.array([by_dt[d][j][0] for d in dts])
            s = np.array([by_dt[d][j][1] for d in dts])
            A = np.stack([np.ones_like(dts), dts], axis=1) / s[:, None]
            cov = np.linalg.inv(A.T @ A)
            coef = cov @ (A.T @ (x / s))
            x0, se0 = coef[0], np.sqrt(cov[0, 0])
            nv, ns = net[obs][j]
            z = (x0 - nv) / np.hypot(se0, ns)
            cells.append(f"{x0:.4f} ({se0:.4f}) vs {nv:.4f} ({ns:.4f}), z = {z:+.1f}")
            zs.append(z)
        lines.append(f"| {obs} | {', '.join(f'{d:g}' for d in dts)} | " + " | ".join(cells) + " |")
    text_out = "\n".join(lines) + "\n"
    print(text_out)
    replace_section(OUT, "nongaussian", f"extrapolation {name}", text_out, "")


if __name__ == "__main__":
    main(sys.argv[1:])
