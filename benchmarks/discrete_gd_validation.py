"""Validation of the exact DMFT of discrete-time projected GD (docs/discrete_gd.md, issue 11)
against the Gaussian-model simulator `dmft_jax.simulate` (exact at finite d) and real networks.

Public API only (`import dmft_jax as dj`). The theory is the library model `dj.DiscreteGD`
(equations [G.1]-[G.12]; equal to the independent NumPy reference
`tests/reference/discrete_gd_numpy.py` to 1e-13, tests/test_discrete_gd.py); the gradient-flow
DMFT is `dj.solve` (spec section 6, Euler) at small dt, Richardson-extrapolated
(2 X(dt/2) - X(dt)), at the same times t_k = k eta, eta = lr d/n.

Studies (all m = 4, full-batch projected GD, control-variate means of `Simulation`):

1. judged setting: pure noise, h = q/10 + q^2/2, tau = 1, alpha_bar = 1.5, a0 = 1, iid init,
   eta in {0.1, 0.25, 0.5, 1.0}, 20 steps, d in {100, 200, 400}: sim means of a, C_d(t, 0),
   e_tr (and e_ts) against the discrete DMFT and the flow; the finite-d bias fitted as c/d (and
   b + c/d: the d = infinity offset b must vanish for an exact theory);
2. other settings at eta = 1 (and 0.5): a single-index target (h = phihat = 0.9q + q^2/2,
   tau = 0.3, alpha = 0.3), the general init of spec section 9 setting 2, a frozen second layer;
3. lr -> 0 at fixed t: |GD(eta) - flow| against eta, fitted log-log slope;
4. stability: the step at which GD diverges (the rule of `dmft_jax._results`) or first rises
   within 20 steps, in theory and in simulation;
5. real networks (`dj.sweep`, full-batch GD on the sphere, sigma(x) = sqrt(0.1) x + (x^2-1)/2)
   on the axes of study 1 (d = 100, 200, 400) and in the single-index setting: how much of the
   finite-step effect survives outside the Gaussian model;
6. a sweep over lr across the divergence threshold (d = 200, 40 realizations / networks per
   point): which grid points diverge or pass the edge of stability in theory (the sweep's GD
   DMFT), in the Gaussian model and in networks; 6b: how long a system of finite d follows the
   d = infinity trajectory (the GD DMFT from a symmetry-broken C(0, 0) ~ d^-1/2).

    PYTHONPATH=. python benchmarks/discrete_gd_validation.py            # ~1 h on 2 cores
    PYTHONPATH=. python benchmarks/discrete_gd_validation.py --quick    # smoke run (~15 min)

Simulations and network runs are cached per run in out/discrete_gd/ (delete to rerun). Writes
benchmarks/results/discrete_gd.md, benchmarks/figures/discrete_gd.png (studies 1-4) and
benchmarks/figures/discrete_gd_study.png (studies 5-6).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
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

M = 4
STEPS = 20
ETAS = (0.1, 0.25, 0.5, 1.0)
SETTINGS = {
    "judged": dict(h=(0.0, 0.1, 0.5), target=False, tau=1.0, alpha_bar=1.5, a=None,
                   freeze=False),
    "target": dict(h=(0.0, 0.9, 0.5), target=True, tau=0.3, alpha_bar=1.2, a=None, freeze=False),
    "general": dict(h=(0.0, 0.1, 0.5), target=False, tau=1.0, alpha_bar=1.5,
                    a=(-1.0, -0.5, 1.0 / 3.0, 2.0 / 3.0), freeze=False),
    "frozen": dict(h=(0.0, 0.1, 0.5), target=False, tau=1.0, alpha_bar=1.5, a=None, freeze=True),
}
OBS = ("a", "C_d0", "e_tr", "e_ts")
#: Absolute floor of the acceptance band: the simulation runs in float32, and where the
#: control variates remove all randomness (e.g. a(t_1) from an exact Gram matrix) the standard
#: error drops to ~1e-9 while float32 rounding leaves differences ~1e-8.
FLOAT32_FLOOR = 1e-6
JUDGED_OBS = ("a", "C_d0", "e_tr")


# ------------------------------------------------------------------------------ theory
def library_model(name: str, c0=None):
    """The flow DMFT of a setting (symmetric, or general for an explicit a or C(0, 0))."""
    s = SETTINGS[name]
    tgt = dj.target("same", list(s["h"])) if s["target"] else None
    if s["a"] is None and c0 is None:
        return dj.symmetric_dmft(list(s["h"]), tgt, tau=s["tau"], alpha=s["alpha_bar"] / M, m=M,
                                 a0=1.0, freeze_a=s["freeze"])
    a = np.ones(M) if s["a"] is None else np.asarray(s["a"])
    return dj.general_dmft(list(s["h"]), tgt, tau=s["tau"], a=a,
                           C=np.eye(M) if c0 is None else c0, alpha_bar=s["alpha_bar"],
                           freeze_a=s["freeze"])


def _neurons(sol, symmetric: bool) -> dict:
    """Per-neuron arrays of a library solution: a (T, m), C0 (T, m, m) = C(t, 0), v (T, m)."""
    if symmetric:
        a = np.repeat(np.asarray(sol.a)[:, None], M, 1)
        cd = np.asarray(sol.C_d)[:, 0]
        co = np.asarray(sol.C_o)[:, 0]
        eye = np.eye(M)
        C0 = cd[:, None, None] * eye + co[:, None, None] * (1 - eye)
        v = np.repeat(np.asarray(sol.v)[:, None, 0], M, 1)
    else:
        a, v = np.asarray(sol.a), np.asarray(sol.v)[..., 0]
        C0 = np.moveaxis(np.asarray(sol.C)[:, :, :, 0], 2, 0)
    return dict(a_i=a, a=a.mean(1), C0=C0, C_d0=np.diagonal(C0, axis1=1, axis2=2).mean(1), v=v,
                e_tr=np.asarray(sol.e_tr), e_ts=np.asarray(sol.e_ts))


def theory(name: str, eta: float, steps: int, mode: str = "gd", c0=None) -> dict:
    """The discrete DMFT of GD (`dj.DiscreteGD`, the library model) or, with mode="euler", the
    flow's Euler scheme at step eta, as per-neuron arrays over t_k = k eta; `diverged`: the
    divergence step (-1 if none), `rise`: the edge of stability (first rise of e_tr, -1)."""
    model = library_model(name, c0)
    symmetric = isinstance(model.algebra, dj.Symmetric)
    if mode == "gd":
        model = dj.DiscreteGD(model)
    sol = dj.solve(model, dj.TimeGrid(eta, steps), throw=False)
    out = _neurons(sol, symmetric)
    bad = int(dj.divergence_step(sol))
    e = out["e_tr"] if bad < 0 else out["e_tr"][: bad + 1]
    out.update(t=np.asarray(sol.t), diverged=bad, rise=int(dj.edge_of_stability_step(e)))
    return out


def flow(name: str, eta: float, steps: int, dt_max: float = 0.05) -> dict:
    """Gradient-flow DMFT at t_k = k eta: Euler at dt and dt/2, Richardson-extrapolated."""
    r = int(np.ceil(eta / dt_max - 1e-9))
    coarse = theory(name, eta / r, r * steps, mode="euler")
    fine = theory(name, eta / (2 * r), 2 * r * steps, mode="euler")
    out = {k: 2 * fine[k][:: 2 * r] - coarse[k][::r]
           for k in ("a_i", "a", "C0", "C_d0", "v", "e_tr", "e_ts")}
    out["t"] = eta * np.arange(steps + 1)
    return out


# ------------------------------------------------------------------------------ simulation
SIM_WALL = [0.0]          # summed wall time of every simulation used (cached or not)


def cache_dir() -> pathlib.Path:
    p = ROOT / "out" / "discrete_gd"
    p.mkdir(parents=True, exist_ok=True)
    return p


def gaussian_model(name: str, d: int):
    s = SETTINGS[name]
    n = int(round(s["alpha_bar"] * d))
    tgt = dj.target("same", list(s["h"])) if s["target"] else None
    if s["a"] is None:
        return dj.gaussian_model(list(s["h"]), tgt, tau=s["tau"], d=d, n=n, m=M, a0=1.0,
                                 freeze_a=s["freeze"])
    return dj.gaussian_model(list(s["h"]), tgt, tau=s["tau"], d=d, n=n, a=list(s["a"]),
                             C=np.eye(M), freeze_a=s["freeze"])


def simulate(name: str, d: int, eta: float, realizations: int, steps: int = STEPS,
             seed: int = 0, quiet: bool = False) -> dict:
    """Run (or load) `realizations` GD runs of the Gaussian model; raw per-realization arrays."""
    path = cache_dir() / f"{name}_d{d}_eta{eta:g}_R{realizations}_K{steps}_s{seed}.npz"
    if path.exists():
        out = dict(np.load(path))
        SIM_WALL[0] += float(out["wall"])
        return out
    gm = gaussian_model(name, d)
    lr = eta * gm.n / gm.d
    t0 = time.perf_counter()
    sim = dj.simulate(gm, jr.PRNGKey(seed), realizations, lr=lr, steps=steps,
                      dtype=jnp.float32)
    sim = jax.block_until_ready(sim)
    wall = time.perf_counter() - t0
    out = {f: np.asarray(getattr(sim, f), np.float64) for f in
           ("t", "a", "v", "C0", "C", "e_tr", "e_ts", "controls")}
    out["diverged"] = np.asarray(sim.diverged)
    out["wall"] = np.float64(wall)
    np.savez(path, **out)
    SIM_WALL[0] += wall
    if not quiet:
        print(f"  sim {name} d={d} eta={eta:g}: {realizations} x {steps} steps, {wall:.0f} s, "
              f"{int(out['diverged'].sum())} diverged", flush=True)
    return out


def sim_stats(raw: dict) -> dict:
    """Control-variate means and standard errors of the observables (per step)."""
    sim = dj.Simulation(**{f: jnp.asarray(raw[f]) for f in
                           ("t", "a", "v", "C0", "C", "e_tr", "e_ts", "controls")},
                        diverged=jnp.asarray(raw["diverged"]))
    a_i = raw["a"]
    series = dict(a=a_i.mean(-1), C_d0=np.diagonal(raw["C0"], axis1=-2, axis2=-1).mean(-1),
                  e_tr=raw["e_tr"], e_ts=raw["e_ts"], a_i=a_i, v=raw["v"][..., 0],
                  C_ii0=np.diagonal(raw["C0"], axis1=-2, axis2=-1))
    out = {}
    for k, x in series.items():
        out[k], out[k + "_se"] = sim.mean_and_error(np.asarray(x, float), controls=True)
    out["R"] = int(raw["a"].shape[0] - raw["diverged"].sum())
    out["wall"] = float(raw["wall"])
    return out


# ------------------------------------------------------------------------------ fits
def fit_inverse_d(ds, diff, se):
    """Weighted fits of the mean difference D_d = sim - theory: D = c/d and D = b + c/d.

    `diff`, `se`: (len(ds), ...). Returns c, its error, b, its error (arrays over ...)."""
    x = 1.0 / np.asarray(ds, float).reshape(-1, *([1] * (np.ndim(diff) - 1)))
    w = 1.0 / np.maximum(np.asarray(se), 1e-12) ** 2
    c = np.sum(w * x * diff, 0) / np.sum(w * x * x, 0)
    c_err = 1.0 / np.sqrt(np.sum(w * x * x, 0))
    S, Sx, Sxx = np.sum(w, 0), np.sum(w * x, 0), np.sum(w * x * x, 0)
    Sy, Sxy = np.sum(w * diff, 0), np.sum(w * x * diff, 0)
    det = S * Sxx - Sx**2
    b = (Sxx * Sy - Sx * Sxy) / det
    b_err = np.sqrt(Sxx / det)
    return c, c_err, b, b_err


def loglog_slope(x, y):
    return float(np.polyfit(np.log(x), np.log(np.abs(y)), 1)[0])


# ------------------------------------------------------------------------------ studies
def judged_study(ds, counts, quick):
    """Study 1: the judged setting at d in ds, eta in ETAS."""
    th = {eta: theory("judged", eta, STEPS) for eta in ETAS}
    fl = {eta: flow("judged", eta, STEPS) for eta in ETAS}
    st = {}
    for eta in ETAS:
        for i, d in enumerate(ds):
            st[d, eta] = sim_stats(simulate("judged", d, eta, counts[d], seed=10 * i))
    rows = {}
    for eta in ETAS:
        for o in OBS:
            diff = np.array([st[d, eta][o] - th[eta][o] for d in ds])
            se = np.array([st[d, eta][o + "_se"] for d in ds])
            dfl = np.array([st[d, eta][o] - fl[eta][o] for d in ds])
            k = slice(1, None)                       # t = 0 is exact by construction
            c, c_err, b, b_err = fit_inverse_d(ds, diff[:, k], se[:, k])
            cf, _, bf, bf_err = fit_inverse_d(ds, dfl[:, k], se[:, k])
            others = [j for j, d in enumerate(ds) if d != 200]
            c_cv = fit_inverse_d([ds[j] for j in others], diff[others][:, k], se[others][:, k])[0] \
                if 200 in ds and len(others) >= 1 else c
            rows[eta, o] = dict(diff=diff, se=se, dflow=dfl, c=c, c_err=c_err, b=b, b_err=b_err,
                                c_cv=c_cv, b_flow=bf, b_flow_err=bf_err, c_flow=cf)
    return th, fl, st, rows


def other_study(counts_other):
    """Study 2: target, general, frozen at eta = 1 (target also 0.5), d = 100 and 200."""
    out = {}
    plan = [("target", 1.0), ("target", 0.5), ("general", 1.0), ("frozen", 1.0)]
    for name, eta in plan:
        th = theory(name, eta, STEPS)
        fl = flow(name, eta, STEPS)
        st = {}
        for d, R in counts_other.items():
            raw = simulate(name, d, eta, R, seed=7 + d)
            st[d] = sim_stats(raw)
            st[d]["e_tr_median"] = np.median(raw["e_tr"][~raw["diverged"]], axis=0)
        out[name, eta] = (th, fl, st)
    return out


def lr_study(t_end=2.0, etas=(0.2, 0.1, 0.05, 0.025, 0.0125)):
    """Study 3: |GD(eta) - flow| at t = t_end against eta (symmetric settings with the five
    etas; the general setting with the three largest, to keep the library's general flow short)."""
    out = {}
    for name in ("judged", "target", "general"):
        etas_n = etas if name != "general" else etas[:3]
        eta_min = min(etas_n)
        ref_flow = flow(name, eta_min, int(round(t_end / eta_min)), dt_max=eta_min / 2)
        fin = {o: ref_flow[o][-1] for o in OBS}
        errs, eulers = {o: [] for o in OBS}, {o: [] for o in OBS}
        for eta in etas_n:
            k = int(round(t_end / eta))
            g = theory(name, eta, k)
            e = theory(name, eta, k, mode="euler")
            for o in OBS:
                errs[o].append(g[o][-1] - fin[o])
                eulers[o].append(np.nan if e is None else e[o][-1] - fin[o])
        out[name] = dict(etas=np.array(etas_n), err={o: np.array(v) for o, v in errs.items()},
                         euler={o: np.array(v) for o, v in eulers.items()})
    return out


def first_rise(e_tr):
    """The edge of stability of a curve (`dj.edge_of_stability_step`: first step k at which
    e_tr rises), or None."""
    k = int(dj.edge_of_stability_step(np.asarray(e_tr, float)))
    return k if k >= 0 else None


def bisect_eta(pred, lo, hi, tol=1e-3):
    """Smallest eta in [lo, hi] with pred(eta) True, assuming pred(lo) False, pred(hi) True."""
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if pred(mid) else (mid, hi)
    return hi


def thresholds(horizon=STEPS):
    """Theory thresholds of the judged setting (exact symmetric recursion), for 20 and 40 steps:
    the first eta whose e_tr rises within the horizon (end of monotone descent: the 'edge of
    stability'), by bisection; and, on a 0.1 grid over [6, 14], the first diverging eta and
    the eta above which every grid point diverges (divergence is intermittent in between)."""
    out = {}
    grid = np.round(np.arange(6.0, 14.0 + 1e-9, 0.1), 2)
    for K in (horizon, 2 * horizon):
        out["rise", K] = bisect_eta(lambda e: theory("judged", e, K)["rise"] >= 0, 0.5, 4.0)
        div = np.array([theory("judged", e, K)["diverged"] >= 0 for e in grid])
        out["div", K] = float(grid[np.argmax(div)])
        stable = np.flatnonzero(~div)
        out["all", K] = float(grid[stable[-1] + 1]) if stable.size and stable[-1] + 1 < grid.size \
            else float("nan")
        out["pattern", K] = "".join("X" if x else "." for x in div)
    return out


def stability_study(grid, d_sims, R, seeds=8, horizon=STEPS):
    """Study 4: divergence within `horizon` steps against eta."""
    rng = np.random.default_rng(5)
    rows = []
    for eta in grid:
        th = theory("judged", eta, horizon)
        th40 = theory("judged", eta, 2 * horizon)
        seeded = []
        for _ in range(seeds):
            W = rng.standard_normal((M, 200))
            W /= np.linalg.norm(W, axis=1, keepdims=True)
            seeded.append(theory("judged", eta, horizon, c0=W @ W.T)["diverged"] >= 0)
        row = dict(eta=eta, th=th["diverged"] >= 0, th40=th40["diverged"] >= 0,
                   rise=th["rise"] if th["rise"] >= 0 else None, seeded=float(np.mean(seeded)))
        for d in d_sims:
            if d >= 400 and eta not in (8.0, 12.0, 16.0, 20.0):
                row[f"sim{d}"], row[f"rise{d}"] = float("nan"), None
                continue
            raw = simulate("judged", d, eta, R, steps=horizon, seed=99, quiet=True)
            e = raw["e_tr"]
            row[f"sim{d}"] = float(np.mean(raw["diverged"]))
            ok = ~raw["diverged"]
            row[f"rise{d}"] = first_rise(np.median(e[ok], 0)) if ok.any() else None
        rows.append(row)
        print(f"  stability eta={eta:g}: theory {row['th']}, seeded {row['seeded']:.2f}, "
              + ", ".join(f"sim d={d} {row[f'sim{d}']:.2f}" for d in d_sims), flush=True)
    return rows


# ------------------------------------------------------------------------------ networks
#: Real networks of the two settings: the activation realizing h (Hermite coefficients
#: sqrt(c_p)), i.e. sigma(x) = sqrt(0.1) x + (x^2 - 1)/2 for the judged setting.
NET_SETTINGS = {"judged": dict(h=[0.0, 0.1, 0.5], target="none", tau=1.0, alpha=1.5 / M),
                "target": dict(h=[0.0, 0.9, 0.5], target="same", tau=0.3, alpha=0.3)}
NET_OBS = ("a", "C_d0", "C_o", "e_tr", "e_ts", "v")


def networks(name: str, d: int, etas, seeds: int, steps: int = STEPS, seed: int = 0) -> dict:
    """Run (or load) `seeds` networks per step eta = lr d/n of a setting, trained by full-batch
    projected GD on the sphere with `dj.sweep` (which also solves the GD DMFT of each grid
    point); the same seeds (data, W(0)) at every eta. Returns {eta: arrays}."""
    s = NET_SETTINGS[name]
    n = int(round(s["alpha"] * M * d))
    out = {}
    for eta in etas:
        path = cache_dir() / f"net_{name}_d{d}_eta{eta:g}_S{seeds}_K{steps}_s{seed}.npz"
        if path.exists():
            out[eta] = dict(np.load(path))
            continue
        prob = dj.problem(s["h"], s["target"])
        t0 = time.perf_counter()
        res = dj.sweep(prob, m=M, d=d, steps=steps, record_every=1, seeds=seeds, seed=seed,
                       a0=1.0, lr=[eta * n / d], tau=s["tau"], alpha=s["alpha"], batch=0,
                       projection="sphere", dmft=True)
        pt = res.point()
        arr = {k: np.asarray(v) for k, v in pt.items()}
        arr["wall"] = np.float64(time.perf_counter() - t0)
        arr["dmft_dynamics"] = np.asarray(res.params["dmft_dynamics"])
        np.savez(path, **arr)
        print(f"  networks {name} d={d} eta={eta:g}: {seeds} runs, {float(arr['wall']):.0f} s, "
              f"{int(arr['diverged'].sum())} diverged", flush=True)
        out[eta] = arr
    return out


def net_stats(arr: dict, name: str) -> tuple:
    """Mean and standard error over the runs that did not diverge (T,)."""
    ok = ~arr["diverged"]
    x = np.asarray(arr[name], float)[ok]
    return x.mean(0), x.std(0, ddof=1) / np.sqrt(max(x.shape[0], 1))


def network_study(ds, seeds, etas=ETAS, target_ds=(100, 200), target_seeds=200):
    """Study 5: real networks (the trainer, full-batch GD) on the axes of study 1, and the
    single-index setting at eta = 0.5, 1."""
    judged = {d: networks("judged", d, etas, seeds[d]) for d in ds}
    target = {d: networks("target", d, (0.5, 1.0), target_seeds) for d in target_ds}
    return dict(judged=judged, target=target)


def step_effect(series: dict, etas, t: float, paired=True):
    """X_eta(t) - X_0.1(t) for the observables (theory: arrays; runs: paired over seeds, with
    the standard error of the paired difference). series[eta][obs] is (T,) or (S, T)."""
    base = min(etas)
    out = {}
    for eta in etas:
        if eta == base:
            continue
        k, k0 = int(round(t / eta)), int(round(t / base))
        for o in ("a", "C_d0", "e_tr", "e_ts"):
            x, x0 = np.asarray(series[eta][o], float), np.asarray(series[base][o], float)
            if x.ndim == 1:
                out[eta, o] = (x[k] - x0[k0], 0.0)
            else:
                ok = series[eta]["ok"] & series[base]["ok"]
                diff = x[ok, k] - x0[ok, k0]
                out[eta, o] = (diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size))
    return out


# ------------------------------------------------------------------------------ sweep
SWEEP_ETAS = (1.0, 1.25, 1.5, 1.75, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 14.0, 16.0,
              18.0, 20.0, 25.0, 30.0, 40.0)


def _median_step(steps) -> float:
    steps = np.asarray(steps)
    steps = steps[steps >= 0]
    return float(np.median(steps)) if steps.size else float("nan")


def divergence_sweep(etas=SWEEP_ETAS, d=200, R=40, seeds=40, steps=STEPS, chunk=5):
    """Study 6: a sweep over lr across the divergence threshold (judged setting): the GD DMFT
    of every grid point (`dj.sweep`: diverged, divergence step, edge of stability), the
    Gaussian-model simulation (`dj.simulate`, R realizations at d) and real networks (the same
    sweep, `seeds` runs at d)."""
    s = NET_SETTINGS["judged"]
    n = int(round(s["alpha"] * M * d))
    prob = dj.problem(s["h"], s["target"])
    path = cache_dir() / f"sweep_judged_d{d}_S{seeds}_K{steps}.npz"
    if path.exists():
        res = dj.SweepResult.load(path)
    else:
        parts = []
        for i in range(0, len(etas), chunk):
            lrs = [e * n / d for e in etas[i:i + chunk]]
            parts.append(dj.sweep(prob, m=M, d=d, steps=steps, record_every=1, seeds=seeds,
                                  seed=7, a0=1.0, lr=lrs, tau=s["tau"], alpha=s["alpha"],
                                  batch=0, projection="sphere", dmft=True))
        first = parts[0]
        cat = lambda xs, ax: np.concatenate(xs, axis=ax)  # noqa: E731
        res = dj.SweepResult(
            axes=dict(first.axes, lr=cat([p.axes["lr"] for p in parts], 0)),
            t=cat([p.t for p in parts], 1),
            experiment={k: cat([p.experiment[k] for p in parts], 2) for k in first.experiment},
            dmft={k: cat([p.dmft[k] for p in parts], 1) for k in first.dmft},
            params=first.params)
        res.save(path)
    rows = []
    for j, eta in enumerate(etas):
        pt = res.point(lr=float(res.axes["lr"][j]))
        th = theory("judged", eta, steps)
        raw = simulate("judged", d, eta, R, steps=steps, seed=123, quiet=True)
        sim_bad = np.asarray(raw["diverged"])
        sim_div = np.array([_sim_divergence_step(raw, r) for r in range(R)])
        sim_rise = np.array([_rise_before(raw["e_tr"][r], sim_div[r]) for r in range(R)])
        med = np.median(raw["e_tr"], 0)
        dep = np.flatnonzero(np.abs(med - th["e_tr"]) > 0.1 * np.abs(th["e_tr"]) + 0.02)
        rows.append(dict(
            eta=eta, th_div=int(pt["dmft_divergence_step"]), th_rise=int(pt["dmft_rise_step"]),
            th_div_lib=th["diverged"], th_e=th["e_tr"], sim_median=med,
            sim_frac=float(sim_bad.mean()), sim_div_step=_median_step(sim_div),
            sim_rise_frac=float(np.mean(sim_rise >= 0)), sim_rise=_median_step(sim_rise),
            departure=int(dep[0]) if dep.size else None,
            net_frac=float(np.mean(pt["diverged"])), net_div_step=_median_step(pt["divergence_step"]),
            net_rise_frac=float(np.mean(pt["rise_step"] >= 0)), net_rise=_median_step(pt["rise_step"])))
        r = rows[-1]
        print(f"  sweep eta={eta:g}: theory div {r['th_div']} rise {r['th_rise']} | sim "
              f"{r['sim_frac']:.2f} rise {r['sim_rise']} dep {r['departure']} | networks "
              f"{r['net_frac']:.2f} rise {r['net_rise']}", flush=True)
    return rows


def _sim_divergence_step(raw, r) -> int:
    """The first step of realization r that breaks the divergence rule of the simulator (and
    of the DMFT): a non-finite e_tr or a, or e_tr grown beyond 1e3 (1 + e_tr(0)); -1 if none."""
    e, a = np.asarray(raw["e_tr"][r], float), np.asarray(raw["a"][r], float)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(e) | (e > 1e3 * (1 + abs(e[0]))) | ~np.all(np.isfinite(a), axis=-1)
    return int(np.argmax(bad)) if bad.any() else -1


def _rise_before(e, bad) -> int:
    e = np.asarray(e, float)
    return int(dj.edge_of_stability_step(e if bad < 0 else e[: bad + 1]))


def chaos_study(etas=(4.0, 8.0, 12.0, 16.0, 20.0), ds=(1e2, 1e4, 1e6, 1e8), seeds=4,
                steps=STEPS):
    """Study 6b: how long a system of finite d follows the d = infinity trajectory. The general
    GD DMFT started from the Gram matrix of m random unit vectors in R^d (off-diagonal entries
    ~ d^-1/2: the symmetry breaking of a finite system) against the symmetric one: the first
    step at which e_tr differs by more than 10%."""
    rng = np.random.default_rng(11)
    out = {}
    for eta in etas:
        base = theory("judged", eta, steps)["e_tr"]
        for d in ds:
            ks = []
            for _ in range(seeds):
                W = rng.standard_normal((M, 1000))
                W /= np.linalg.norm(W, axis=1, keepdims=True)
                C = np.eye(M) + (W @ W.T - np.eye(M)) * np.sqrt(1000.0 / d)
                e = theory("judged", eta, steps, c0=C)["e_tr"]
                with np.errstate(invalid="ignore", over="ignore"):
                    dev = np.flatnonzero(~(np.abs(e - base) <= 0.1 * np.abs(base)))
                ks.append(int(dev[0]) if dev.size else None)
            out[eta, d] = ks
    return out


# ------------------------------------------------------------------------------ report
NOTES = """## Reading (details and derivation: docs/discrete_gd.md)

- Section 1: the mean differences vanish like 1/d and their d = infinity offset b is
  consistent with 0 for the discrete DMFT, not for the flow (which passes at eta = 0.1 only for
  e_tr and e_ts). The k = 1 bias of a is analytic:
  E a_i(t_1) - a_i^GD(t_1) = -eta (alpha_bar/m^2) sum_{l != i} a_l h''(0)/(2d) = -0.141 eta/d
  (random initial overlaps, E C_ij(0,0)^2 = 1/d), matching the fitted c = -0.140/-0.070/-0.035
  (and -0.014 at eta = 0.1).
- Section 2, target at eta = 1: the mean e_tr(20) is carried by the ~13% of realizations that
  cross the edge of stability a few steps before the theory does (theory: e_tr rises from
  k = 21); the median equals the theory.
- Sections 4 and 6: two markers of instability. The edge of stability (the first step at which
  e_tr rises, `dj.edge_of_stability_step`) agrees between the d = infinity theory and the
  Gaussian model at every grid point (same step for eta <= 12, within 1-2 steps beyond); the
  largest step without a rise in 20 steps is 1.525 in theory and between 1.5 and 1.75 in the
  simulations. The divergence verdict agrees at 15 of 20 grid points: where nothing diverges
  (eta <= 7, and 10) and where the simulations diverge too (eta >= 18), but not at
  eta = 8, 9, 12, 14, 16. Why: beyond the edge of stability GD is chaotic. The theory's route to
  divergence is a slow collapse of the neurons onto one direction (C_o(k,k) -> 1, after which
  the second layer blows up), reached after 7-18 steps; a finite system follows the d =
  infinity trajectory only until its O(d^-1/2) fluctuations have been amplified to O(1): the
  median simulated e_tr leaves the theory after 2-3 steps at eta >= 8 ('departure'), and the
  GD DMFT itself, started from the symmetry breaking of d random unit vectors (6b), leaves the
  symmetric trajectory after ~3 steps at d = 100 and ~1.5-2 steps later per factor 100 in d
  (an amplification ~e per step), so the d = infinity divergence at step 10-15 is seen only at
  astronomically large d. Where the theory diverges within a few steps of its edge (eta >= 18)
  the simulations diverge as well (0.62-1.00 of the realizations). The command line therefore
  reports the edge of stability next to every divergence (solve/grad JSON, sweep and experiment
  files) and says in the divergence line that finite-d systems follow the theory only for
  ~ln(d)/2 steps beyond the edge.
- Section 5, real networks: at eta <= 0.5 and early times the networks follow the GD DMFT as
  closely as the Gaussian model does (t <= 1: a, C_d(t,0), e_ts within 0.001-0.01), and the
  finite-step effect on a, C_d(t,0) and e_ts at fixed t survives almost entirely (ratio to the
  theory 0.94-1.08; C_d(t,0) at t = 1, eta = 1: 1.47). The train error does not: it responds to
  a larger step less at t = 1 (ratio ~0.5) and more at t = 2 (2-4x), and the networks reach the
  edge of stability much earlier: e_tr rises within 20 steps in 94-100% of the runs already at
  eta = 1 (d = 100-400; theory and Gaussian model: from eta ~ 1.5), and more than half of the
  networks diverge from eta = 1.5 (Gaussian model: from eta ~ 18). The reason is not universal
  physics but the curvature: the largest eigenvalue of the first-layer Hessian (tangent to the
  sphere) at initialization is 1.3-1.6 for the networks (median over 8 draws: 1.27, 1.34, 1.62,
  1.57, 1.56 at d = 100, 200, 400, 800, 1600) against 0.62-0.66 for the Gaussian model at
  d = 200 (power iteration on Hessian-vector products; measured apart with the private
  helpers `dmft_jax._train.setup` and `dmft_jax._gaussian_model.realize`, not part of this
  script). GD is linearly stable only for lr lambda_max < 2, i.e. eta < 2 d/(n lambda_max) =
  ~0.85-1.05 for the networks and ~2.1 for the Gaussian model: the Hessian's top (outliers
  from samples with large pre-activations, which the Gaussian model does not have) is not
  described by the DMFT, which describes the bulk of the dynamics. Below that step the theory
  describes the finite-step effect of networks; above it, networks are less stable than the
  theory predicts. In the single-index setting the networks at d = 100-200 already depart
  from the theory (a, v, e_ts) at eta = 0.5 (the finite-d gap of real networks, which
  benchmarks/gap_study.py measures for the flow); at eta = 1 they pass the edge of stability
  (e_tr(5) = 0.20 against 0.03).
"""


def fmt(x, p=4):
    return f"{x:.{p}f}"


def report(args, ds, counts, judged, others, lrs, stab, thr, wall, extra=()) -> str:
    th, fl, st, rows = judged
    d0 = 200 if 200 in ds else ds[len(ds) // 2]
    L = ["# Exact DMFT of discrete-time projected GD against the Gaussian-model simulator", "",
         f"Generated by `python benchmarks/discrete_gd_validation.py{' --quick' if args.quick else ''}` "
         f"on {datetime.date.today().isoformat()} ({platform.node()}, {os.cpu_count()} CPU cores, "
         f"JAX {jax.__version__} {jax.default_backend().upper()}; this run {wall / 60:.0f} min, "
         f"simulations {SIM_WALL[0] / 60:.0f} min when first run, cached in out/discrete_gd/). Theory: the library's `dj.DiscreteGD` (docs/discrete_gd.md "
         "[G.1]-[G.12]; equal to the NumPy reference `tests/reference/discrete_gd_numpy.py` to 1e-13, tests/test_discrete_gd.py); flow: `dmft_jax.solve` (spec section 6) at dt <= 0.05 and dt/2, "
         "Richardson-extrapolated, at the same t_k = k eta. Simulation: `dmft_jax.simulate` "
         "(float32, full-batch projected GD, lr = eta n/d), means and standard errors (se) by the "
         "control-variate estimator `Simulation.mean_and_error(controls=True)`.", ""]
    # --- judged
    L += ["## 1. Judged setting", "",
          "Pure noise, h(q) = q/10 + q^2/2, tau = 1, m = 4, alpha_bar = n/d = 1.5, a0 = 1, iid "
          f"init (C(0,0) = I), {STEPS} steps. Realizations: "
          + ", ".join(f"{counts[d]} at d = {d}" for d in ds) + ".", "",
          f"### Means at d = {d0} (sim +- se) against the discrete DMFT (GD) and the flow", "",
          f"| eta | k | t | obs | sim (d={d0}) | GD DMFT | flow DMFT | (sim-GD)/se | (sim-flow)/se |",
          "|---|---|---|---|---|---|---|---|---|"]
    for eta in ETAS:
        for k in (1, 2, 5, 10, 20):
            if k > STEPS:
                continue
            for o in OBS:
                s, e = st[d0, eta][o][k], st[d0, eta][o + "_se"][k]
                g, f = th[eta][o][k], fl[eta][o][k]
                L.append(f"| {eta:g} | {k} | {eta * k:g} | {o} | {fmt(s)} +- {fmt(e)} | {fmt(g)} "
                         f"| {fmt(f)} | {(s - g) / e:+.1f} | {(s - f) / e:+.1f} |")
    L += ["", "### Finite-d allowance and the judged criterion", "",
          "For every eta, observable and step k >= 1 the mean difference D_d = sim_d - GD was "
          f"fitted over d in {list(ds)} (weights 1/se^2) as D = c/d (the finite-d bias) and as "
          "D = b + c/d (b: the d = infinity offset, which an exact theory must have at 0). The "
          "allowance at d = 200 is |c|/200 with c fitted on the other sizes only "
          "(cross-validated: d = 200 does not set its own allowance). Criterion: "
          "|D_200| <= 3 se_200 + |c|/200 (+ a float32 floor of 1e-6) at every k = 1..20. 'worst' = max over k of "
          "|D_200| / (3 se_200 + allowance) (<= 1 passes); the same ratio for the flow uses the "
          "same allowance. max |b|/b_err: the largest offset significance over k = 1..20 (the 20 "
          "steps are strongly correlated: they share the realizations).",
          "",
          "| eta | obs | max allowance |c|/200 | worst GD ratio | GD verdict | worst flow ratio "
          "| max |b| / b_err (GD) | max |b| / b_err (flow) |",
          "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    j200 = list(ds).index(d0)
    for eta in ETAS:
        for o in OBS:
            r = rows[eta, o]
            allow = np.abs(r["c_cv"]) / d0
            D, se = r["diff"][j200, 1:], r["se"][j200, 1:]
            ratio = np.abs(D) / (3 * se + allow + FLOAT32_FLOOR)
            fratio = np.abs(r["dflow"][j200, 1:]) / (3 * se + allow + FLOAT32_FLOOR)
            zb = np.abs(r["b"]) / r["b_err"]
            zf = np.abs(r["b_flow"]) / r["b_flow_err"]
            ok = bool(np.all(ratio <= 1.0))
            if o in JUDGED_OBS:
                verdicts.append((eta, o, ok))
            L.append(f"| {eta:g} | {o}{'' if o in JUDGED_OBS else ' (not judged)'} | {allow.max():.4f} "
                     f"| {ratio.max():.2f} | {'PASS' if ok else 'FAIL'} | {fratio.max():.1f} "
                     f"| {zb.max():.2f} | {zf.max():.0f} |")
    L += ["", "Fitted 1/d bias coefficient c (all sizes) at selected steps, and the d = infinity "
          "offset b +- error of the two-parameter fit:", "",
          "| eta | obs | k | " + " | ".join(f"D_{d} (se)" for d in ds)
          + " | c (D = c/d) | b +- err (GD) | b +- err (flow) |",
          "|---|---|---|" + "---|" * len(ds) + "---|---|---|"]
    for eta in ETAS:
        for o in JUDGED_OBS:
            r = rows[eta, o]
            for k in (1, 5, 20):
                Ds = " | ".join(f"{r['diff'][j, k]:+.4f} ({r['se'][j, k]:.4f})"
                                for j in range(len(ds)))
                L.append(f"| {eta:g} | {o} | {k} | {Ds} "
                         f"| {r['c'][k - 1]:+.3f} +- {r['c_err'][k - 1]:.3f} "
                         f"| {r['b'][k - 1]:+.4f} +- {r['b_err'][k - 1]:.4f} "
                         f"| {r['b_flow'][k - 1]:+.4f} +- {r['b_flow_err'][k - 1]:.4f} |")
    L += ["", "Verdict (judged observables a, C_d(t,0), e_tr at d = 200): "
          + ("**PASS**" if all(v for _, _, v in verdicts) else "**FAIL**: "
             + ", ".join(f"eta {e:g} {o}" for e, o, v in verdicts if not v)), ""]
    # --- others
    L += ["## 2. Other settings (d = 100 and 200)", "",
          "target: k = 1, h = phihat = 0.9q + q^2/2, tau = 0.3, alpha = 0.3 (alpha_bar = 1.2), "
          "a0 = 1, iid init; general: spec section 9 setting 2 (C(0,0) = I, "
          "a = (-1, -1/2, 1/3, 2/3)), pure noise as the judged setting; frozen: the judged "
          "setting with a(t) = a0. Per neuron a_i, C_ii(t,0), v_i. The same criterion as in "
          "section 1 with only two sizes: the allowance at d = 200 is |D_100|/2 (the 1/d "
          "extrapolation of the d = 100 difference, so again not fitted on d = 200); 'worst' = max "
          "over k = 1..20 and neurons of |D_200| / (3 se_200 + |D_100|/2 + 1e-6); the flow ratio uses "
          "the same band. Last columns: values "
          "at k = 20 (sim: control-variate mean; for e_tr also the median over realizations).", "",
          "| setting | eta | obs | worst GD ratio | verdict | worst flow ratio | sim k=20 (d=200) "
          "| GD k=20 | flow k=20 |",
          "|---|---|---|---|---|---|---|---|---|"]
    for (name, eta), (t_, f_, s_) in others.items():
        for o, to in (("a_i", "a_i"), ("C_ii0", "C0"), ("v", "v"), ("e_tr", "e_tr"), ("e_ts", "e_ts")):
            if (o == "v" and name != "target") or (o == "a_i" and name == "frozen"):
                continue
            thv = np.diagonal(t_["C0"], axis1=1, axis2=2) if o == "C_ii0" else t_[to]
            flv = np.diagonal(f_["C0"], axis1=1, axis2=2) if o == "C_ii0" else f_[to]
            D1, D2 = s_[100][o][1:] - thv[1:], s_[200][o][1:] - thv[1:]
            band = 3 * s_[200][o + "_se"][1:] + np.abs(D1) / 2 + FLOAT32_FLOOR
            ratio = np.abs(D2) / band
            fratio = np.abs(s_[200][o][1:] - flv[1:]) / band
            last = lambda x: np.atleast_1d(x[-1])                         # noqa: E731
            simv = np.array2string(last(s_[200][o]), precision=4)
            if o == "e_tr":
                simv += f" (median {s_[200]['e_tr_median'][-1]:.4f})"
            L.append(f"| {name} | {eta:g} | {o} | {np.nanmax(ratio):.2f} "
                     f"| {'PASS' if np.nanmax(ratio) <= 1 else 'FAIL'} | {np.nanmax(fratio):.1f} "
                     f"| {simv} | {np.array2string(last(thv), precision=4)} "
                     f"| {np.array2string(last(flv), precision=4)} |")
    # --- lr -> 0
    L += ["", "## 3. Convergence to the flow as lr -> 0 (t = 2)", "",
          "err(eta) = X_GD(eta)(t = 2) - X_flow(t = 2) (flow: `dmft_jax.solve` at dt = eta_min/2 and "
          "eta_min/4, Richardson); slope = fitted d log|err| / d log eta over the listed eta; "
          "err/eta at the smallest eta estimates the first-order coefficient. 'Euler' is the "
          "spec-section-6 scheme at step eta (also first order, with a different coefficient).",
          "", "| setting | obs | " + " | ".join(f"err eta={e:g}" for e in lrs["judged"]["etas"])
          + " | slope GD | err/eta (GD) | err/eta (Euler) |",
          "|---|---|" + "---|" * len(lrs["judged"]["etas"]) + "---|---|---|"]
    for name, r in lrs.items():
        for o in OBS:
            e = r["err"][o]
            pad = " | -" * (len(lrs["judged"]["etas"]) - len(e))
            L.append(f"| {name} | {o} | " + " | ".join(f"{x:+.2e}" for x in e) + pad
                     + f" | {loglog_slope(r['etas'], e):.3f} | {e[-1] / r['etas'][-1]:+.4f} "
                     f"| {r['euler'][o][-1] / r['etas'][-1]:+.4f} |")
    # --- stability
    if stab:
        ds_s = [k[3:] for k in stab[0] if k.startswith("sim")]
        L += ["", "## 4. Stability: where GD diverges (judged setting)", "",
              "Diverged = e_tr > 1e3 (1 + e_tr(0)) or non-finite within the horizon (the "
              "simulator's rule, applied to the theory too). 'GD DMFT' is the exact (d = infinity) "
              "symmetric recursion; 'seeded' is the general recursion started from the Gram matrix "
              "C(0,0) of 4 random unit vectors in R^200 (the O(d^-1/2) symmetry breaking of a "
              "finite system), fraction of 8 seeds; sim: fraction of realizations. 'first rise': "
              "first step where e_tr increases (median curve for the simulation).", "",
              "| eta | GD DMFT 20 steps | GD DMFT 40 steps | GD first rise | seeded (d=200) "
              + "".join(f"| sim d={d} | sim first rise d={d} " for d in ds_s) + "|",
              "|---|---|---|---|---|" + "---|---|" * len(ds_s)]
        for r in stab:
            L.append(f"| {r['eta']:g} | {'div' if r['th'] else '-'} | {'div' if r['th40'] else '-'} "
                     f"| {r['rise'] if r['rise'] is not None else '-'} | {r['seeded']:.2f} "
                     + "".join(f"| {r['sim' + d]:.2f} | {r['rise' + d] if r['rise' + d] is not None else '-'} "
                               if np.isfinite(r['sim' + d]) else "| | "
                               for d in ds_s) + "|")
        if thr:
            L += ["", "Theory thresholds (exact symmetric recursion): e_tr first rises within 20 "
                  f"steps for eta >= {thr['rise', 20]:.3f} (within 40 steps: >= "
                  f"{thr['rise', 40]:.3f}; bisection). Divergence on a 0.1 grid of eta in [6, 14] "
                  f"(X = diverged): within 20 steps first at eta = {thr['div', 20]:.1f}, "
                  f"intermittent, at every grid point from eta = {thr['all', 20]:.1f}: "
                  f"`{thr['pattern', 20]}`; within 40 steps first at {thr['div', 40]:.1f}, always "
                  f"from {thr['all', 40]:.1f}: `{thr['pattern', 40]}`."]
    L += list(extra)
    L += ["", NOTES]
    return "\n".join(L) + "\n"


def _sim_series(raw) -> dict:
    """Per-realization series of a cached simulation in the names of the networks."""
    return dict(a=raw["a"].mean(-1), C_d0=np.diagonal(raw["C0"], axis1=-2, axis2=-1).mean(-1),
                e_tr=raw["e_tr"], e_ts=raw["e_ts"], ok=~np.asarray(raw["diverged"]))


def _net_series(arr) -> dict:
    return dict(a=arr["a"], C_d0=arr["C_d0"], e_tr=arr["e_tr"], e_ts=arr["e_ts"],
                ok=~arr["diverged"])


def report_networks(net, judged, ds, counts, target_R=100) -> list:
    """Section 5: real networks against the GD DMFT, the flow and the Gaussian model."""
    th, fl, st, _ = judged
    J = net["judged"]
    nd = list(J)
    L = ["", "## 5. Real networks (the trainer, full-batch projected GD on the sphere)", "",
         "Two-layer networks f(x) = (1/m) sum_i a_i sigma(<w_i, x>) with sigma(x) = sqrt(0.1) x "
         "+ (x^2 - 1)/2 (so h = q/10 + q^2/2), pure-noise labels (tau = 1), m = 4, n = 1.5 d "
         "Gaussian inputs, a0 = 1, W(0) iid on the sphere, trained by `dj.sweep(..., batch=0, "
         "projection=\"sphere\")` (which solves the GD DMFT of the same grid point; it equals "
         "the theory column to rounding). Runs: "
         + ", ".join(f"{J[d][ETAS[0]]['e_tr'].shape[0]} at d = {d}" for d in nd)
         + " (the same seeds, i.e. the same data and W(0), at every step). Means +- se over the "
         "runs that did not diverge; Gaussian model: the control-variate means of section 1.", "",
         "### 5.1 Means against t (judged setting)", "",
         "| eta | k | t | obs | " + " | ".join(f"networks d={d}" for d in nd)
         + " | Gaussian d=200 | GD DMFT | flow DMFT |",
         "|---|---|---|---|" + "---|" * len(nd) + "---|---|---|"]
    for eta in ETAS:
        for k in (1, 5, 20):
            for o in OBS:
                cells = []
                for d in nd:
                    mu, se = net_stats(J[d][eta], o)
                    cells.append(f"{mu[k]:.4f} +- {se[k]:.4f}")
                g = st[200, eta] if (200, eta) in st else None
                sim = f"{g[o][k]:.4f}" if g is not None else "-"
                L.append(f"| {eta:g} | {k} | {eta * k:g} | {o} | " + " | ".join(cells)
                         + f" | {sim} | {th[eta][o][k]:.4f} | {fl[eta][o][k]:.4f} |")
    # 5.2 step effect
    L += ["", "### 5.2 How much of the finite-step effect survives outside the Gaussian model", "",
          f"Delta(eta) = X(eta; t) - X(eta = {min(ETAS):g}; t) at the same time t: the change "
          "that a larger step makes at fixed t. Theory: the GD DMFT (and, for reference, the "
          "GD DMFT minus the flow, the whole finite-step effect); Gaussian model (d = 200) and "
          "networks: paired differences over the same realizations/seeds (+- se). 'ratio' = "
          "Delta(networks, largest d) / Delta(GD DMFT).", "",
          "| t | eta | obs | GD DMFT - flow | Delta GD DMFT | Delta Gaussian d=200 | "
          + " | ".join(f"Delta networks d={d}" for d in nd) + " | ratio |",
          "|---|---|---|---|---|---|" + "---|" * len(nd) + "---|"]
    gser = {eta: _sim_series(simulate("judged", 200, eta, counts[200], seed=10 * list(ds).index(200),
                                      quiet=True)) for eta in ETAS} if 200 in ds else None
    effects = {}
    for t in (1.0, 2.0):
        eth = step_effect({e: th[e] for e in ETAS}, ETAS, t)
        egs = step_effect(gser, ETAS, t) if gser else {}
        enet = {d: step_effect({e: _net_series(J[d][e]) for e in ETAS}, ETAS, t) for d in nd}
        effects[t] = (eth, egs, enet)
        for eta in ETAS[1:]:
            k = int(round(t / eta))
            for o in OBS:
                x = eth[eta, o][0]
                whole = th[eta][o][k] - fl[eta][o][k]
                g = egs.get((eta, o))
                cells = [f"{enet[d][eta, o][0]:+.4f} +- {enet[d][eta, o][1]:.4f}" for d in nd]
                big = enet[nd[-1]][eta, o][0]
                L.append(f"| {t:g} | {eta:g} | {o} | {whole:+.4f} | {x:+.4f} | "
                         + (f"{g[0]:+.4f} +- {g[1]:.4f}" if g else "-") + " | "
                         + " | ".join(cells) + f" | {big / x if abs(x) > 1e-12 else float('nan'):.2f} |")
    # 5.3 target
    T = net["target"]
    L += ["", "### 5.3 Single-index setting (h = phihat = 0.9q + q^2/2, tau = 0.3, alpha = 0.3)", "",
          "Networks with sigma = sqrt(0.9) x + (x^2 - 1)/2 and phi = sigma(<u, x>), the Gaussian "
          "model of section 2 (d = 100/200), the GD DMFT and the flow, at k = 5 and 20.", "",
          "| eta | k | obs | " + " | ".join(f"networks d={d}" for d in T)
          + " | Gaussian d=200 | GD DMFT | flow DMFT |",
          "|---|---|---|" + "---|" * len(T) + "---|---|---|"]
    for eta in (0.5, 1.0):
        tht, flt = theory("target", eta, STEPS), flow("target", eta, STEPS)
        graw = simulate("target", 200, eta, target_R, seed=207, quiet=True)
        gst = sim_stats(graw)
        for k in (5, 20):
            for o in ("a", "C_d0", "v", "e_tr", "e_ts"):
                cells = []
                for d in T:
                    mu, se = net_stats(T[d][eta], o)
                    cells.append(f"{mu[k]:.4f} +- {se[k]:.4f}")
                thv = tht["v"][:, 0] if o == "v" else tht[o]
                flv = flt["v"][:, 0] if o == "v" else flt[o]
                gv = gst["v"].mean(-1) if o == "v" else gst[o]
                L.append(f"| {eta:g} | {k} | {o} | " + " | ".join(cells)
                         + f" | {gv[k]:.4f} | {thv[k]:.4f} | {flv[k]:.4f} |")
    # 5.4 edge of stability of the networks at the steps of section 1
    L += ["", "### 5.4 Edge of stability of the networks (judged setting)", "",
          "Fraction of runs whose full-batch train loss rises within 20 steps (`rise_step` of "
          "the trainer) and the median step; the GD DMFT and the Gaussian model (d = 200) do not "
          "rise at these steps (their edge is at eta ~ 1.5, section 6).", "",
          "| eta | " + " | ".join(f"networks d={d}: risen, median step" for d in nd) + " |",
          "|---|" + "---|" * len(nd)]
    for eta in ETAS:
        cells = []
        for d in nd:
            r = np.asarray(J[d][eta]["rise_step"])
            cells.append(f"{np.mean(r >= 0):.2f}, {_median_step(r):g}")
        L.append(f"| {eta:g} | " + " | ".join(cells) + " |")
    return L, effects


def report_sweep(rows, chaos, thr, d=200) -> list:
    """Section 6: the sweep over lr across the divergence threshold; 6b the chaos horizon."""
    L = ["", "## 6. A sweep over lr across the divergence threshold (judged setting, 20 steps)", "",
         f"One `dj.sweep` over lr = eta n/d (d = {d}, full-batch GD, 40 networks per point), "
         "whose GD DMFT marks every grid point (`dmft_diverged`, `dmft_divergence_step`, "
         "`dmft_rise_step`), against `dj.simulate` (Gaussian model, d = 200, 40 realizations per "
         "point) and the networks of the same sweep. Diverged: the one rule of the project "
         "(non-finite, |C| > 1 for the theory, e_tr > 1e3 (1 + e_tr(0))); a simulation or "
         "network grid point counts as diverged when more than half of its runs diverged, and as "
         "unstable when more than half passed the edge of stability (e_tr rises). 'departure': "
         "the first step at which the median simulated e_tr leaves the theory by more than "
         "10% + 0.02.", "",
         "| eta | GD DMFT: diverges at step | edge of stability | Gaussian: diverged | median "
         "div. step | risen | median rise step | departure | networks: diverged | median div. "
         "step | risen | median rise step | div. agrees | edge agrees |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    agree_div = agree_rise = 0
    for r in rows:
        th_div, th_rise = r["th_div"] >= 0, r["th_rise"] >= 0
        a_div = th_div == (r["sim_frac"] > 0.5)
        a_rise = th_rise == (r["sim_rise_frac"] > 0.5)
        agree_div += a_div
        agree_rise += a_rise
        L.append(f"| {r['eta']:g} | {r['th_div'] if th_div else '-'} | "
                 f"{r['th_rise'] if th_rise else '-'} | {r['sim_frac']:.2f} | "
                 f"{r['sim_div_step']:g} | {r['sim_rise_frac']:.2f} | {r['sim_rise']:g} | "
                 f"{r['departure'] if r['departure'] is not None else '-'} | {r['net_frac']:.2f} | "
                 f"{r['net_div_step']:g} | {r['net_rise_frac']:.2f} | {r['net_rise']:g} | "
                 f"{'yes' if a_div else '**no**'} | {'yes' if a_rise else '**no**'} |")
    n = len(rows)
    bad = [r["eta"] for r in rows if (r["th_div"] >= 0) != (r["sim_frac"] > 0.5)]
    L += ["", f"Same verdict, theory and Gaussian model: divergence at {agree_div} of {n} grid "
          f"points (differs at eta = {', '.join(f'{e:g}' for e in bad) or 'none'}); edge of "
          f"stability at {agree_rise} of {n}."]

    def last_stable(key, frac=True):
        ok = [r["eta"] for r in rows if (r[key] <= 0.5 if frac else r[key] < 0)]
        return max(ok) if ok else float("nan")

    def first_unstable(key, frac=True):
        bad = [r["eta"] for r in rows if (r[key] > 0.5 if frac else r[key] >= 0)]
        return min(bad) if bad else float("nan")

    L += ["", "Largest stable step on the grid (predicted and simulated):", "",
          "| marker | GD DMFT (d = infinity) | Gaussian model d = 200 | networks d = 200 |",
          "|---|---|---|---|",
          f"| edge of stability within 20 steps (last eta without / first with a rise) | "
          f"{last_stable('th_rise', False):g} / {first_unstable('th_rise', False):g} (bisection: "
          f"{thr.get(('rise', 20), float('nan')):.3f}) | {last_stable('sim_rise_frac'):g} / "
          f"{first_unstable('sim_rise_frac'):g} | {last_stable('net_rise_frac'):g} / "
          f"{first_unstable('net_rise_frac'):g} |",
          f"| divergence within 20 steps (last eta without / first with) | "
          f"{last_stable('th_div', False):g} / {first_unstable('th_div', False):g} (0.1 grid: "
          f"first {thr.get(('div', 20), float('nan')):.1f}, always from "
          f"{thr.get(('all', 20), float('nan')):.1f}) | {last_stable('sim_frac'):g} / "
          f"{first_unstable('sim_frac'):g} | {last_stable('net_frac'):g} / "
          f"{first_unstable('net_frac'):g} |"]
    if chaos:
        etas = sorted({e for e, _ in chaos})
        dvals = sorted({d for _, d in chaos})
        L += ["", "### 6b. How long a finite system follows the d = infinity trajectory", "",
              "The general GD DMFT started from the Gram matrix of m = 4 random unit vectors "
              "in R^d (off-diagonal entries ~ d^-1/2, the symmetry breaking of a finite system) "
              "against the symmetric theory: the first step at which e_tr differs by more than "
              "10% (4 seeds; '-': never within 20 steps).", "",
              "| eta | " + " | ".join(f"d = {d:.0e}" for d in dvals) + " |",
              "|---|" + "---|" * len(dvals)]
        for e in etas:
            L.append(f"| {e:g} | " + " | ".join(
                ", ".join("-" if k is None else str(k) for k in chaos[e, d]) for d in dvals)
                + " |")
    return L


def figure_study(path, judged, net, effects, rows, chaos):
    """The figure of sections 5-6."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    th, fl, st, _ = judged
    J = net["judged"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    eta = 1.0
    for ax, o, lab in ((axes[0, 0], "e_tr", "e_tr(t)"), (axes[0, 1], "a", "a(t)")):
        t = th[eta]["t"]
        for d in J:
            mu, se = net_stats(J[d][eta], o)
            ax.errorbar(t, mu, 2 * se, fmt="o", ms=3, label=f"networks d={d}")
        if (200, eta) in st:
            ax.plot(t, st[200, eta][o], "k^", ms=4, mfc="none", label="Gaussian model d=200")
        ax.plot(t, th[eta][o], "-", lw=1.4, label="GD DMFT")
        ax.plot(t, fl[eta][o], "--", lw=1.0, label="flow DMFT")
        if o == "e_tr":
            ax.set_yscale("log")
        ax.set(title=f"{lab}, eta = lr d/n = 1 (judged setting)", xlabel="t = k eta")
    axes[0, 0].legend(fontsize=7)
    ax = axes[0, 2]
    eth, egs, enet = effects[2.0]
    es = [e for e in ETAS if e != min(ETAS)]
    for o, mk in (("a", "o"), ("e_tr", "s")):
        ax.plot(es, [eth[e, o][0] for e in es], "-" + mk, label=f"{o}: GD DMFT")
        if egs:
            ax.plot(es, [egs[e, o][0] for e in es], ":" + mk, mfc="none", label=f"{o}: Gaussian d=200")
        d = list(J)[-1]
        ax.errorbar(es, [enet[d][e, o][0] for e in es], [2 * enet[d][e, o][1] for e in es],
                    fmt="--" + mk, label=f"{o}: networks d={d}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(title=f"finite-step effect at t = 2: X(eta) - X({min(ETAS):g})", xlabel="eta")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    et = [r["eta"] for r in rows]
    ax.plot(et, [float(r["th_div"] >= 0) for r in rows], "k-o", label="GD DMFT (d = inf)")
    ax.plot(et, [r["sim_frac"] for r in rows], ":^", label="Gaussian model d=200")
    ax.plot(et, [r["net_frac"] for r in rows], "--s", label="networks d=200")
    ax.set(xscale="log", xlabel="eta = lr d/n", ylabel="fraction diverged in 20 steps",
           title="divergence")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    nan = float("nan")
    ax.plot(et, [r["th_rise"] if r["th_rise"] >= 0 else nan for r in rows], "k-o",
            label="GD DMFT")
    ax.plot(et, [r["sim_rise"] for r in rows], ":^", label="Gaussian d=200 (median)")
    ax.plot(et, [r["net_rise"] for r in rows], "--s", label="networks d=200 (median)")
    ax.plot(et, [r["th_div"] if r["th_div"] >= 0 else nan for r in rows], "r-x",
            label="GD DMFT divergence step")
    ax.set(xscale="log", xlabel="eta = lr d/n", ylabel="step",
           title="edge of stability: first rise of e_tr")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    if chaos:
        for e in sorted({e for e, _ in chaos}):
            ds_ = sorted({d for ee, d in chaos if ee == e})
            med = [np.median([k if k is not None else STEPS + 1 for k in chaos[e, d]])
                   for d in ds_]
            ax.plot(np.log10(ds_), med, "-o", label=f"eta = {e:g}")
        ax.axhline(STEPS, color="k", lw=0.6, ls=":")
        ax.set(xlabel="log10 d", ylabel="step of 10% departure (21: none)",
               title="symmetry breaking ~ d^-1/2 amplified by chaos")
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def figure(path, ds, judged, lrs, stab):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    th, fl, st, rows = judged
    fig, axes = plt.subplots(4, len(ETAS), figsize=(4.3 * len(ETAS), 14))
    d0 = 200 if 200 in ds else ds[-1]
    for col, eta in enumerate(ETAS):
        for row, (o, lab) in enumerate((("a", "a(t)"), ("C_d0", "C_d(t,0)"), ("e_tr", "e_tr(t)"))):
            ax = axes[row, col]
            s = st[d0, eta]
            t = th[eta]["t"]
            ax.errorbar(t, s[o], 2 * s[o + "_se"], fmt="o", ms=3, label=f"sim d={d0} (+-2 se)")
            ax.plot(t, th[eta][o], "-", lw=1.2, label="discrete GD DMFT")
            ax.plot(t, fl[eta][o], "--", lw=1.0, label="flow DMFT")
            if o == "e_tr":
                ax.set_yscale("log")
            ax.set_title(f"{lab}, eta = lr d/n = {eta:g}")
            ax.set_xlabel("t = k eta")
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    ax = axes[3, 0]
    x = 1.0 / np.asarray(ds, float)
    for eta, mk in zip(ETAS, "o^s"):
        r = rows[eta, "e_tr"]
        k = 10
        line = ax.errorbar(x, r["diff"][:, k], 2 * r["se"][:, k], fmt=mk,
                           label=f"e_tr(k={k}): sim - GD, eta {eta:g}")
        xx = np.linspace(0, x.max() * 1.05, 10)
        ax.plot(xx, r["c"][k - 1] * xx, "--", color=line[0].get_color(), lw=0.8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlim(0, None)
    ax.set_xlabel("1/d")
    ax.set_title("finite-d bias: fits c/d (dashed)")
    ax.legend(fontsize=7)
    ax = axes[3, 1]
    for name, obs, mk in (("judged", ("a", "e_tr"), "o"), ("target", ("a", "e_ts"), "s")):
        r = lrs[name]
        for o in obs:
            ax.loglog(r["etas"], np.abs(r["err"][o]), mk + "-", label=f"{name} {o}")
    e = lrs["judged"]["etas"]
    ax.loglog(e, 0.1 * e, "k:", label="slope 1")
    ax.set_xlabel("eta")
    ax.set_title("|GD DMFT - flow| at t = 2")
    ax.legend(fontsize=7)
    for ax in axes[3, 3:]:
        ax.axis("off")
    ax = axes[3, 2]
    if stab:
        etas_s = [r["eta"] for r in stab]
        ax.plot(etas_s, [float(r["th"]) for r in stab], "k-o", label="GD DMFT (d = inf)")
        ax.plot(etas_s, [r["seeded"] for r in stab], "--s", label="seeded GD DMFT (d = 200)")
        for key in [k for k in stab[0] if k.startswith("sim")]:
            ax.plot(etas_s, [r[key] for r in stab], ":^", label=f"simulation d = {key[3:]}")
        ax.set_xscale("log")
        ax.set_xlabel("eta = lr d/n")
        ax.set_ylabel("fraction diverged in 20 steps")
        ax.set_title("divergence")
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-stability", action="store_true")
    p.add_argument("--no-networks", action="store_true")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--report", default=str(ROOT / "benchmarks/results/discrete_gd.md"))
    p.add_argument("--figure", default=str(ROOT / "benchmarks/figures/discrete_gd.png"))
    p.add_argument("--figure-study", default=str(ROOT / "benchmarks/figures/discrete_gd_study.png"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.quick:
        ds, counts, counts_other = [50, 100], {50: 40, 100: 40}, {100: 20, 200: 10}
        grid, d_sims, R_stab = (2.0, 8.0, 20.0), (100,), 4
        net_seeds, sweep_etas, chaos_ds = {50: 20, 100: 20}, (1.0, 2.0, 8.0, 20.0), (1e2, 1e6)
    else:
        ds, counts, counts_other = [100, 200, 400], {100: 400, 200: 400, 400: 80}, {100: 200, 200: 100}
        grid = (1.0, 1.25, 1.5, 1.75, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0,
                25.0, 30.0)
        d_sims, R_stab = (100, 200, 400), 16
        net_seeds, sweep_etas, chaos_ds = {100: 400, 200: 200, 400: 100}, SWEEP_ETAS, \
            (1e2, 1e4, 1e6, 1e8)
    print("judged setting", flush=True)
    judged = judged_study(ds, counts, args.quick)
    print("other settings", flush=True)
    others = other_study(counts_other)
    print("lr -> 0", flush=True)
    lrs = lr_study()
    stab = [] if args.no_stability else stability_study(grid, d_sims, R_stab)
    thr = {} if args.no_stability else thresholds()
    extra, net, effects, rows, chaos = [], None, None, [], {}
    if not args.no_networks:
        print("networks", flush=True)
        net = network_study(ds, net_seeds, target_ds=(100, 200) if not args.quick else (100,),
                            target_seeds=200 if not args.quick else 20)
        lines, effects = report_networks(net, judged, ds, counts, counts_other[200])
        extra += lines
    if not args.no_sweep:
        print("sweep", flush=True)
        rows = divergence_sweep(sweep_etas, R=40 if not args.quick else 8,
                                seeds=40 if not args.quick else 8)
        chaos = chaos_study(ds=chaos_ds)
        extra += report_sweep(rows, chaos, thr)
    wall = time.perf_counter() - t0
    text = report(args, ds, counts, judged, others, lrs, stab, thr, wall, extra)
    pathlib.Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.report).write_text(text)
    figure(args.figure, ds, judged, lrs, stab)
    if net is not None and rows:
        figure_study(args.figure_study, judged, net, effects, rows, chaos)
    print(text)
    print(f"wrote {args.report}, {args.figure} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
