"""The exact linear-sigma identity of the non-Gaussian DMFT (spec nongaussian.md 6.2), and how
far it fails when one convention is broken (issue 10).

sigma = 0.8 z, phi = 0.7 z (k = 1), m = 2, alpha_bar = 2, a(0) = (1.2, 0.6), v(0) = (0.3, -0.2),
tau = 0.3, Euler dt = 0.1, 20 steps, 4000 draws in 8 replicas. For the correct model and for
each broken variant: the largest |non-Gaussian - Gaussian| / standard error over t > 0 of a,
e_tr, C(t, 0), nu, v. Writes the section `conventions` of benchmarks/results/nongaussian.md.

Usage: python benchmarks/nongaussian_conventions.py
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import dmft_jax as dj  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section  # noqa: E402

S1, F1 = 0.8, 0.7
A0, V0 = np.array([1.2, 0.6]), np.array([[0.3], [-0.2]])


class NoN4(dj.NonGaussianDMFT):
    """K.8 as printed: C^E without alpha_bar."""

    def _sample_side(self, n, s, wts, xi_n):
        s, k = super()._sample_side(n, s, wts, xi_n)
        return s, k._replace(noise=k.noise / self.alpha_bar)


class ForceSign(dj.NonGaussianDMFT):
    """force = +M* instead of -M*."""

    def _sample_side(self, n, s, wts, xi_n):
        s, k = super()._sample_side(n, s, wts, xi_n)
        return s, k._replace(force=-k.force)


class NoN3(dj.NonGaussianDMFT):
    """r0 independent of xi (K.4's text as printed): xi ~ GP(0, C)."""

    def _extend_paths(self, n, s):
        out, xi = super()._extend_paths(n, dict(s, v=jnp.zeros_like(s["v"])))
        return dict(out, v=s["v"]), xi


class NoDelta(dj.NonGaussianDMFT):
    """The instantaneous memory M^delta dropped."""

    def _sample_side(self, n, s, wts, xi_n):
        s, k = super()._sample_side(n, s, wts, xi_n)
        return s, k._replace(delta=0 * k.delta)


def main():
    sigma, h = dj.hermite_activation([0.0, S1, 0.0]), dj.Polynomial([0.0, S1**2, 0.0])
    tg = dj.target([0.0, S1 * F1, 0.0], [0.0, S1**2, 0.0])
    phi_1 = dj.hermite_activation([0.0, F1, 0.0])

    def phi(r0):                       # phi(r0) = F1 r0 (k = 1), pointwise on r0 (..., k)
        return phi_1(r0)[..., 0]

    grid = dj.TimeGrid(0.1, 20)
    gauss = dj.solve(dj.general_dmft(h, tg, tau=0.3, a=A0, C=np.eye(2), v=V0, alpha_bar=2.0),
                     grid)
    base = dj.nongaussian_dmft(sigma, phi, h=h, target=tg, tau=0.3, a=A0, v=V0, alpha_bar=2.0,
                               draws=4000, key=0, groups=8)
    fields = [f.name for f in dataclasses.fields(base) if f.init]
    names = ("a", "e_tr", "C_t0", "nu", "v")
    lines = ["## The linear-sigma identity and broken conventions", "",
             "Written by `benchmarks/nongaussian_conventions.py` (setting in its docstring). "
             "Max over t > 0 of |non-Gaussian - Gaussian| / standard error.", "",
             "| model | " + " | ".join(names) + " | e_tr(2) | C_d(2, 0) |",
             "|---|" + "---|" * (len(names) + 2)]
    for cls in (dj.NonGaussianDMFT, NoN4, ForceSign, NoN3, NoDelta):
        sol = dj.solve(cls(**{f: getattr(base, f) for f in fields}), grid, throw=False)
        cells = []
        for name in names:
            x, se, y = (np.asarray(getattr(sol, name))[1:],
                        np.asarray(getattr(sol, name + "_se"))[1:],
                        np.asarray(getattr(gauss, name))[1:])
            keep = se > 1e-12
            cells.append(f"{np.max(np.abs(x - y)[keep] / se[keep]):.1f}")
        label = "correct" if cls is dj.NonGaussianDMFT else f"{cls.__name__}: {cls.__doc__.strip()}"
        lines.append(f"| {label} | " + " | ".join(cells)
                     + f" | {float(sol.e_tr[-1]):.4f} ({float(sol.e_tr_se[-1]):.4f})"
                     f" | {float(sol.C_t0[-1, 0, 0]):.4f} ({float(sol.C_t0_se[-1, 0, 0]):.4f}) |")
    lines.append(f"| Gaussian DMFT (reference) | | | | | | {float(gauss.e_tr[-1]):.4f} "
                 f"| {float(gauss.C_t0[-1, 0, 0]):.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(os.path.dirname(__file__), "results", "nongaussian.md")
    replace_section(out, "nongaussian", "conventions", text, "")


if __name__ == "__main__":
    main()
