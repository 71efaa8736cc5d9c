"""Scaling collapses of the finite-m DMFT onto the reduced theories of spec section 7.

Writes to benchmarks/figures/ (created if needed):

* ``lazy_collapse.png``  lazy init, pure noise (figures 11-12: h = 0.9q + q^2/2, tau = 2.5,
  alpha = 0.3, gamma0 = 1): e_tr against t m (lz1; short runs at large m), against t (lz2),
  gamma = a / sqrt(m) against t / m (long runs at small m: the explicit step must stay below
  1 / (alpha m gamma^2 h'(1))), and the (gamma, e_tr) plane with the adiabatic curve
  (gamma, e_tr^lz2(gamma) at a long time) of lz2 runs at frozen gamma;
* ``meanfield_collapse.png``  mean-field init, pure noise (figures 18-23: h = 0.9q + q^3/6,
  tau = 0.6, alpha = 0.3, a0 = 1): m C_o(t, t) against t (mf1), a against t / sqrt(m) (mf2),
  gamma against t / m and e_tr, e_ts against t / m;
* ``h2_collapse.png``  fixed a = 1, alpha_bar = 1.5, frozen (figures 32-33 setting): e_tr and
  C_o(t, t) against t / m with the H.2 theory;
* ``test_error_vs_m.png``  lazy init (gamma0 = 1), phi = sigma, tau = 0.3, alpha = 0.3: the test
  error when the train error first drops below 1e-4, against m, for h = 0.9q + q^2/2 (q^2 term)
  and h = 0.9q + q^3/6 (none), with the m = infinity value of lz2 [2.7] and fitted rates.

and prints the convergence numbers (max deviations from each reduced theory per m).

    python benchmarks/reduced_collapse.py            # default sizes (a few minutes on 2 cores)
    python benchmarks/reduced_collapse.py --quick    # small sizes (< 1 min, a smoke test)
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time

import jax

# Reruns reuse compilations through the persistent cache the tests use (.jax_cache/, ignored).
jax.config.update("jax_compilation_cache_dir",
                  str(pathlib.Path(__file__).resolve().parents[1] / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dmft_jax import target as make_target  # noqa: E402
from dmft_jax import symmetric_dmft  # noqa: E402
from dmft_jax import TimeGrid  # noqa: E402
from dmft_jax import integrate, solve  # noqa: E402
from dmft_jax import h2_model, lz1, lz2_model, mf1, mf2_model  # noqa: E402

QUAD = [0.0, 0.9, 0.5]               # h = 0.9q + q^2/2
CUBIC = [0.0, 0.9, 0.0, 1.0 / 6.0]   # h = 0.9q + q^3/6
FIG8 = [0.0, 0.3, 0.5]               # h = 0.3q + q^2/2
FIGURES = pathlib.Path(__file__).resolve().parent / "figures"

SIZES = {
    False: dict(h2_m=(4, 8, 16, 32), lz1_m=(16, 64, 256), lz2_m=(8, 16, 32, 64), lz2_T=10.0,
                third_m=(2, 4, 8), third_T=8.0, mf1_m=(20, 80, 320), mf2_m=(16, 64, 256),
                mf3_m=(2, 4, 8), mf3_T=10.0, err_m=(8, 16, 32, 64), adiabatic=12,
                adiabatic_steps=600),
    True: dict(h2_m=(4, 8, 16), lz1_m=(16, 64), lz2_m=(8, 16), lz2_T=8.0, third_m=(2, 4),
               third_T=6.0, mf1_m=(20, 80), mf2_m=(16, 64), mf3_m=(2, 4), mf3_T=4.0,
               err_m=(8, 16), adiabatic=6, adiabatic_steps=200),
}
SHORT = 200          # steps of the short runs; runs of the same m and length share a compilation


def run(model, dt, steps):
    """solve() with two causal chunks beyond 256 steps (two compilations instead of eight)."""
    return solve(model, TimeGrid(dt, steps), chunks=1 if steps < 256 else 2)


def lazy_dt(m, alpha, gamma, dh1, safety=0.8):
    """Explicit Euler step below the stiffness bound 1 / (alpha m gamma^2 h'(1)) (spec sec. 6)."""
    return safety / (alpha * m * gamma**2 * dh1)


def grid_for(t_max, dt_max):
    """(dt, steps) reaching t_max with dt <= dt_max and at least SHORT steps."""
    steps = max(SHORT, int(math.ceil(t_max / dt_max)))
    return t_max / steps, steps


# ----------------------------------------------------------------------------------- lazy
def lazy_section(sizes, ax):
    h, tau, alpha, g0, dh1 = QUAD, 2.5, 0.3, 1.0, 1.9
    print("\n== lazy init, pure noise (h = 0.9q + q^2/2, tau = 2.5, alpha = 0.3, gamma0 = 1)")
    # lz1: t = tau_hat / m
    dtau = 0.05
    ref1 = lz1(h, tau=tau, alpha=alpha, gamma0=g0, t=dtau * np.arange(SHORT + 1))
    errs = []
    for m in sizes["lz1_m"]:
        sol = run(symmetric_dmft(h, tau=tau, alpha=alpha, m=m, gamma0=g0), dtau / m, SHORT)
        ax[0].plot(m * np.asarray(sol.t), sol.e_tr, label=f"m = {m}")
        errs.append(float(jnp.max(jnp.abs(sol.e_tr - ref1.e_tr))))
    ax[0].plot(ref1.t, ref1.e_tr, "k--", lw=2, label="lz1")
    ax[0].set(xlabel="t m", ylabel="train error", title="lz1: t ~ 1/m")
    report("lz1: max |e_tr(t/m) - e_tr^lz1(t)|", sizes["lz1_m"], errs)

    # lz2: t = O(1)
    ref2 = run(lz2_model(h, tau=tau, alpha=alpha, gamma0=g0), 0.05, 300)
    errs = []
    for m in sizes["lz2_m"]:
        dt, steps = grid_for(sizes["lz2_T"], min(0.05, lazy_dt(m, alpha, g0, dh1)))
        sol = run(symmetric_dmft(h, tau=tau, alpha=alpha, m=m, gamma0=g0), dt, steps)
        t = np.asarray(sol.t)
        ax[1].loglog(t[1:], sol.e_tr[1:], label=f"m = {m}")
        window = t >= 0.5
        ref = np.interp(t[window], np.asarray(ref2.t), np.asarray(ref2.e_tr))
        errs.append(float(np.max(np.abs(np.asarray(sol.e_tr)[window] - ref))))
    ax[1].loglog(ref2.t[1:], ref2.e_tr[1:], "k--", lw=2, label="lz2")
    ax[1].set(xlabel="t", ylabel="train error", title="lz2: t ~ 1")
    report(f"lz2: max |e_tr(t) - e_tr^lz2(t)|, 0.5 <= t <= {sizes['lz2_T']:g}", sizes["lz2_m"],
           errs)

    # third regime: t = O(m), gamma grows until the train error vanishes
    g_max = 1.6
    for m in sizes["third_m"]:
        dt, steps = grid_for(sizes["third_T"] * m, min(0.1, lazy_dt(m, alpha, g_max, dh1)))
        t0 = time.perf_counter()
        sol = run(symmetric_dmft(h, tau=tau, alpha=alpha, m=m, gamma0=g0), dt, steps)
        print(f"  third regime, m = {m}: {steps} steps of dt = {dt:.4f} in "
              f"{time.perf_counter() - t0:.1f} s; at t/m = {sizes['third_T']:g}: gamma "
              f"{float(sol.gamma[-1]):.4f}, e_tr {float(sol.e_tr[-1]):.2e}, "
              f"e_ts {float(sol.e_ts[-1]):.4f}")
        ax[2].plot(np.asarray(sol.t) / m, sol.gamma, label=f"m = {m}")
        ax[3].semilogy(sol.gamma, sol.e_tr, label=f"m = {m}")
    ax[2].set(xlabel="t / m", ylabel="gamma = a / sqrt(m)", title="third regime: t ~ m")

    # adiabatic curve: lz2 at frozen gamma, long times
    gammas = np.linspace(0.9, g_max, sizes["adiabatic"])
    e_inf = adiabatic_curve(h, tau, alpha, gammas, dt=0.25, steps=sizes["adiabatic_steps"])
    ax[3].semilogy(gammas, np.maximum(e_inf, 1e-12), "k--", lw=2, label="lz2, t -> inf")
    ax[3].set(xlabel="gamma = a / sqrt(m)", ylabel="train error", ylim=(1e-6, 10),
              title="(gamma, e_tr) and the adiabatic curve")
    print(f"  adiabatic e_tr^lz2(gamma) at t = {0.25 * sizes['adiabatic_steps']:g}: " + ", ".join(
        f"{g:.3f}: {e:.3e}" for g, e in zip(gammas, e_inf)))


def adiabatic_curve(h, tau, alpha, gammas, dt, steps):
    """e_tr^lz2 at t = dt * steps for each frozen gamma (vmapped: one compilation)."""
    @jax.jit
    def final(gs):
        return jax.vmap(lambda g: integrate(lz2_model(h, tau=tau, alpha=alpha, gamma0=g),
                                            TimeGrid(dt, steps), chunks=2).e_tr[-1])(gs)
    return np.asarray(final(jnp.asarray(gammas)))


# ----------------------------------------------------------------------------- mean field
def meanfield_section(sizes, ax):
    h, tau, alpha, a0 = CUBIC, 0.6, 0.3, 1.0
    print("\n== mean-field init, pure noise (h = 0.9q + q^3/6, tau = 0.6, alpha = 0.3, a0 = 1)")
    # mf1: t = O(1)
    dt = 0.05
    ref1 = mf1(h, tau=tau, alpha=alpha, a0=a0, t=dt * np.arange(SHORT + 1))
    errs = []
    for m in sizes["mf1_m"]:
        sol = run(symmetric_dmft(h, tau=tau, alpha=alpha, m=m, a0=a0), dt, SHORT)
        c_eq = m * np.diagonal(np.asarray(sol.C_o))
        ax[0].plot(sol.t, c_eq, label=f"m = {m}")
        errs.append(float(np.max(np.abs(m * np.asarray(sol.C_o) - np.asarray(ref1.C_o)))))
    ax[0].plot(ref1.t, np.diagonal(np.asarray(ref1.C_o)), "k--", lw=2, label="mf1")
    ax[0].set(xlabel="t", ylabel="m C_o(t, t)", title="mf1: t ~ 1")
    report("mf1: max |m C_o(t,s) - C_o^mf1(t,s)|, t <= 10", sizes["mf1_m"], errs)

    # mf2: t = sqrt(m) s
    ds = 0.05
    ref2 = run(mf2_model(h, tau=tau, alpha=alpha, a0=a0), ds, SHORT)
    errs = []
    for m in sizes["mf2_m"]:
        sol = run(symmetric_dmft(h, tau=tau, alpha=alpha, m=m, a0=a0), ds * np.sqrt(m), SHORT)
        ax[1].plot(np.asarray(sol.t) / np.sqrt(m), sol.a, label=f"m = {m}")
        errs.append(float(jnp.max(jnp.abs(sol.a - ref2.a))))
    ax[1].plot(ref2.t, ref2.a, "k--", lw=2, label="mf2")
    ax[1].set(xlabel="t / sqrt(m)", ylabel="a", title="mf2: t ~ sqrt(m)")
    report("mf2: max |a(sqrt(m) s) - a^mf2(s)|, s <= 10", sizes["mf2_m"], errs)

    # mf3: t = O(m), a ~ sqrt(m): keep dt below the stiffness bound of the grown a
    for m in sizes["mf3_m"]:
        dt, steps = grid_for(sizes["mf3_T"] * m, min(0.1, lazy_dt(m, alpha, 1.6, 1.4)))
        t0 = time.perf_counter()
        sol = run(symmetric_dmft(h, tau=tau, alpha=alpha, m=m, a0=a0), dt, steps)
        print(f"  mf3, m = {m}: {steps} steps of dt = {dt:.4f} in "
              f"{time.perf_counter() - t0:.1f} s; at t/m = {sizes['mf3_T']:g}: gamma "
              f"{float(sol.gamma[-1]):.4f}, e_tr {float(sol.e_tr[-1]):.2e}, "
              f"e_ts {float(sol.e_ts[-1]):.4f}")
        t = np.asarray(sol.t) / m
        ax[2].plot(t, sol.gamma, label=f"m = {m}")
        ax[3].semilogy(t, sol.e_tr, label=f"train, m = {m}")
        ax[3].semilogy(t, sol.e_ts, ":", color=ax[3].lines[-1].get_color())
    ax[2].set(xlabel="t / m", ylabel="gamma = a / sqrt(m)", title="mf3: t ~ m")
    ax[3].set(xlabel="t / m", ylabel="error (dotted: test)", ylim=(1e-6, 1))


# ----------------------------------------------------------------------------------- H.2
def h2_section(sizes, ax):
    ab, a, dtt, n = 1.5, 1.0, 0.025, 200
    print("\n== fixed a = 1, alpha_bar = 1.5, frozen, pure noise (h = 0.3q + q^2/2, tau = 1)")
    ref = run(h2_model(FIG8, tau=1.0, alpha_bar=ab, a=a), dtt, n)
    errs = []
    for m in sizes["h2_m"]:
        sol = run(symmetric_dmft(FIG8, tau=1.0, alpha=ab / m, m=m, a0=a, freeze_a=True),
                  dtt * m, n)
        ax[0].semilogy(np.asarray(sol.t) / m, sol.e_tr, label=f"m = {m}")
        ax[1].plot(np.asarray(sol.t) / m, np.diagonal(np.asarray(sol.C_o)), label=f"m = {m}")
        errs.append(float(jnp.max(jnp.abs(sol.e_tr - ref.e_tr))))
    ax[0].semilogy(ref.t, ref.e_tr, "k--", lw=2, label="H.2")
    ax[1].plot(ref.t, jnp.diagonal(ref.C_o), "k--", lw=2, label="H.2")
    ax[0].set(xlabel="t / m", ylabel="train error")
    ax[1].set(xlabel="t / m", ylabel="C_o(t, t)")
    report("H.2: max |e_tr(m t) - e_tr^H2(t)|", sizes["h2_m"], errs)


# ----------------------------------------------------------------- test error vs m
def test_error_section(sizes, ax):
    tau, alpha, g0, level = 0.3, 0.3, 1.0, 1e-4
    print("\n== lazy init, phi = sigma, tau = 0.3, alpha = 0.3, gamma0 = 1: test error when "
          f"e_tr < {level:g}")
    for name, h, dh1, t_max in (("h = 0.9q + q^2/2", QUAD, 1.9, 14.0),
                                ("h = 0.9q + q^3/6", CUBIC, 1.4, 24.0)):
        tgt = make_target("same", h)
        ref = lz2_model(h, tgt, tau=tau, alpha=alpha, gamma0=g0)
        e_inf = float(0.5 * (ref.tau**2 + g0**2 * (sum(h) - h[1])))          # [2.7]
        values = []
        for m in sizes["err_m"]:
            dt = min(0.05, lazy_dt(m, alpha, g0, dh1))
            sol = run(symmetric_dmft(h, tgt, tau=tau, alpha=alpha, m=m, gamma0=g0), dt,
                      int(math.ceil(t_max / dt)))
            hit = np.flatnonzero(np.asarray(sol.e_tr) < level)
            values.append(float(sol.e_ts[hit[0]]) if hit.size else float("nan"))
        values = np.array(values)
        diff = values - e_inf
        ms = np.array(sizes["err_m"], float)
        # the rate over the largest widths that lie on the same side as the widest one
        tail = len(diff) - 1
        while tail > 0 and np.sign(diff[tail - 1]) == np.sign(diff[-1]):
            tail -= 1
        ok = np.isfinite(diff) & (np.arange(len(diff)) >= tail)
        rate = np.polyfit(np.log(ms[ok]), np.log(np.abs(diff[ok])), 1)[0] if ok.sum() > 1 else np.nan
        side = ("below" if diff[-1] < 0 else "above") + f" (m >= {int(ms[tail])})"
        print(f"  {name}: m = infinity (lz2, [2.7]) {e_inf:.4f}; " + ", ".join(
            f"m = {m}: {v:.4f}" for m, v in zip(sizes["err_m"], values))
            + f"; approach from {side}, |difference| ~ m^{rate:.2f} there")
        line = ax[0].plot(ms, values, "o-", label=f"{name}")[0]
        ax[0].axhline(e_inf, color=line.get_color(), ls="--")
        ax[1].loglog(ms, np.abs(diff), "o-", color=line.get_color(),
                     label=f"{name}: slope {rate:.2f}, from {side}")
    ax[0].set(xlabel="m", ylabel="test error at interpolation", xscale="log")
    ax[1].set(xlabel="m", ylabel="|e_ts(m) - e_ts(inf)|")


def report(name, ms, errs):
    slope = np.polyfit(np.log(ms), np.log(errs), 1)[0] if len(ms) > 1 else float("nan")
    print(f"  {name}: " + ", ".join(f"m = {m}: {e:.3e}" for m, e in zip(ms, errs))
          + f"  (log-log slope {slope:.2f})")


def figure(rows, cols, title):
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    fig.suptitle(title)
    return fig, axes.ravel()


def save(fig, axes, out, name):
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    print(f"  wrote {out / name}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    parser.add_argument("--out", type=pathlib.Path, default=FIGURES)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = SIZES[args.quick]
    start = time.perf_counter()
    for fn, name, rows, cols, title in (
            (h2_section, "h2_collapse.png", 1, 2, "H.2: fixed a, alpha_bar, t ~ m"),
            (lazy_section, "lazy_collapse.png", 2, 2, "Lazy initialization, pure noise"),
            (meanfield_section, "meanfield_collapse.png", 2, 2,
             "Mean-field initialization, pure noise"),
            (test_error_section, "test_error_vs_m.png", 1, 2,
             "Lazy init, single index: test error at interpolation")):
        fig, axes = figure(rows, cols, title)
        fn(sizes, axes)
        save(fig, axes, args.out, name)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
