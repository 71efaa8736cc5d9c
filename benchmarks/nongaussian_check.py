"""Real networks against the Gaussian and the non-Gaussian DMFT at small width (issue 10).

Setting (spec nongaussian.md N14, 7.6, 7.8, with a symmetric initialization so that the
public trainer applies): h = phihat = 0.6 q + 0.4 q^2 (sigma = sqrt(0.6) He_1 + sqrt(0.4)
He_2 / sqrt(2), phi = sigma, k = 1), tau = 0.3, alpha_bar = n/d = 2, a_i(0) = 1.2, w_i(0)
uniform on the sphere (C(0, 0) = I, v(0) = 0), times t <= 2.

- Networks: `dj.sweep` (full-batch projected GD, dt = lr d / n = 0.01, so that the GD-flow
  difference is O(0.01)), d = 1000 (n = 2000), seeds averaged (mean +- standard error).
- Gaussian DMFT: `dj.general_dmft` (Euler) at dt = 0.1 and 0.01.
- Non-Gaussian DMFT: `dj.nongaussian_dmft` (the causal pass, Euler) at dt = 0.1 and 0.05,
  draws in 8 replicas (mean +- replica standard error).

Usage: python benchmarks/nongaussian_check.py [--m 2] [--d 1000] [--seeds 20] [--draws 8000]
       [--keys 0 1 ...] [--ng-dts 0.1 0.05] [--section NAME] [--networks-only]
Writes the section `m=<m>` of benchmarks/results/nongaussian.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import dmft_jax as dj  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section  # noqa: E402

H = [0.0, 0.6, 0.4]
TAU, ABAR, A0, T = 0.3, 2.0, 1.2, 2.0
CHECK_TIMES = (0.5, 1.0, 1.5, 2.0)


def at(t_grid, values, t):
    return values[int(np.argmin(np.abs(np.asarray(t_grid) - t)))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=2)
    p.add_argument("--d", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--draws", type=int, default=8000)
    p.add_argument("--dt-net", type=float, default=0.01)
    p.add_argument("--ng-dts", type=float, nargs="+", default=[0.1, 0.05])
    p.add_argument("--keys", type=int, nargs="+", default=[0],
                   help="keys of independent non-Gaussian solves, pooled (8 replicas each)")
    p.add_argument("--section", default=None,
                   help="key of the results section (default m=<m>)")
    p.add_argument("--networks-only", action="store_true",
                   help="only the networks (finite-d study); print, write nothing")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "nongaussian.md"))
    args = p.parse_args(argv)
    m = args.m
    alpha = ABAR / m
    rows = {}
    timing = {}

    # ---- networks
    t0 = time.perf_counter()
    lr = args.dt_net * ABAR            # dt = lr d / n = lr / alpha_bar
    steps = int(round(T / args.dt_net))
    every = max(1, int(round(0.1 / args.dt_net)))
    prob = dj.problem(H, "same")
    res = dj.sweep(prob, m=m, d=args.d, steps=steps, record_every=every, seeds=args.seeds,
                   a0=(A0,), lr=(lr,), tau=(TAU,), alpha=(alpha,), dmft=False)
    t_net = res.t[0, 0, 0, 0]
    net = {name: res.stats(name) for name in ("e_tr", "e_ts", "C_d0", "a")}
    ndiv = int(np.sum(res.experiment["diverged"]))
    timing["networks"] = time.perf_counter() - t0
    for name, (mean, se, count) in net.items():
        rows[(name, "networks")] = [(at(t_net, mean[0, 0, 0, 0], t), at(t_net, se[0, 0, 0, 0], t))
                                    for t in CHECK_TIMES]

    if args.networks_only:
        for name in net:
            cells = [f"{v:.4f} ({s:.4f})" for v, s in rows[(name, "networks")]]
            print(f"| {name} | d = {args.d} | " + " | ".join(cells) + " |")
        return

    # ---- Gaussian DMFT (general algebra, symmetric initialization)
    for dt in (0.1, 0.01):
        t0 = time.perf_counter()
        g = dj.solve(dj.general_dmft(H, dj.target("same", H), tau=TAU, a=np.full(m, A0),
                                     C=np.eye(m), alpha_bar=ABAR),
                     dj.TimeGrid(dt, int(round(T / dt))))
        timing[f"gaussian dt={dt}"] = time.perf_counter() - t0
        obs = dict(e_tr=np.asarray(g.e_tr), e_ts=np.asarray(g.e_ts),
                   C_d0=np.mean(np.diagonal(np.asarray(g.C_t0), axis1=1, axis2=2), axis=1),
                   a=np.mean(np.asarray(g.a), axis=1))
        for name, x in obs.items():
            rows[(name, f"Gaussian DMFT dt={dt}")] = [(at(g.t, x, t), 0.0) for t in CHECK_TIMES]

    # ---- non-Gaussian DMFT
    diag = {}
    for dt in args.ng_dts:
        t0 = time.perf_counter()
        pooled, sols = {}, []
        for key in args.keys:     # independent keys: their replicas are pooled
            ng = dj.solve(dj.nongaussian_dmft(H, "same", tau=TAU, a=np.full(m, A0), C=np.eye(m),
                                              alpha_bar=ABAR, draws=args.draws, key=key,
                                              groups=8),
                          dj.TimeGrid(dt, int(round(T / dt))), throw=False)
            jax.block_until_ready(ng.e_tr)
            sols.append(ng)
            rep = ng.replicas
            per = dict(e_tr=np.asarray(rep["e_tr"]), e_ts=np.asarray(rep["e_ts"]),
                       C_d0=np.mean(np.diagonal(np.asarray(rep["C_t0"]), axis1=2, axis2=3), 2),
                       a=np.mean(np.asarray(rep["a"]), axis=2))
            for name, x in per.items():
                pooled.setdefault(name, []).append(x)
        timing[f"non-Gaussian dt={dt}"] = time.perf_counter() - t0
        for name, parts in pooled.items():
            x = np.concatenate(parts, axis=0)
            mean, se = x.mean(0), x.std(0, ddof=1) / np.sqrt(x.shape[0])
            rows[(name, f"non-Gaussian DMFT dt={dt}")] = [(at(ng.t, mean, t), at(ng.t, se, t))
                                                          for t in CHECK_TIMES]
        ok = all(bool(sol.result == dj.RESULTS.successful) for sol in sols)
        diag[dt] = dict(result="successful" if ok else "not successful (diverged)",
                        clipped=max(float(np.max(sol.clipped)) for sol in sols),
                        mismatch=max(float(np.max(sol.sampling_mismatch)) for sol in sols),
                        stiff=max(float(np.max(sol.stiff_fraction)) for sol in sols),
                        stiffness=max(float(np.max(sol.stiffness)) for sol in sols),
                        nu_gap=max(float(np.max(np.abs(np.asarray(sol.nu_k2 - sol.nu))))
                                   for sol in sols),
                        nu_se=max(float(np.max(np.asarray(sol.nu_se))) for sol in sols),
                        e0=(float(ng.e_tr[0]), float(ng.e_tr_se[0]), float(ng.e_ts[0])))

    # ---- report
    lines = [f"## m = {m} (alpha = n/(m d) = {alpha:g}, alpha_bar = {ABAR:g})", "",
             f"Networks: d = {args.d}, n = {int(round(alpha * m * args.d))}, "
             f"{args.seeds} seeds ({ndiv} diverged), full-batch projected GD with lr = {lr:g} "
             f"(dt = {args.dt_net:g}). Non-Gaussian DMFT: {args.draws} draws in 8 replicas per "
             f"key, keys {args.keys} pooled. Entries: value (standard error).", ""]
    for name in ("e_tr", "e_ts", "C_d0", "a"):
        lines += [f"**{name}**" + (" (neuron mean of C_ii(t, 0))" if name == "C_d0" else ""), "",
                  "| | " + " | ".join(f"t = {t:g}" for t in CHECK_TIMES) + " |",
                  "|---|" + "---|" * len(CHECK_TIMES)]
        for (obs, who), vals in rows.items():
            if obs != name:
                continue
            cells = [f"{v:.4f}" + (f" ({s:.4f})" if s > 0 else "") for v, s in vals]
            lines.append(f"| {who} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Diagnostics of the non-Gaussian solves:", ""]
    for dt, dg in diag.items():
        lines.append(
            f"- dt = {dt:g}: result {dg['result']}; max clipped mass {dg['clipped']:.2e}; max "
            f"sampling mismatch {dg['mismatch']:.2e}; max fraction of stiff draws "
            f"{dg['stiff']:.2e} (max lambda_max(S)/m = {dg['stiffness']:.3g}); max |nu_K2 - "
            f"nu_W5| = {dg['nu_gap']:.3g} (max se of nu {dg['nu_se']:.3g}); e_tr(0) = "
            f"{dg['e0'][0]:.4f} ({dg['e0'][1]:.4f}) vs e_ts(0) = {dg['e0'][2]:.4f} (last key)")
    lines += ["", "Wall times (s, 1 CPU core, including compilation): "
              + ", ".join(f"{k} {v:.0f}" for k, v in timing.items()), ""]
    text = "\n".join(lines)
    print(text)
    header = ("# The non-Gaussian DMFT against real networks (issue 10)\n\n"
              "Written by `benchmarks/nongaussian_check.py` (see its docstring for the setting). "
              "One section per width.\n")
    replace_section(args.out, "nongaussian", args.section or f"m={m}", text, header)


if __name__ == "__main__":
    main()
