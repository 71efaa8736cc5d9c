"""Real networks against both DMFTs, judged as in issue 10: at t = 0.5, 1, 2, does each theory
agree with the networks' means within 3 combined standard errors + 0.005 for a, v, C_d(t, 0),
e_tr and e_ts?

Settings (`--setting`):

- `fig4`: the paper's Fig. 4 setting, h = phihat = 0.9 q + q^3/6 (sigma = the Hermite
  activation realizing h, phi = sigma, k = 1), tau = 0.3, alpha = n/(m d) = 0.3, a_i(0) = 1,
  w_i(0) uniform on the sphere; any `--m`.
- `spec76`: spec nongaussian.md 7.6: m = 2, h = phihat = 0.6 q + 0.4 q^2, alpha_bar = n/d = 2,
  a(0) = (1.2, 0.6), tau = 0.3.

Networks: `dj.train` (full-batch projected GD, step dt = lr d / n = `--dt-net`), vmapped over
`--seeds`, at `--d`; observables are neuron means (a, v = mean_i <w_i, u>, C_d0 =
mean_i <w_i(t), w_i(0)>). Both theories run through the command line, as a user (and the
held-out checks) would: `dmft-jax solve --init` (the Gaussian DMFT, Euler, `--dt`) and
`dmft-jax solve --theory nongaussian` (the causal pass, `--dt`, `--draws` per key, keys pooled).

Usage: python benchmarks/nongaussian_agreement.py --setting fig4 --m 8 [--d 1000] [--seeds 20]
       [--dt 0.05] [--draws 8000] [--keys 0 1] [--sampling factor|paths] [--section NAME]
Writes the section `agreement <setting> m=<m>` of benchmarks/results/nongaussian.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import dmft_jax as dj  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _report import replace_section  # noqa: E402

TIMES = (0.5, 1.0, 2.0)
NAMES = ("e_tr", "e_ts", "C_d0", "a", "v")
SETTINGS = {
    "fig4": dict(h=[0.0, 0.9, 0.0, 1.0 / 6.0], tau=0.3, alpha=0.3, a0=None),
    "spec76": dict(h=[0.0, 0.6, 0.4], tau=0.3, alpha=1.0, a0=[1.2, 0.6]),
}


def at(t, x, time):
    return x[int(np.argmin(np.abs(np.asarray(t) - time)))]


def networks(setting, m, d, seeds, dt_net, t_max):
    """Means and standard errors over seeds of the networks' observables at TIMES."""
    alpha = setting["alpha"]
    a0 = np.full(m, 1.0) if setting["a0"] is None else np.asarray(setting["a0"], float)
    lr = dt_net * alpha * m                      # t = k lr d / n = k lr / (alpha m)
    steps = int(round(t_max / dt_net))
    every = max(1, int(round(0.1 / dt_net)))
    proto = dj.Protocol(m=m, d=d, steps=steps, record_every=every)
    prob = dj.problem(setting["h"], "same")
    keys = jax.random.split(jax.random.PRNGKey(12345), seeds)
    one = lambda k: dj.train(k, prob, proto, a0=a0, lr=lr, tau=setting["tau"], alpha=alpha)  # noqa: E731
    # vmapped seeds hold every seed's data at once: one after the other when that is large
    big = alpha * m * d * d * seeds * 8 > 2e9
    traj = jax.jit(lambda ks: jax.lax.map(one, ks) if big else jax.vmap(one)(ks))(keys)
    ok = ~np.asarray(traj.diverged)
    out = {}
    for name in NAMES:
        x = np.asarray(getattr(traj, name))[ok]
        out[name] = [(at(traj.t[0], x.mean(0), t),
                      at(traj.t[0], x.std(0, ddof=1) / np.sqrt(x.shape[0]), t)) for t in TIMES]
    return out, int((~ok).sum()), lr


def cli(args_list):
    cmd = [sys.executable, "-m", "dmft_jax", "solve", *args_list, "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def theories(setting, m, dt, draws, keys, t_max, tmp, sampling="factor"):
    """Gaussian and non-Gaussian DMFT (command line) at TIMES: {name: [(value, se), ...]}."""
    a0 = np.full(m, 1.0) if setting["a0"] is None else np.asarray(setting["a0"], float)
    init = os.path.join(tmp, "init.npz")
    np.savez(init, a=a0, C=np.eye(m))
    h = ",".join(repr(c) for c in setting["h"])
    common = ["--h", h, "--target", "same", "--tau", str(setting["tau"]),
              "--alpha", str(setting["alpha"]), "--m", str(m), "--init", init,
              "--dt", str(dt), "--steps", str(int(round(t_max / dt)))]
    rows, info = {}, {}
    t0 = time.perf_counter()
    cli(common + ["--out", os.path.join(tmp, "g.npz")])
    info["gaussian_s"] = time.perf_counter() - t0
    g = np.load(os.path.join(tmp, "g.npz"))
    gobs = dict(e_tr=g["e_tr"], e_ts=g["e_ts"],
                C_d0=np.mean(np.diagonal(g["C"][:, 0], axis1=1, axis2=2), axis=1),
                a=np.mean(g["a"], axis=1), v=np.mean(g["v"][..., 0], axis=1))
    rows["Gaussian"] = {n: [(at(g["t"], x, t), 0.0) for t in TIMES] for n, x in gobs.items()}
    pooled = {n: [] for n in NAMES}
    t0 = time.perf_counter()
    for key in keys:
        f = os.path.join(tmp, f"ng{key}.npz")
        summary = cli(common + ["--theory", "nongaussian", "--draws", str(draws), "--seed",
                                str(key), "--sampling", sampling, "--out", f])
        z = np.load(f)
        for n, src in dict(e_tr="e_tr", e_ts="e_ts", C_d0="C_d0", a="a_mean",
                           v="v_mean").items():
            x, se = z[src], z[src + "_se"]
            x, se = (x[..., 0], se[..., 0]) if x.ndim > 1 else (x, se)
            pooled[n].append((x, se))
        info.setdefault("ng_summaries", []).append(summary)
    info["nongaussian_s"] = time.perf_counter() - t0
    rows["non-Gaussian"] = {}
    for n, parts in pooled.items():   # inverse-variance pooling of independent keys
        exact = np.all([se == 0 for _, se in parts], axis=0)     # t = 0: no Monte Carlo error
        w = [np.where(exact, 1.0, 1.0 / np.where(exact, 1.0, se) ** 2) for _, se in parts]
        mean = sum(wi * x for wi, (x, _) in zip(w, parts)) / sum(w)
        se = np.where(exact, 0.0, 1.0 / np.sqrt(sum(w)))
        rows["non-Gaussian"][n] = [(at(z["t"], mean, t), at(z["t"], se, t)) for t in TIMES]
    return rows, info


def verdict(net, theory):
    """Per cell: (difference, allowed = 3 combined se + 0.005, agrees)."""
    out = {}
    for n in NAMES:
        out[n] = []
        for (x, sx), (y, sy) in zip(net[n], theory[n]):
            allowed = 3.0 * np.hypot(sx, sy) + 0.005
            out[n].append((y - x, allowed, abs(y - x) <= allowed))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="fig4")
    p.add_argument("--m", type=int, default=4)
    p.add_argument("--d", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--dt-net", type=float, default=0.01)
    p.add_argument("--dt", type=float, default=0.05, help="DMFT step (both theories)")
    p.add_argument("--draws", type=int, default=8000)
    p.add_argument("--keys", type=int, nargs="+", default=[0])
    p.add_argument("--sampling", choices=["factor", "paths"], default="factor",
                   help="the non-Gaussian DMFT's --sampling (section name gets ' paths')")
    p.add_argument("--section", default=None)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "nongaussian.md"))
    args = p.parse_args(argv)
    setting = SETTINGS[args.setting]
    m = 2 if args.setting == "spec76" else args.m
    t_max = max(TIMES)
    t0 = time.perf_counter()
    net, ndiv, lr = networks(setting, m, args.d, args.seeds, args.dt_net, t_max)
    t_net = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        rows, info = theories(setting, m, args.dt, args.draws, args.keys, t_max, tmp,
                              args.sampling)
    paths = args.sampling == "paths"
    lines = [f"## Agreement, setting {args.setting}, m = {m}"
             + (", path-wise sampling" if paths else ""), "",
             f"h = phihat = {setting['h']}, tau = {setting['tau']}, alpha = {setting['alpha']} "
             f"(alpha_bar = {setting['alpha'] * m:g}), a(0) = "
             f"{setting['a0'] or 1.0}. Networks: d = {args.d}, {args.seeds} seeds ({ndiv} "
             f"diverged), full-batch projected GD, lr = {lr:g} (dt = {args.dt_net:g}). Theories "
             f"through `dmft-jax solve`, Euler dt = {args.dt:g}; non-Gaussian "
             f"(`--sampling {args.sampling}`): {args.draws} "
             f"draws x keys {args.keys} (pooled). Cells: value (se); for the theories also the "
             "difference to the networks / the allowance 3 combined se + 0.005, and ok / MISS.",
             ""]
    tally = {}
    for n in NAMES:
        lines += [f"**{n}**", "", "| | " + " | ".join(f"t = {t:g}" for t in TIMES) + " |",
                  "|---|" + "---|" * len(TIMES)]
        lines.append("| networks | " + " | ".join(f"{x:.4f} ({s:.4f})" for x, s in net[n])
                     + " |")
        for who, th in rows.items():
            ver = verdict(net, th)[n]
            cells = [f"{x:.4f}" + (f" ({s:.4f})" if s > 0 else "")
                     + f"; {dv:+.4f} / {al:.4f} {'ok' if good else 'MISS'}"
                     for (x, s), (dv, al, good) in zip(th[n], ver)]
            lines.append(f"| {who} DMFT | " + " | ".join(cells) + " |")
            tally.setdefault(who, []).extend(good for _, _, good in ver)
        lines.append("")
    for who, goods in tally.items():
        lines.append(f"- {who} DMFT: {sum(goods)} of {len(goods)} cells within the allowance")
    summ = info["ng_summaries"][-1]
    lines += [f"- wall times (s, 2-core CPU, with compilation): networks {t_net:.0f}, Gaussian "
              f"{info['gaussian_s']:.0f}, non-Gaussian {info['nongaussian_s']:.0f} "
              f"({len(args.keys)} key(s)); last non-Gaussian summary: "
              + ", ".join(f"{k} = {v}" for k, v in summ.items()
                          if k in ("wall_time_s", "compile_time_s", "method")), ""]
    text = "\n".join(lines)
    print(text)
    header = ("# The non-Gaussian DMFT against real networks (issue 10)\n\n"
              "Written by `benchmarks/nongaussian_check.py` and "
              "`benchmarks/nongaussian_agreement.py` (settings in their docstrings).\n")
    section = f"agreement {args.setting} m={m}" + (" paths" if paths else "")
    replace_section(args.out, "nongaussian", args.section or section,
                    text, header)


if __name__ == "__main__":
    main()
