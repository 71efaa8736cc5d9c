"""Validation of the general DMFT against the Gaussian model (spec sections 3, 4 and 9).

Three cases, all with m = 4, alpha_bar = n/d = 1.5, full-batch projected GD:

* setting 1 (spec section 9): pure noise, tau = 1, h = q/10 + q^2/2, a(0) = (1, 1, -1, -1),
  w_1 = w_3 and w_2 = w_4 (C(0,0) has ones at (1,3), (2,4));
* setting 2 (spec section 9): as setting 1 with C(0,0) = I, a(0) = (-1, -1/2, 1/3, 2/3);
* single index (spec section 3): h = phihat = 0.9q + q^2/2, tau = 0.3, a0 = 1, symmetric init.

For each case the simulation mean (with standard errors) over independent realizations is set
against `general_dmft` (or `symmetric_dmft` for the symmetric case) on t in [0, 5]:

1. curves at d = 100 (figure), the DMFT solved on the grid of the GD steps (eta = lr d / n)
   and extrapolated to eta -> 0 (Richardson, the scheme being O(eta), [D.8]);
2. step sizes: lr = 0.05, 0.1, 0.2 at d = 100 for setting 2 and the single-index case;
3. finite size: settings 1 and 2 at d = 50, 100, 200 (fixed n/d), GD step 0.1, gaps
   max |sim - DMFT| for every a_i(t), C_ij(t, 0) and the relative gap of e_tr(t), and a rate
   bias ~ d^-p fitted to the signed biases at t = 5 (weighted by their standard errors), also
   after removing the O(lr) offset of the simulation measured by paired runs at lr = 0.05.

Acceptance (issue 6): at d = 200 the gaps are below 0.02 for each a_i(t) and C_ij(t, 0) and
below 5% of e_tr(t), for t in [0, 5], in both settings.

    python benchmarks/validation_gaussian.py            # CPU defaults (< 10 min on 2 cores)
    python benchmarks/validation_gaussian.py --quick    # smoke run (< 1 min)
    python benchmarks/validation_gaussian.py --realizations 2000 --d 50,100,200,400   # GPU

Writes benchmarks/figures/validation_gaussian.png and benchmarks/results/validation_gaussian.md
(paths overridable). The simulation runs in float32 (statistical errors dwarf rounding), the DMFT
in float64.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dmft_jax as dj  # noqa: E402
from dmft_jax import Symmetric  # noqa: E402
from dmft_jax import target  # noqa: E402
from dmft_jax import general_dmft, symmetric_dmft  # noqa: E402
from dmft_jax import gaussian_model_from_dmft, simulate  # noqa: E402

T_MAX = 5.0
ALPHA_BAR = 1.5
H_VALIDATION = [0.0, 0.1, 0.5]
H_SINGLE = [0.0, 0.9, 0.5]
SETTING1_C = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], float)


def dmft_model(case: str):
    if case == "setting 1":
        return general_dmft(H_VALIDATION, None, tau=1.0, a=[1.0, 1.0, -1.0, -1.0], C=SETTING1_C,
                            alpha_bar=ALPHA_BAR)
    if case == "setting 2":
        return general_dmft(H_VALIDATION, None, tau=1.0, a=[-1.0, -0.5, 1 / 3, 2 / 3],
                            C=np.eye(4), alpha_bar=ALPHA_BAR)
    return symmetric_dmft(H_SINGLE, target("same", H_SINGLE), tau=0.3, alpha=ALPHA_BAR / 4, m=4,
                          a0=1.0)


# ------------------------------------------------------------------------------ theory
def solve_dmft(model, dt: float, steps: int) -> dict:
    """The DMFT on t_n = n dt as per-neuron arrays: a (T, m), v (T, m), C0 (T, m, m) = C_ij(t, 0),
    e_tr, e_ts (T,). The symmetric solution is expanded to m neurons."""
    sol = dj.solve(model, dj.TimeGrid(dt, steps))
    m = model.m
    if isinstance(model.algebra, Symmetric):
        eye = np.eye(m)
        cd, co = np.asarray(sol.C_d)[:, 0], np.asarray(sol.C_o)[:, 0]
        a = np.repeat(np.asarray(sol.a)[:, None], m, 1)
        v = np.repeat(np.asarray(sol.v)[:, None, 0], m, 1)
        c0 = cd[:, None, None] * eye + co[:, None, None] * (1 - eye)
    else:
        a, v = np.asarray(sol.a), np.asarray(sol.v)[..., 0]
        c0 = np.moveaxis(np.asarray(sol.C)[:, :, :, 0], 2, 0)
    return dict(t=np.asarray(sol.t), a=a, v=v, C0=c0, e_tr=np.asarray(sol.e_tr),
                e_ts=np.asarray(sol.e_ts))


def at_times(theory: dict, idx) -> dict:
    return {k: np.asarray(x)[idx] for k, x in theory.items()}


def richardson(coarse: dict, fine: dict) -> dict:
    """eta -> 0 estimate 2 X(eta/2) - X(eta) on the coarse grid (O(eta) scheme [D.8])."""
    return {k: (coarse[k] if k == "t" else 2 * fine[k][::2] - coarse[k]) for k in coarse}


# ------------------------------------------------------------------------------ simulation
def run_simulation(model, d: int, lr: float, realizations: int, seed: int, every_t: float,
                   batch_size=None) -> dict:
    gm = gaussian_model_from_dmft(model, d)
    dt = lr * d / gm.n
    steps = int(round(T_MAX / dt))
    every = max(1, int(round(every_t / dt)))
    steps = int(np.ceil(steps / every)) * every
    t0 = time.perf_counter()
    sim = simulate(gm, jr.PRNGKey(seed), realizations, lr=lr, steps=steps, record_every=every,
                   batch_size=batch_size, dtype=jnp.float32)
    sim = jax.block_until_ready(sim)
    wall = time.perf_counter() - t0
    out = dict(t=np.asarray(sim.t, float), dt=dt, steps=steps, every=every, n=gm.n, d=d, lr=lr,
               wall=wall, realizations=realizations, diverged=int(np.sum(sim.diverged)), sim=sim)
    for name, x in (("a", sim.a), ("v", sim.v[..., 0]), ("C0", sim.C0), ("e_tr", sim.e_tr),
                    ("e_ts", sim.e_ts)):
        out[name], out[name + "_se"] = sim.mean_and_error(np.asarray(x, float), controls=True)
    print(f"  simulated d = {d:4d} (n = {gm.n}), lr = {lr:g}: {realizations} realizations, "
          f"{steps} steps, {wall:.1f} s", flush=True)
    return out


def compare(sim: dict, theory: dict) -> dict:
    """Gaps on t in [0, T_MAX]: max |mean - DMFT| over times (and neurons / pairs) for a, C0, v,
    relative to the DMFT value for e_tr and e_ts, with the standard error at the argmax."""
    out = {}
    for name, rel in (("a", False), ("C0", False), ("e_tr", True), ("e_ts", True), ("v", False)):
        scale = np.abs(theory[name]) if rel else 1.0
        g = np.abs(sim[name] - theory[name]) / scale
        s = sim[name + "_se"] / scale
        j = np.unravel_index(np.argmax(g), g.shape)
        out[name] = dict(max=float(g[j]), se=float(s[j]), t=float(sim["t"][j[0]]))
    return out


def final_bias(sims, theory, c, ds, name, ref=0.1):
    """Signed bias at t = T_MAX per entry (flattened) and its standard error, for each d, against
    the DMFT on the GD grid (`ref` = 0.1) or its eta -> 0 limit (`ref` = "limit")."""
    b = [np.ravel(sims[c, d, 0.1][name][-1] - theory[c, ref][name][-1]) for d in ds]
    se = [np.ravel(sims[c, d, 0.1][name + "_se"][-1]) for d in ds]
    return np.asarray(b), np.asarray(se)


def lr_offset(run: dict, half: dict) -> dict:
    """The O(lr) part of the bias at lr = 0.1, 2 (x(lr = 0.1) - x(lr = 0.05)) at t = T_MAX, from
    paired runs on the same realizations (bias = b_d + c lr to first order in lr): mean and
    standard error per entry, for a, C0, e_tr."""
    sim, out = run["sim"], {}
    for name, get in (("a", lambda z: z.a), ("C0", lambda z: z.C0), ("e_tr", lambda z: z.e_tr)):
        diff = np.asarray(get(run["sim"])[:, -1], float) - np.asarray(get(half["sim"])[:, -1], float)
        mean, err = sim.mean_and_error(diff, controls=True)
        out[name], out[name + "_se"] = 2 * np.ravel(mean), 2 * np.ravel(err)
    return out


def fit_bias_rate(ds, bias, se):
    """Joint fit of b_{e,d} = B_e d^-p over entries e (neurons, pairs) and sizes d, weighted by
    the standard errors: chi^2(p) minimized over the B_e in closed form, p on a grid.

    `bias`, `se`: (len(ds), entries). Returns (p, p_lo, p_hi, chi2 / dof) with [p_lo, p_hi] the
    Delta chi^2 = 1 interval (clipped to the grid [-1, 3]).
    """
    b, w = np.asarray(bias, float), 1.0 / np.maximum(np.asarray(se, float), 1e-12) ** 2
    keep = np.all(np.asarray(se) > 0, axis=0)
    b, w = b[:, keep], w[:, keep]
    grid = np.linspace(-1.0, 3.0, 801)
    chi2 = []
    for p in grid:
        x = np.asarray(ds, float)[:, None] ** -p
        B = np.sum(w * b * x, axis=0) / np.sum(w * x * x, axis=0)
        chi2.append(np.sum(w * (b - B * x) ** 2))
    chi2 = np.asarray(chi2)
    j = int(np.argmin(chi2))
    inside = grid[chi2 <= chi2[j] + 1.0]
    dof = max(1, b.size - b.shape[1] - 1)
    return float(grid[j]), float(inside.min()), float(inside.max()), float(chi2[j] / dof)


# ------------------------------------------------------------------------------ study
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: d = 20, 40, few realizations")
    p.add_argument("--d", default=None, help="comma-separated d for the finite-size study "
                   "(default 50,100,200; quick 20,40)")
    p.add_argument("--realizations", type=int, default=None,
                   help="realizations for every run (default: 600/240/48 at d = 50/100/200 and "
                        "48 for the step-size runs on CPU; quick 32)")
    p.add_argument("--lrs", default=None, help="step sizes of the step-size study (default "
                   "0.05,0.1,0.2; quick 0.1)")
    p.add_argument("--curve-d", type=int, default=None, help="d of the curves (default 100, quick 40)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="realizations vmapped together (GPU; default 1 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", default=str(ROOT / "benchmarks/figures/validation_gaussian.png"))
    p.add_argument("--report", default=str(ROOT / "benchmarks/results/validation_gaussian.md"))
    p.add_argument("--cache", default=str(ROOT / ".jax_cache"),
                   help="persistent compilation cache ('' to disable)")
    args = p.parse_args(argv)
    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    ds = [int(x) for x in (args.d or ("20,40" if args.quick else "50,100,200")).split(",")]
    lrs = [float(x) for x in (args.lrs or ("0.1" if args.quick else "0.05,0.1,0.2")).split(",")]
    curve_d = args.curve_d or (40 if args.quick else 100)
    if 0.1 not in lrs:
        lrs.append(0.1)
    default_r = {50: 600, 100: 240, 200: 48}

    def count(d, study="size"):
        if args.realizations:
            return args.realizations
        if args.quick:
            return 32
        return 48 if study == "lr" else default_r.get(d, max(20, int(8e3 / d)))

    t_start = time.perf_counter()
    cases = ("setting 1", "setting 2", "single index")
    models = {c: dmft_model(c) for c in cases}
    every_t = 1.0 / 3.0
    theory, sims = {}, {}

    print("DMFT solves", flush=True)
    for c in cases:
        for lr in lrs:
            dt = lr / ALPHA_BAR
            theory[c, lr] = solve_dmft(models[c], dt, int(round(T_MAX / dt)))
        dt = 0.1 / ALPHA_BAR
        theory[c, "limit"] = richardson(theory[c, 0.1],
                                        solve_dmft(models[c], dt / 2, 2 * int(round(T_MAX / dt))))

    print("finite-size study (settings 1, 2; lr = 0.1)", flush=True)
    for c in cases[:2]:
        for i, d in enumerate(ds):
            sims[c, d, 0.1] = run_simulation(models[c], d, 0.1, count(d), args.seed + 100 * i,
                                             every_t, args.batch_size)
    d0 = min(ds)
    print(f"step-size offset at d = {d0} (lr = 0.05, the same realizations)", flush=True)
    offsets = {c: run_simulation(models[c], d0, 0.05, count(d0), args.seed, every_t,
                                 args.batch_size) for c in cases[:2]}
    print("curves and step sizes at d = %d" % curve_d, flush=True)
    for c in cases:
        for j, lr in enumerate(lrs):
            if (c, curve_d, lr) not in sims and (lr == 0.1 or c != "setting 1"):
                sims[c, curve_d, lr] = run_simulation(
                    models[c], curve_d, lr, count(curve_d, "lr" if lr != 0.1 else "size"),
                    args.seed + 7 + 13 * j, every_t, args.batch_size)

    def gaps(c, d, lr, ref=None):
        sim = sims[c, d, lr]
        th = theory[c, lr] if ref is None else theory[c, ref]
        idx = np.rint(sim["t"] / (lr / ALPHA_BAR) if ref is None else sim["t"] / (0.1 / ALPHA_BAR))
        return compare(sim, at_times(th, idx.astype(int)))

    results = dict(offset={c: lr_offset(sims[c, d0, 0.1], offsets[c]) for c in cases[:2]},
                   size={(c, d): gaps(c, d, 0.1) for c in cases[:2] for d in ds},
                   limit={(c, d): gaps(c, d, 0.1, "limit") for c in cases[:2] for d in ds},
                   lr={(c, lr): gaps(c, curve_d, lr) for (c, d, lr) in sims if d == curve_d})
    wall = time.perf_counter() - t_start
    text = report(args, ds, lrs, curve_d, sims, theory, results, wall)
    pathlib.Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.report).write_text(text)
    figure(args.figure, ds, lrs, curve_d, sims, theory, results)
    print(text)
    print(f"wrote {args.report} and {args.figure} ({wall:.0f} s)")
    return 0


# ------------------------------------------------------------------------------ output
def report(args, ds, lrs, curve_d, sims, theory, results, wall) -> str:
    L = ["# Gaussian model (spec section 3) against the general DMFT (spec section 4)", "",
         "Generated by `python benchmarks/validation_gaussian.py"
         + (" --quick" if args.quick else "") + "` "
         f"({wall:.0f} s on {jax.default_backend().upper()}, {jax.device_count()} device(s)). "
         "m = 4, n/d = 1.5, full-batch projected GD, t = steps x lr d/n in [0, 5], recorded every "
         "1/3. The simulation is averaged over independent realizations (float32) with the "
         "regression control variates of `Simulation.mean_and_error(controls=True)` (zero-mean "
         "fluctuations at t = 0; same expectation, standard errors ~2x smaller); the DMFT "
         "(float64) is solved on the grid of the GD steps (eta = lr d/n) unless marked "
         "'eta -> 0' (Richardson extrapolation of eta = 1/15 and 1/30).", "",
         "Gap = max over t (and neurons i, pairs ij) of |simulation mean - DMFT|; for e_tr, e_ts "
         "relative to the DMFT value. `se` is the standard error of the simulation mean at the "
         "maximizing entry: with few realizations the max gap is partly noise (the max of many "
         "correlated entries), so it overstates the bias.", ""]
    L += ["## Finite size: settings 1 and 2, GD step 0.1", "",
          "| setting | d | n | realizations | a_i: gap (se) | C_ij(t,0): gap (se) | e_tr: rel. gap (se) "
          "| e_ts: rel. gap | gaps vs DMFT eta -> 0 (a, C, e_tr) | wall s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for (c, d), g in results["size"].items():
        s, lim = sims[c, d, 0.1], results["limit"][c, d]
        L.append(f"| {c} | {d} | {s['n']} | {s['realizations']} ({s['diverged']} div.) "
                 f"| {g['a']['max']:.4f} ({g['a']['se']:.4f}) | {g['C0']['max']:.4f} ({g['C0']['se']:.4f}) "
                 f"| {100 * g['e_tr']['max']:.2f}% ({100 * g['e_tr']['se']:.2f}%) "
                 f"| {100 * g['e_ts']['max']:.2f}% | {lim['a']['max']:.4f}, {lim['C0']['max']:.4f}, "
                 f"{100 * lim['e_tr']['max']:.2f}% | {s['wall']:.0f} |")
    L += ["", "Fitted rates: the signed bias at t = 5, b = simulation mean - DMFT, of every a_i(5), "
          "C_ij(5, 0) and e_tr(5), fitted jointly as b = B d^-p (one p per setting and observable, "
          "one B per neuron or pair; weighted by the standard errors; interval Delta chi^2 = 1):", "",
          "| setting | observable | p | interval | chi^2/dof | bias at each d (se) |", "|---|---|---|---|---|---|"]
    for c in ("setting 1", "setting 2"):
        for name in ("a", "C0", "e_tr"):
            b, se = final_bias(sims, theory, c, ds, name)
            p_, lo, hi, red = fit_bias_rate(ds, b, se)
            j = int(np.argmax(np.abs(b[-1]) / np.maximum(se[-1], 1e-12))) if name != "e_tr" else 0
            per_d = ", ".join(f"{x[j]:+.4f} ({e[j]:.4f})" for x, e in zip(b, se))
            label = {"a": "a_i(5)", "C0": "C_ij(5,0)", "e_tr": "e_tr(5)"}[name]
            L.append(f"| {c} | {label} | {p_:.2f} | [{lo:.2f}, {hi:.2f}] | {red:.2f} | "
                     f"{per_d} (entry {j}) |")
    L += ["", "Gradient-flow finite-size bias: the same fit after subtracting the DMFT's eta -> 0 "
          "limit and the simulation's O(lr) offset at lr = 0.1 (2 x the paired difference of runs "
          f"at lr = 0.1 and 0.05 on the same {sims['setting 1', min(ds), 0.1]['realizations']} "
          f"realizations at d = {min(ds)}; assumed independent of d):", "",
          "| setting | observable | p | interval | chi^2/dof | lr offset | corrected bias at each d (se) |",
          "|---|---|---|---|---|---|---|"]
    for c in ("setting 1", "setting 2"):
        off = results["offset"][c]
        for name in ("a", "C0", "e_tr"):
            b, se = final_bias(sims, theory, c, ds, name, ref="limit")
            b, se = b - off[name], np.sqrt(se**2 + off[name + "_se"] ** 2)
            p_, lo, hi, red = fit_bias_rate(ds, b, se)
            j = int(np.argmax(np.abs(b[0]) / np.maximum(se[0], 1e-12))) if name != "e_tr" else 0
            per_d = ", ".join(f"{x[j]:+.4f} ({e[j]:.4f})" for x, e in zip(b, se))
            label = {"a": "a_i(5)", "C0": "C_ij(5,0)", "e_tr": "e_tr(5)"}[name]
            L.append(f"| {c} | {label} | {p_:.2f} | [{lo:.2f}, {hi:.2f}] | {red:.2f} | "
                     f"{off[name][j]:+.4f} ({off[name + '_se'][j]:.4f}) | {per_d} (entry {j}) |")
    big = max(ds)
    L += ["", f"## Acceptance at d = {big}", ""]
    for c in ("setting 1", "setting 2"):
        g = results["size"][c, big]
        ok = g["a"]["max"] < 0.02 and g["C0"]["max"] < 0.02 and g["e_tr"]["max"] < 0.05
        L.append(f"- {c}: a gap {g['a']['max']:.4f} < 0.02, C gap {g['C0']['max']:.4f} < 0.02, "
                 f"e_tr gap {100 * g['e_tr']['max']:.2f}% < 5%: **{'PASS' if ok else 'FAIL'}**"
                 f" ({sims[c, big, 0.1]['realizations']} realizations)")
    L += ["", f"## Step sizes at d = {curve_d}", "",
          "| case | lr | dt = lr d/n | realizations | a_i gap (se) | C_ij(t,0) gap (se) | v_i gap (se) "
          "| e_tr rel. gap | sim a_m(5) | DMFT a_m(5) (eta = dt) | DMFT eta -> 0 | sim e_tr(5) "
          "| DMFT e_tr(5) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (c, lr), g in sorted(results["lr"].items()):
        s = sims[c, curve_d, lr]
        th, lim = theory[c, lr], theory[c, "limit"]
        L.append(f"| {c} | {lr:g} | {s['dt']:.4f} | {s['realizations']} | {g['a']['max']:.4f} "
                 f"({g['a']['se']:.4f}) | {g['C0']['max']:.4f} ({g['C0']['se']:.4f}) "
                 f"| {g['v']['max']:.4f} ({g['v']['se']:.4f}) "
                 f"| {100 * g['e_tr']['max']:.2f}% | {s['a'][-1, -1]:.4f} +- {s['a_se'][-1, -1]:.4f} "
                 f"| {th['a'][-1, -1]:.4f} | {lim['a'][-1, -1]:.4f} "
                 f"| {s['e_tr'][-1]:.4f} +- {s['e_tr_se'][-1]:.4f} | {th['e_tr'][-1]:.4f} |")
    if ("single index", 0.1) in results["lr"]:
        s, th = sims["single index", curve_d, 0.1], theory["single index", 0.1]
        k = int(np.argmin(np.abs(s["t"] - 4.0)))
        L += ["", f"Single index at t = {s['t'][k]:.3f} (spec section 3 quotes, at d = 100, "
              "40 realizations, GD step 0.05: simulation a = 1.181, v = 0.484, C_d(t,0) = 0.656; "
              "DMFT a = 1.188, v = 0.484, C_d = 0.655):", "",
              f"- simulation (lr 0.1): a = {s['a'][k].mean():.4f}, v = {s['v'][k].mean():.4f}, "
              f"C_d(t,0) = {np.trace(s['C0'][k]) / 4:.4f}, e_ts - DMFT e_ts = "
              f"{s['e_ts'][k] - th['e_ts'][int(round(s['t'][k] * 15))]:+.4f}",
              f"- DMFT (eta = 1/15): a = {th['a'][int(round(s['t'][k] * 15)), 0]:.4f}, "
              f"v = {th['v'][int(round(s['t'][k] * 15)), 0]:.4f}, "
              f"C_d(t,0) = {th['C0'][int(round(s['t'][k] * 15)), 0, 0]:.4f}"]
    if ("setting 2", 100, 0.1) in sims:
        s, th = sims["setting 2", 100, 0.1], theory["setting 2", 0.1]
        L += ["", "Reference (issue 6, setting 2, d = 100, 400 realizations): a_4(5) = 0.938 +- 0.004 "
              "simulated vs 0.954 DMFT; e_tr(5) = 0.180 vs 0.174. Here: a_4(5) = "
              f"{s['a'][-1, -1]:.4f} +- {s['a_se'][-1, -1]:.4f} vs {th['a'][-1, -1]:.4f}; e_tr(5) = "
              f"{s['e_tr'][-1]:.4f} +- {s['e_tr_se'][-1]:.4f} vs {th['e_tr'][-1]:.4f} "
              f"({s['realizations']} realizations)."]
    return "\n".join(L) + "\n"


def figure(path, ds, lrs, curve_d, sims, theory, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(4, 3, figsize=(13, 14))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, c in enumerate(("setting 1", "setting 2", "single index")):
        s, th, lim = sims[c, curve_d, 0.1], theory[c, 0.1], theory[c, "limit"]
        ax = axes[row, 0]
        for i in range(4):
            ax.errorbar(s["t"], s["a"][:, i], 2 * s["a_se"][:, i], fmt="o", ms=3, color=colors[i],
                        label=f"sim a_{i + 1}" if row == 0 or i == 0 else None)
            ax.plot(th["t"], th["a"][:, i], "-", color=colors[i], lw=1)
            ax.plot(lim["t"], lim["a"][:, i], ":", color="k", lw=0.8)
        ax.set_title(f"{c}: a_i(t) (d = {curve_d}, lr 0.1)")
        ax = axes[row, 1]
        pairs = [(0, 0), (1, 1), (0, 2), (0, 1)] if c == "setting 1" else \
            [(0, 0), (1, 1), (2, 2), (3, 3)] if c == "setting 2" else [(0, 0), (0, 1)]
        for q, (i, j) in enumerate(pairs):
            ax.errorbar(s["t"], s["C0"][:, i, j], 2 * s["C0_se"][:, i, j], fmt="o", ms=3,
                        color=colors[q], label=f"C_{i + 1}{j + 1}(t,0)")
            ax.plot(th["t"], th["C0"][:, i, j], "-", color=colors[q], lw=1)
        if c == "single index":
            ax.errorbar(s["t"], s["v"].mean(1), 2 * s["v_se"].mean(1), fmt="s", ms=3,
                        color=colors[3], label="v(t)")
            ax.plot(th["t"], th["v"][:, 0], "-", color=colors[3], lw=1)
        ax.set_title(f"{c}: overlaps")
        ax.legend(fontsize=7)
        ax = axes[row, 2]
        for q, name in enumerate(("e_tr", "e_ts")):
            ax.errorbar(s["t"], s[name], 2 * s[name + "_se"], fmt="o", ms=3, color=colors[q],
                        label=f"sim {name}")
            ax.plot(th["t"], th[name], "-", color=colors[q], lw=1, label=f"DMFT {name}")
        ax.set_title(f"{c}: errors ({s['realizations']} realizations, +-2 se)")
        ax.legend(fontsize=7)
    axes[0, 0].legend(fontsize=7)
    for col, c in enumerate(("setting 1", "setting 2")):
        ax = axes[3, col]
        for q, (name, label) in enumerate((("a", "a_i"), ("C0", "C_ij(t,0)"), ("e_tr", "e_tr (rel.)"))):
            gmax = [results["size"][c, d][name]["max"] for d in ds]
            ax.plot(ds, gmax, "o-", color=colors[q], label=f"max gap {label}, t <= 5")
        b, se = final_bias(sims, theory, c, ds, "e_tr")
        p_, lo, hi, _ = fit_bias_rate(ds, b, se)
        ax.errorbar(ds, np.abs(b[:, 0]), 2 * se[:, 0], fmt="s--", color=colors[3],
                    label=f"|e_tr(5) bias| +-2 se (p = {p_:.2f} [{lo:.2f}, {hi:.2f}])")
        ax.plot(ds, [1.0 / d for d in ds], "k:", lw=0.8, label="1/d")
        ax.axhline(0.02, color="grey", lw=0.6)
        ax.axhline(0.05, color="grey", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("d (n = 1.5 d)")
        ax.set_title(f"{c}: gap vs d (lines 0.02, 5%)")
        ax.legend(fontsize=6)
    ax = axes[3, 2]
    for q, c in enumerate(("setting 2", "single index")):
        pts = sorted(lr for (cc, lr) in results["lr"] if cc == c)
        if not pts:
            continue
        sim_a = [sims[c, curve_d, lr]["a"][-1, -1] for lr in pts]
        se = [sims[c, curve_d, lr]["a_se"][-1, -1] for lr in pts]
        ax.errorbar(pts, sim_a, 2 * np.asarray(se), fmt="o", color=colors[q], label=f"{c}: sim a_4(5)")
        ax.plot(pts, [theory[c, lr]["a"][-1, -1] for lr in pts], "-", color=colors[q],
                label=f"{c}: DMFT, eta = lr d/n")
        ax.axhline(theory[c, "limit"]["a"][-1, -1], color=colors[q], ls=":", lw=0.8)
    ax.set_xlabel("GD step lr")
    ax.set_title(f"step size (d = {curve_d}); dotted: DMFT eta -> 0")
    ax.legend(fontsize=7)
    for ax in axes[:3].ravel():
        ax.set_xlabel("t")
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
