"""Figures of DMFT solutions and experiments (matplotlib `Figure` objects, no pyplot: no global
state, no backend switch, safe in the command line's worker thread; never imported by the
solvers)."""

from __future__ import annotations

import numpy as np


def new_figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (10, 7)):
    """(figure, axes array of shape (rows, cols)) with a constrained layout."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_figure(fig, path: str, dpi: int = 120) -> None:
    """Write `fig` to `path` (format from the extension)."""
    fig.savefig(path, dpi=dpi)


def plot_solution(arrays: dict, path: str, title: str = "") -> None:
    """`solution_figure` written to `path`."""
    save_figure(solution_figure(arrays, title), path)


def solution_figure(arrays: dict, title: str = ""):
    """Four panels: errors, second layer, overlap with the target, correlations."""
    t = arrays["t"]
    fig, ax = new_figure(2, 2, (10, 7))
    ax[0, 0].plot(t, arrays["e_tr"], label="train $e_{tr}$")
    ax[0, 0].plot(t, arrays["e_ts"], label="test $e_{ts}$")
    ax[0, 0].set(xlabel="t", ylabel="error", title="errors [C.24, C.25]")
    ax[0, 0].legend()
    a = np.asarray(arrays["a"])
    ax[0, 1].plot(t, a if a.ndim == 1 else a, lw=1.5)
    ax[0, 1].set(xlabel="t", ylabel="a(t)", title="second layer")
    v = np.asarray(arrays["v"]).reshape(len(t), -1)
    ax[1, 0].plot(t, v, lw=1.5)
    ax[1, 0].set(xlabel="t", ylabel="v(t)", title="overlap with the target directions")
    if "C_d" in arrays:
        idx = np.arange(len(t))
        ax[1, 1].plot(t, arrays["C_d"][:, 0], label="$C_d(t, 0)$")
        ax[1, 1].plot(t, arrays["C_o"][idx, idx], label="$C_o(t, t)$")
    else:
        C = np.asarray(arrays["C"])
        m = C.shape[-1]
        for i in range(min(m, 6)):
            ax[1, 1].plot(t, C[:, 0, i, i], lw=1, label=f"$C_{{{i + 1}{i + 1}}}(t, 0)$")
    ax[1, 1].set(xlabel="t", title="correlations")
    ax[1, 1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
