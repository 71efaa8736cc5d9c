"""Figures of DMFT solutions (matplotlib, Agg backend; never imported by the solvers)."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_solution(arrays: dict, path: str, title: str = "") -> None:
    """Four panels: errors, second layer, overlap with the target, correlations."""
    plt = _pyplot()
    t = arrays["t"]
    fig, ax = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
