"""Real networks against the DMFT in the setting of Fig. 4, and the train-error gap versus m.

    python benchmarks/gap_study.py --quick          # CPU, < 2 min: d = 50, m = 8, 16, 32, 6 runs
    python benchmarks/gap_study.py                  # GPU: d = 200, m = 8 ... 128, 10 runs
    python benchmarks/gap_study.py --ms 8,16,32,64 --variant cpu   # any subset
    python benchmarks/gap_study.py --paper-protocol   # experiment vs an independent NumPy SGD

Setting (spec section 9, Fig. 4): h = phihat = 0.9 q + q^3/6 (sigma = phi = sqrt(0.9) x +
(x^3 - 3x)/6), tau = 0.3, alpha = 0.3, a_i(0) = 1, W(0) entries N(0, 1/d) projected. Two
protocols: full-batch GD (step 0.1, unit sphere) and the paper's SGD (step 0.1, batch 100,
unit ball). For every m one `sweep` trains the runs and solves the symmetric DMFT at the same
m and the same step dt = lr d / n (no fitted time factor), compiled together.

The DMFT is exact for the Gaussian model (spec section 3); real features are not Gaussian, and
the train error of real networks sits below the DMFT's. This script measures that gap
e_tr(DMFT) - e_tr(experiment) at t = 0.5, 1, 2 for each m and fits gap ~ m^slope; a(t), v(t)
and e_ts(t) should agree within a few standard errors at every m.

Writes (replacing its own variant's section) benchmarks/results/gap_study.md and the figure
benchmarks/figures/gap_study_<variant>.png.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import replace_section  # noqa: E402

jax.config.update("jax_enable_x64", True)

from dmft_jax import problem  # noqa: E402
from dmft_jax import sweep  # noqa: E402
from dmft_jax import n_samples  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CUBIC = [0.0, 0.9, 0.0, 1.0 / 6.0]
TAU, ALPHA, A0, LR = 0.3, 0.3, 1.0, 0.1
TIMES = (0.5, 1.0, 2.0)
#: Reference numbers (engineering notes; d = 200, full-batch GD, t = 2): (m, name) ->
#: (experiment, DMFT).
REFERENCE = {(16, "a"): (1.075, 1.077), (16, "v"): (0.380, 0.383), (16, "e_ts"): (0.306, 0.303),
             (16, "e_tr"): (0.145, 0.215), (64, "e_tr"): (0.216, 0.241)}


def run_m(m: int, d: int, seeds: int, protocol: str, t_max: float, record: float, batch: int):
    """One sweep (seeds runs and the DMFT) at width m; returns a dict of arrays and seconds."""
    n = n_samples(ALPHA, m, d)
    dt = LR * d / n
    every = max(1, int(round(record / dt)))
    steps = int(round(t_max / dt))
    sgd = protocol == "sgd"
    t0 = time.perf_counter()
    res = sweep(problem(CUBIC), m=m, d=d, steps=steps, record_every=every, seeds=seeds,
                a0=A0, lr=LR, tau=TAU, alpha=ALPHA, batch=min(batch, n) if sgd else 0,
                projection="ball" if sgd else "sphere")
    seconds = time.perf_counter() - t0
    out = dict(t=res.t[0, 0, 0, 0], seconds=seconds, n=n, steps=res.params["steps"],
               diverged=int(res.experiment["diverged"].sum()))
    for name in ("a", "v", "e_ts", "e_tr", "C_d0", "C_o"):
        mean, se, _ = res.stats(name)
        out[name] = mean[0, 0, 0, 0]
        out[f"{name}_se"] = se[0, 0, 0, 0]
        out[f"dmft_{name}"] = res.dmft[name][0, 0, 0, 0]
    e_tr = res.experiment["e_tr"][:, 0, 0, 0, 0]
    e_ts = res.experiment["e_ts"][:, 0, 0, 0, 0]
    raw = res.dmft["e_tr"][0, 0, 0, 0][None, :] - e_tr
    out["gap_raw"] = raw
    # Control variate c = e_tr(0) - e_ts(0): its mean is exactly 0 (the training set is
    # independent of W(0) and e_ts is the exact population risk) and it carries the run's
    # training-set noise, which dominates the spread of e_tr(t) at early times (correlation
    # -0.98 at t <= 0.5, d = 200). Regression estimator: gap - beta_t c, beta_t fitted per time.
    c = e_tr[:, 0] - e_ts[:, 0]
    if seeds > 2 and np.var(c) > 0:
        beta = ((raw - raw.mean(0)) * (c - c.mean())[:, None]).mean(0) / np.var(c)
        out["gap_runs"] = raw - beta[None, :] * c[:, None]
    else:
        out["gap_runs"] = raw
    return out


def at(r, name, t):
    """Value of r[name] at the recorded time nearest to t, with that time."""
    j = int(np.argmin(np.abs(r["t"] - t)))
    return r[name][j], r["t"][j]


def fit_rate(ms, gaps, ses):
    """Weighted least squares of log gap on log m: (slope, its standard error)."""
    ms, gaps, ses = (np.asarray(x, float) for x in (ms, gaps, ses))
    ok = gaps > 0
    if ok.sum() < 2:
        return float("nan"), float("nan")
    x, y = np.log(ms[ok]), np.log(gaps[ok])
    w = (gaps[ok] / np.maximum(ses[ok], 1e-12)) ** 2  # var(log gap) ~ (se / gap)^2
    X = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    coef = cov @ X.T @ (w * y)
    return float(coef[1]), float(np.sqrt(cov[1, 1]))


def numpy_paper_sgd(seed, m, d, n, lr, batch, steps, tau, n_test=20000):
    """An independent NumPy implementation of the paper's SGD runs (spec section 9): W(0)
    entries N(0, 1/d) projected onto the unit ball, a_i(0) = 1, constant step, batches of
    distinct random samples, projection onto the unit ball after every step; Fig. 4's
    sigma = phi = sqrt(0.9) x + (x^3 - 3x)/6. Returns final a, v, e_tr and a Monte Carlo e_ts."""
    rng = np.random.default_rng(seed)
    sig = lambda x: np.sqrt(0.9) * x + (x**3 - 3 * x) / 6  # noqa: E731
    dsig = lambda x: np.sqrt(0.9) + (3 * x**2 - 3) / 6  # noqa: E731
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    X = rng.normal(size=(n, d))
    y = sig(X @ u) + tau * rng.normal(size=n)
    W = rng.normal(size=(m, d)) / np.sqrt(d)
    W /= np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1.0)
    a = np.ones(m)
    for _ in range(steps):
        idx = rng.choice(n, batch, replace=False)
        Xb, yb = X[idx], y[idx]
        pre = Xb @ W.T
        r = yb - sig(pre) @ a / m
        ga = -(sig(pre).T @ r) / (m * batch)
        gW = -((r[:, None] * dsig(pre) * a[None, :]).T @ Xb) / (m * batch)
        a, W = a - lr * ga, W - lr * gW
        W /= np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1.0)
    e_tr = 0.5 * np.mean((y - sig(X @ W.T) @ a / m) ** 2)
    Xt = rng.normal(size=(n_test, d))
    e_ts = 0.5 * np.mean((sig(Xt @ u) + tau * rng.normal(size=n_test) - sig(Xt @ W.T) @ a / m) ** 2)
    return dict(a=a.mean(), v=(W @ u).mean(), e_tr=e_tr, e_ts=e_ts)


def paper_protocol(m=16, d=200, seeds=60, t_max=2.0, seed=7):
    """`dmft-jax experiment` (defaults: the paper's SGD protocol) against `numpy_paper_sgd`:
    final a, v, e_tr, e_ts over `seeds` runs each; returns markdown lines."""
    n = n_samples(ALPHA, m, d)
    steps = int(round(t_max / (LR * d / n)))
    t0 = time.perf_counter()
    res = sweep(problem(CUBIC), m=m, d=d, steps=steps, record_every=steps, seeds=seeds,
                seed=seed, a0=A0, lr=LR, tau=TAU, alpha=ALPHA, batch=100, projection="ball")
    t1 = time.perf_counter()
    ref = [numpy_paper_sgd(1000 + s, m, d, n, LR, 100, steps, TAU, n_test=40000)
           for s in range(seeds)]
    t2 = time.perf_counter()
    lines = ["## The paper's SGD protocol, two implementations", "",
             f"`dmft-jax experiment` defaults (batch 100, step 0.1, unit ball, W(0) entries "
             f"N(0, 1/d) projected, a_i(0) = 1) against an independent NumPy loop "
             f"(`numpy_paper_sgd`; its e_ts by Monte Carlo on 40000 samples): m = {m}, "
             f"d = {d}, n = {n}, {steps} steps (t = {t_max:g}), {seeds} runs each "
             f"({t1 - t0:.0f} s / {t2 - t1:.0f} s).", "",
             "| observable | dmft-jax | NumPy | z | DMFT |", "|---|---|---|---|---|"]
    for name in ("a", "v", "e_tr", "e_ts"):
        ours = res.experiment[name][:, 0, 0, 0, 0, -1]
        theirs = np.array([r[name] for r in ref])
        se1, se2 = (x.std(ddof=1) / np.sqrt(x.size) for x in (ours, theirs))
        z = (ours.mean() - theirs.mean()) / np.hypot(se1, se2)
        lines.append(f"| {name} | {ours.mean():.4f} +- {se1:.4f} | {theirs.mean():.4f} +- "
                     f"{se2:.4f} | {z:.2f} | {res.dmft[name][0, 0, 0, 0, -1]:.4f} |")
    return lines


# ----------------------------------------------------------------------------------- report
def table(results, protocol, t_report):
    lines = [f"#### {protocol.upper()} at t = {t_report:g} (experiment mean +- s.e. vs DMFT; "
             "|diff| / s.e.)", "",
             "| m | n | runs (diverged) | a | v | e_ts | e_tr | gap e_tr (c.v.) | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, r in sorted(results.items()):
        cells = []
        for name in ("a", "v", "e_ts", "e_tr"):
            x, _ = at(r, name, t_report)
            se, _ = at(r, f"{name}_se", t_report)
            th, _ = at(r, f"dmft_{name}", t_report)
            z = abs(x - th) / se if se > 0 else float("nan")
            cells.append(f"{x:.4f} +- {se:.4f} vs {th:.4f} ({z:.1f})")
        j = int(np.argmin(np.abs(r["t"] - t_report)))
        gr = r["gap_runs"][:, j]
        g = f"{gr.mean():.4f} +- {gr.std(ddof=1) / np.sqrt(gr.size):.4f}"
        lines.append(f"| {m} | {r['n']} | {r['runs']} ({r['diverged']}) | " + " | ".join(cells)
                     + f" | {g} | {r['seconds']:.0f} |")
    return lines


def gap_rates(results, t_max):
    out = []
    ms = sorted(results)
    for t in [x for x in TIMES if x <= t_max + 1e-9]:
        gaps, ses = [], []
        for m in ms:
            r = results[m]
            j = int(np.argmin(np.abs(r["t"] - t)))
            g = r["gap_runs"][:, j]
            gaps.append(g.mean())
            ses.append(g.std(ddof=1) / np.sqrt(g.size))
        slope, err = fit_rate(ms, gaps, ses)
        cells = ", ".join(f"m={m}: {g:.4f}+-{s:.4f}" for m, g, s in zip(ms, gaps, ses))
        out.append((t, slope, err, cells))
    return out


def figure(all_results, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    gd = all_results.get("gd", {})
    for j, (m, r) in enumerate(sorted(gd.items())):
        c = colors[j % len(colors)]
        for k, name in enumerate(("e_tr", "a", "e_ts")):
            axis = ax.flat[(0, 2, 3)[k]]
            axis.plot(r["t"], r[f"dmft_{name}"], "-", color=c, lw=1.4)
            axis.errorbar(r["t"], r[name], yerr=r[f"{name}_se"], fmt="o", ms=3, color=c,
                          capsize=2, label=f"m={m}")
    for axis, name in zip(ax.flat[[0, 2, 3]], ("train error e_tr", "a(t)", "test error e_ts")):
        axis.set(xlabel="t", ylabel=name, title=f"{name}: GD (symbols) vs DMFT (lines)")
    ax[0, 0].legend(fontsize=8)
    for k, (protocol, res) in enumerate(sorted(all_results.items())):
        if not res:
            continue
        ms = sorted(res)
        for t, marker in zip(TIMES, ("o", "s", "^")):
            gaps, ses = [], []
            for m in ms:
                j = int(np.argmin(np.abs(res[m]["t"] - t)))
                g = res[m]["gap_runs"][:, j]
                gaps.append(g.mean())
                ses.append(g.std(ddof=1) / np.sqrt(g.size))
            if all(abs(res[m]["t"][int(np.argmin(np.abs(res[m]["t"] - t)))] - t) < 1e-6
                   for m in ms):
                ax[0, 1].errorbar(ms, gaps, yerr=ses, fmt=marker + ("-" if k == 0 else "--"),
                                  ms=4, capsize=2, label=f"{protocol.upper()} t={t:g}")
    ax[0, 1].set(xscale="log", yscale="log", xlabel="m", ylabel="e_tr(DMFT) - e_tr(experiment)",
                 title="train-error gap (non-Gaussian features)")
    ax[0, 1].legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_section(path, variant, text):
    """Replace this section of the results file (others are kept)."""
    header = ("# Real networks vs DMFT: Fig. 4 setting and the train-error gap\n\n"
              "Produced by `benchmarks/gap_study.py` (one section per variant; each run "
              "replaces its own section). `--quick`: CPU smoke run; `cpu-d200`: d = 200 on "
              "the 2-core CPU up to m = 64; `full` (d = 200, m = 8 ... 128, GPU): "
              "`python benchmarks/gap_study.py`; `paper-protocol`: `--paper-protocol`.\n")
    replace_section(path, "variant", variant, text, header)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU variant (< 2 min)")
    p.add_argument("--ms", default=None, help="widths, comma-separated")
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--t-max", type=float, default=None)
    p.add_argument("--protocols", default="gd,sgd")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--variant", default=None, help="section name (default quick / full)")
    p.add_argument("--paper-protocol", action="store_true",
                   help="only compare the experiment's SGD with an independent NumPy loop")
    p.add_argument("--results", default=os.path.join(HERE, "results", "gap_study.md"))
    p.add_argument("--figures", default=os.path.join(HERE, "figures"))
    args = p.parse_args(argv)
    if args.paper_protocol:
        lines = paper_protocol(seeds=args.seeds or 60, d=args.d or 200)
        write_section(args.results, "paper-protocol", "\n".join(lines))
        print("\n".join(lines))
        return
    quick = args.quick
    ms = [int(x) for x in (args.ms or ("8,16,32" if quick else "8,16,32,64,128")).split(",")]
    d = args.d or (50 if quick else 200)
    seeds = args.seeds or (8 if quick else 10)
    t_max = args.t_max or (1.0 if quick else 2.0)
    batch = args.batch if not quick else min(args.batch, 25)
    variant = args.variant or ("quick" if quick else "full")
    protocols = [x.strip() for x in args.protocols.split(",") if x.strip()]

    t_start = time.perf_counter()
    results = {}
    for protocol in protocols:
        results[protocol] = {}
        for m in ms:
            r = run_m(m, d, seeds, protocol, t_max, 0.25, batch)
            r["runs"] = seeds
            results[protocol][m] = r
            print(f"{protocol} m={m}: {r['steps']} steps, {r['seconds']:.1f} s; t={r['t'][-1]:.3g}"
                  f" a {r['a'][-1]:.4f}/{r['dmft_a'][-1]:.4f} v {r['v'][-1]:.4f}/"
                  f"{r['dmft_v'][-1]:.4f} e_ts {r['e_ts'][-1]:.4f}/{r['dmft_e_ts'][-1]:.4f}"
                  f" e_tr {r['e_tr'][-1]:.4f}/{r['dmft_e_tr'][-1]:.4f}", flush=True)
    total = time.perf_counter() - t_start

    os.makedirs(args.figures, exist_ok=True)
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    fig_path = os.path.join(args.figures, f"gap_study_{variant}.png")
    figure(results, fig_path, f"Fig. 4 setting, d = {d}, {seeds} runs per point ({variant})")

    dev = jax.devices()[0]
    lines = [f"## Variant `{variant}`", "",
             f"{datetime.date.today()}, {dev.platform} ({getattr(dev, 'device_kind', '')}), "
             f"{platform.processor() or platform.machine()}, jax {jax.__version__}; total "
             f"{total:.0f} s (compile included). d = {d}, {seeds} runs, m = {ms}, lr = {LR}, "
             f"t_max = {t_max}; SGD batch {batch}, unit ball; GD full batch, unit sphere. "
             f"Figure: `benchmarks/figures/{os.path.basename(fig_path)}`.", ""]
    t_report = max(t for t in TIMES if t <= t_max + 1e-9)
    for protocol in protocols:
        lines += table(results[protocol], protocol, t_report) + [""]
        lines += [f"Fitted e_tr gap ~ m^slope ({protocol.upper()}; gap per run corrected by the "
                  "control variate e_tr(0) - e_ts(0) (mean 0, coefficient fitted per time); "
                  "weighted least squares on log-log, s.e. from the runs):", ""]
        for t, slope, err, cells in gap_rates(results[protocol], t_max):
            lines.append(f"- t = {t:g}: slope {slope:.2f} +- {err:.2f} ({cells})")
        lines.append("")
    if d == 200 and "gd" in results:
        lines += ["Reference (engineering notes, d = 200, GD, t = 2; experiment vs DMFT) next to "
                  "this run:", ""]
        for (m, name), (ex, th) in REFERENCE.items():
            if m in results["gd"] and t_max >= 2:
                x, _ = at(results["gd"][m], name, 2.0)
                y, _ = at(results["gd"][m], f"dmft_{name}", 2.0)
                lines.append(f"- m = {m}, {name}: reference {ex} vs {th}; here {x:.4f} vs {y:.4f}")
        lines.append("")
    write_section(args.results, variant, "\n".join(lines))
    print(f"wrote {args.results} and {fig_path} ({total:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
