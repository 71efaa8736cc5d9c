"""Independent, straightforward NumPy reference for the discretized DMFT.

Implements the scheme of docs/equations.md section 6 for

* the symmetric DMFT (section 5, [C.32]-[C.46]):  :func:`solve_symmetric`;
* the general DMFT (section 4, [C.7]-[C.10], [C.19], [C.20], [C.24], [C.25]):
  :func:`solve_general`.

It is written without reference to ``dmft_jax`` and serves as the speed baseline
and as an independent numerical check.  Pure NumPy float64; vectorized over the
rows of the two-time arrays, a Python loop over time steps; at step n only the
leading (n+1) x (n+1) block is touched (O(n^2) work per step, O(N^3) in total,
O(N^2) memory).

Conventions (both solvers)
--------------------------
Grid ``t[n] = n * dt``, n = 0..N with N = ``steps``.  Two-time arrays are indexed
``X[n, k] = X(t_n, t_k)`` (first index = later/"current" time for causal
objects):

* ``C`` is stored full and symmetric: ``C_d[n, k] = C_d[k, n]``; in the general
  solver ``C[n, k, i, j] = C_ij(t_n, t_k) = C[k, n, j, i]``.
* ``R`` is strictly lower triangular in time: ``R[n, k] = 0`` for k >= n and
  ``R[n+1, n] = identity`` (``R_d[n+1, n] = 1``, ``R_o[n+1, n] = 0``).
* ``R_A`` is lower triangular with ``1/dt`` on its diagonal (the delta);
  ``C_A`` is full and symmetric.
* ``Sigma_C`` is stored full and symmetric; ``Sigma_R`` strictly lower
  triangular (``Sigma_R[n, n] = 0``).
* One-time quantities (``a``, ``v``, ``nu``, ``rho``, ``e_tr``, ``e_ts``) have
  length N+1; ``nu[n]`` and ``rho[n]`` are the values used in the Euler step
  n -> n+1 (``nu[N]``, ``rho[N]`` are evaluated too, with the same formulas).

Discretization (spec section 6): forward Euler for a, v, C(t, s'), R(t, s');
integrals are left Riemann sums ``dt * sum_{k=0 (or s')}^{n}`` including the
point s = t_n; the diagonal 1/dt of R_A makes the delta count fully;
``nu_i[n]`` is the right side of [C.9] at j = i, s' = t_n without the nu term,
computed with the *same* discrete sums, so ``C_ii(t, t) = 1`` exactly; the new
equal-time value is ``C[n+1, n+1] = C[n, n] + dt (D + D^T)`` with D the [C.9]
right side at s' = t_n ([C.6]).  h''(C) appears only multiplied by R; where R
is exactly 0 the product is taken as 0 (h'' is not even evaluated there).  Note
that the scheme gives C_ii(t_{n+1}, t_n) = 1 exactly, where R_ii = 1, so an h
with h''(1) = inf (ReLU) is not supported: a FloatingPointError is raised.

Run ``python benchmarks/numpy_reference.py`` to time ``solve_symmetric`` at
N = 500, 1000 (best of 3; pure noise, h = 0.9q + q^3/6, m = 20, dt = 0.05;
single-threaded BLAS unless OPENBLAS_NUM_THREADS is set).
"""

from __future__ import annotations

import os
import time

if __name__ == "__main__":
    # Small gemv's: a multithreaded BLAS only thrashes on a shared machine.
    # Set before NumPy loads; override by exporting OPENBLAS_NUM_THREADS.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

__all__ = ["solve_symmetric", "solve_general"]


def _zero_phihat(v):
    return 0.0


def _as_phihat(phihat, grad_phihat, k):
    """Accept callables, or 0 / None for a pure-noise target."""
    if not callable(phihat):
        if phihat not in (None, 0, 0.0):
            raise ValueError("phihat must be a callable, 0 or None")
        phihat = _zero_phihat
    if not callable(grad_phihat):
        if grad_phihat is not None and np.any(np.asarray(grad_phihat) != 0):
            raise ValueError("grad_phihat must be a callable, 0 or None")
        zero = np.zeros(k)

        def grad_phihat(v, _z=zero):
            return _z

    return phihat, grad_phihat


def _hpp_times_r(d2h, c, r):
    """h''(c) * r, set to 0 where r == 0 without evaluating h'' there.

    Raises FloatingPointError if h''(c) r is not finite elsewhere.  This happens
    for an h with h''(1) = inf (e.g. ReLU): in this scheme C_ii(t_{n+1}, t_n) =
    C_ii(t_n, t_n) + dt * 0 = 1 exactly (the nu choice makes the [C.9] right side
    vanish at j = i, s' = t), while R_ii(t_{n+1}, t_n) = 1, so the product is
    infinite on the first subdiagonal as well (in the continuum
    1 - C_ii(t, s) ~ (t - s)^2 and int h''(C) R ds diverges logarithmically).
    """
    out = np.zeros_like(r)
    mask = r != 0.0
    if mask.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = d2h(c[mask]) * r[mask]
        if not np.all(np.isfinite(vals)):
            raise FloatingPointError(
                "h''(C) * R is not finite where R != 0 (h'' singular at q = 1? "
                "C_ii(t+dt, t) = 1 exactly in this scheme while R_ii(t+dt, t) = 1)")
        out[mask] = vals
    return out


# ---------------------------------------------------------------------------
# Symmetric DMFT (section 5)
# ---------------------------------------------------------------------------


def solve_symmetric(h, dh, d2h, phihat, grad_phihat, norm2, tau, alpha, m, a0,
                    dt, steps, k=1, freeze_a=False):
    """Symmetric DMFT [C.32]-[C.46] with the explicit scheme of spec section 6.

    Parameters
    ----------
    h, dh, d2h : vectorized callables q -> h(q), h'(q), h''(q).
    phihat : callable v (shape (k,)) -> float, or 0/None (pure noise).
    grad_phihat : callable v -> array (k,), or 0/None.
    norm2 : ||phi||^2.
    tau : label noise std.
    alpha : n/(m d); alpha_bar = alpha * m.
    m : number of hidden units (>= 1).
    a0 : a(0).
    dt : time step eta.   steps : N (grid t_0..t_N).
    k : target index dimension.   freeze_a : keep a(t) = a0.

    Returns
    -------
    dict with
      t (N+1,), a (N+1,), v (N+1, k), nu (N+1,), rho (N+1,), e_tr (N+1,),
      e_ts (N+1,), C_d, C_o (N+1, N+1; symmetric), R_d, R_o (N+1, N+1; strictly
      lower triangular, R_d[n+1, n] = 1), C_A (symmetric), R_A (lower triangular,
      diagonal 1/dt), Sigma_C (symmetric), Sigma_R (strictly lower triangular).
    """
    phihat, grad_phihat = _as_phihat(phihat, grad_phihat, k)
    N = int(steps)
    P = N + 1
    m = int(m)
    ab = alpha * m
    tau2 = float(tau) ** 2
    cst = tau2 + float(norm2)
    wd, wo = 1.0 / m, (m - 1.0) / m          # neuron-average weights
    m1, m2 = m - 1.0, m - 2.0

    Cd = np.zeros((P, P))
    Co = np.zeros((P, P))
    Rd = np.zeros((P, P))
    Ro = np.zeros((P, P))
    RA = np.zeros((P, P))
    CA = np.zeros((P, P))
    SC = np.zeros((P, P))
    SR = np.zeros((P, P))
    a = np.zeros(P)
    v = np.zeros((P, k))
    ph = np.zeros(P)
    nu = np.zeros(P)
    rho = np.zeros(P)
    etr = np.zeros(P)
    ets = np.zeros(P)
    a[0] = a0
    Cd[0, 0] = 1.0

    for n in range(P):
        n1 = n + 1
        an = a[n]
        av = a[:n1]
        ph[n] = phihat(v[n])
        g = np.asarray(grad_phihat(v[n]), dtype=float).reshape(k)
        cd = Cd[n, :n1]
        co = Co[n, :n1]
        rd = Rd[n, :n1]
        ro = Ro[n, :n1]
        hd, ho = h(cd), h(co)
        dhd, dho = dh(cd), dh(co)
        hav = hd * wd + ho * wo                      # (1/m) sum_l h(C_il)
        dhr = dhd * rd * wd + dho * ro * wo          # (1/m) sum_l h'(C_il) R_il

        # 1. Sigma_C, Sigma_R on row n  [C.42]
        sc = cst - an * ph[n] - av * ph[:n1] + an * av * hav
        sr = an * av * dhr
        sr[n] = 0.0
        SC[n, :n1] = sc
        SC[:n1, n] = sc
        SR[n, :n1] = sr

        # 2. R_A row n
        ra = np.zeros(n1)
        ra[n] = 1.0 / dt
        if n > 0:
            ra[:n] = -dt * (sr[:n] @ RA[:n, :n])
        RA[n, :n1] = ra

        # 3. C_A row n (k < n, then k = n)
        ca = np.zeros(n1)
        if n > 0:
            ca[:n] = -dt * (sr[:n] @ CA[:n, :n]) - dt * (RA[:n, :n] @ sc[:n])
        ca[n] = -dt * (sr[:n] @ ca[:n]) - dt * (sc @ ra)
        CA[n, :n1] = ca
        CA[:n1, n] = ca

        # 4. memory kernels, rho, observables  [C.38]-[C.41]
        pref = (ab / m) * an * av
        pd = _hpp_times_r(d2h, cd, rd)
        po = _hpp_times_r(d2h, co, ro)
        MRd = pref * (ra * dhd + ca * pd)
        MRo = pref * (ra * dho + ca * po)
        MCd = pref * ca * dhd
        MCo = pref * ca * dho
        rho[n] = dt * ra.sum()
        etr[n] = -0.5 * ca[n]
        ets[n] = 0.5 * (cst - 2.0 * an * ph[n]
                        + an * an * (h(np.array(1.0)) * wd + h(co[n]) * wo))

        # right sides of [C.34]/[C.35] (without -nu C) for s' = t_k, k <= n
        src = (ab / m) * an * (v[:n1] @ g) * rho[n]
        MR = np.stack([MRd, MRo])                    # (2, n1)
        MC = np.stack([MCd, MCo], axis=1)            # (n1, 2)
        Cd_b, Co_b = Cd[:n1, :n1], Co[:n1, :n1]
        Rd_b, Ro_b = Rd[:n1, :n1], Ro[:n1, :n1]
        A_d = MR @ Cd_b                              # [sum_p MRd C_d(p,k), sum_p MRo C_d(p,k)]
        A_o = MR @ Co_b
        B_d = Rd_b @ MC                              # [sum_p R_d(k,p) MCd(p), ... MCo]
        B_o = Ro_b @ MC
        Xd = src - (dt / m) * (A_d[0] + m1 * A_o[1] + B_d[:, 0] + m1 * B_o[:, 1])
        Xo = src - (dt / m) * (A_o[0] + A_d[1] + m2 * A_o[1]
                               + B_o[:, 0] + B_d[:, 1] + m2 * B_o[:, 1])
        nu[n] = Xd[n]                                # [C.43]
        nun = nu[n]

        if n == N:
            break

        # right sides of [C.36]/[C.37] (without -nu R and the delta)
        E_d = MR @ Rd_b
        E_o = MR @ Ro_b
        Yd = -(dt / m) * (E_d[0] + m1 * E_o[1])
        Yo = -(dt / m) * (E_o[0] + E_d[1] + m2 * E_o[1])

        # [C.32], [C.33]
        if not freeze_a:
            da = (ab / m) * (ph[n] * rho[n] - dt * np.dot(ra, av * hav)
                             - dt * np.dot(ca, av * dhr))
            a[n1] = an + dt * da
        else:
            a[n1] = an
        dv = (-nun * v[n] + (ab / m) * an * g * rho[n]
              - (dt / m) * ((MRd + m1 * MRo) @ v[:n1]))
        v[n1] = v[n] + dt * dv

        # 5. row n+1 of C and R (forward Euler), new diagonal from [C.6]
        Dd = Xd - nun * cd
        Do = Xo - nun * co
        Cd[n1, :n1] = cd + dt * Dd
        Co[n1, :n1] = co + dt * Do
        Cd[n1, n1] = cd[n] + dt * 2.0 * Dd[n]
        Co[n1, n1] = co[n] + dt * 2.0 * Do[n]
        Cd[:n1, n1] = Cd[n1, :n1]
        Co[:n1, n1] = Co[n1, :n1]
        Rd[n1, :n1] = rd + dt * (Yd - nun * rd)
        Ro[n1, :n1] = ro + dt * (Yo - nun * ro)
        Rd[n1, n] += 1.0

    return dict(t=dt * np.arange(P), a=a, v=v, nu=nu, rho=rho, e_tr=etr, e_ts=ets,
                C_d=Cd, C_o=Co, R_d=Rd, R_o=Ro, C_A=CA, R_A=RA,
                Sigma_C=SC, Sigma_R=SR)


# ---------------------------------------------------------------------------
# General DMFT (section 4)
# ---------------------------------------------------------------------------


def solve_general(h, dh, d2h, phihat, grad_phihat, norm2, tau, alpha_bar,
                  a_init, C_init, v_init, dt, steps, freeze_a=False):
    """General DMFT [C.7]-[C.10], [C.19], [C.20], [C.24], [C.25].

    Parameters
    ----------
    a_init : (m,) second-layer weights at t = 0.
    C_init : (m, m) symmetric, unit diagonal, C_ij(0, 0) = <w_i(0), w_j(0)>.
    v_init : (m, k) projections U^T w_i(0).
    alpha_bar : n/d.  Other parameters as in :func:`solve_symmetric`.

    Returns
    -------
    dict with
      t (N+1,), a (N+1, m), v (N+1, m, k), nu (N+1, m), rho (N+1,),
      e_tr (N+1,), e_ts (N+1,),
      C (N+1, N+1, m, m) with C[n, k, i, j] = C_ij(t_n, t_k) = C[k, n, j, i],
      R (N+1, N+1, m, m) with R[n, k, i, j] = R_ij(t_n, t_k), zero for k >= n,
        R[n+1, n] = identity,
      C_A (symmetric), R_A (lower triangular, diagonal 1/dt), Sigma_C
      (symmetric), Sigma_R (strictly lower triangular), all (N+1, N+1).
    """
    a_init = np.asarray(a_init, dtype=float)
    C_init = np.asarray(C_init, dtype=float)
    v_init = np.asarray(v_init, dtype=float)
    m = a_init.shape[0]
    if v_init.ndim == 1:
        v_init = v_init.reshape(m, -1)
    k = v_init.shape[1]
    phihat, grad_phihat = _as_phihat(phihat, grad_phihat, k)
    N = int(steps)
    P = N + 1
    ab = float(alpha_bar)
    cst = float(tau) ** 2 + float(norm2)
    eye = np.eye(m)

    C = np.zeros((P, P, m, m))
    R = np.zeros((P, P, m, m))
    RA = np.zeros((P, P))
    CA = np.zeros((P, P))
    SC = np.zeros((P, P))
    SR = np.zeros((P, P))
    a = np.zeros((P, m))
    v = np.zeros((P, m, k))
    ph = np.zeros((P, m))
    nu = np.zeros((P, m))
    rho = np.zeros(P)
    etr = np.zeros(P)
    ets = np.zeros(P)
    a[0] = a_init
    v[0] = v_init
    C[0, 0] = C_init

    for n in range(P):
        n1 = n + 1
        an = a[n]                                    # (m,)
        av = a[:n1]                                  # (n1, m)
        ph[n] = [phihat(v[n, i]) for i in range(m)]
        g = np.array([np.asarray(grad_phihat(v[n, i]), dtype=float).reshape(k)
                      for i in range(m)])            # (m, k)
        Cn = C[n, :n1]                               # (n1, m, m): C_ij(t_n, t_p)
        Rn = R[n, :n1]
        hC = h(Cn)
        dhC = dh(Cn)
        dhR = dhC * Rn

        # 1. Sigma_C, Sigma_R  [C.20]
        sc = (cst - an @ ph[n] / m - (av * ph[:n1]).sum(1) / m
              + np.einsum('i,pij,pj->p', an, hC, av) / m ** 2)
        sr = np.einsum('i,pij,pj->p', an, dhR, av) / m ** 2
        sr[n] = 0.0
        SC[n, :n1] = sc
        SC[:n1, n] = sc
        SR[n, :n1] = sr

        # 2. R_A row n
        ra = np.zeros(n1)
        ra[n] = 1.0 / dt
        if n > 0:
            ra[:n] = -dt * (sr[:n] @ RA[:n, :n])
        RA[n, :n1] = ra

        # 3. C_A row n
        ca = np.zeros(n1)
        if n > 0:
            ca[:n] = -dt * (sr[:n] @ CA[:n, :n]) - dt * (RA[:n, :n] @ sc[:n])
        ca[n] = -dt * (sr[:n] @ ca[:n]) - dt * (sc @ ra)
        CA[n, :n1] = ca
        CA[:n1, n] = ca

        # 4. memory kernels [C.18], rho, observables
        pref = (ab / m) * an[None, :, None] * av[:, None, :]       # (n1, m, m)
        MR = pref * (ra[:, None, None] * dhC
                     + ca[:, None, None] * _hpp_times_r(d2h, Cn, Rn))
        MC = pref * ca[:, None, None] * dhC
        rho[n] = dt * ra.sum()
        etr[n] = -0.5 * ca[n]
        ets[n] = 0.5 * (cst - 2.0 * an @ ph[n] / m + an @ hC[n] @ an / m ** 2)

        # right side of [C.9] without -nu C, for s' = t_q, q <= n:
        # X[q, i, j] = (ab/m) a_i <g_i, v_j(q)> rho
        #   - (dt/m) sum_{p,l} MR[p, i, l] C[p, q, l, j]
        #   - (dt/m) sum_{p,l} MC[p, i, l] R[q, p, j, l]
        Cb = C[:n1, :n1]
        Rb = R[:n1, :n1]
        src = (ab / m) * rho[n] * an[None, :, None] * np.einsum('ic,qjc->qij', g, v[:n1])
        X = (src
             - (dt / m) * np.einsum('pil,pqlj->qij', MR, Cb, optimize=True)
             - (dt / m) * np.einsum('pil,qpjl->qij', MC, Rb, optimize=True))
        nu[n] = np.diagonal(X[n]).copy()
        nun = nu[n]

        if n == N:
            break

        # [C.10] without -nu R and the delta
        Y = -(dt / m) * np.einsum('pil,pqlj->qij', MR, Rb, optimize=True)

        # [C.7], [C.8]
        if not freeze_a:
            da = (ab / m) * (ph[n] * rho[n]
                             - (dt / m) * np.einsum('p,pil,pl->i', ra, hC, av)
                             - (dt / m) * np.einsum('p,pil,pl->i', ca, dhR, av))
            a[n1] = an + dt * da
        else:
            a[n1] = an
        dv = (-nun[:, None] * v[n] + (ab / m) * an[:, None] * g * rho[n]
              - (dt / m) * np.einsum('pij,pjc->ic', MR, v[:n1]))
        v[n1] = v[n] + dt * dv

        # 5. row n+1 of C and R; diagonal from [C.6]
        D = X - nun[None, :, None] * Cn
        C[n1, :n1] = Cn + dt * D
        C[n1, n1] = Cn[n] + dt * (D[n] + D[n].T)
        C[:n1, n1] = np.swapaxes(C[n1, :n1], 1, 2)
        R[n1, :n1] = Rn + dt * (Y - nun[None, :, None] * Rn)
        R[n1, n] += eye

    return dict(t=dt * np.arange(P), a=a, v=v, nu=nu, rho=rho, e_tr=etr, e_ts=ets,
                C=C, R=R, C_A=CA, R_A=RA, Sigma_C=SC, Sigma_R=SR)


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def _bench_problem():
    """Pure noise, h = 0.9q + q^3/6, tau = 0.6, alpha = 0.3, mean-field a0 = 1."""
    h = lambda q: 0.9 * q + q ** 3 / 6
    dh = lambda q: 0.9 + q ** 2 / 2
    d2h = lambda q: q
    return h, dh, d2h


def main(sizes=(500, 1000), repeats=3):
    h, dh, d2h = _bench_problem()
    for N in sizes:
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = solve_symmetric(h, dh, d2h, None, None, 0.0, 0.6, 0.3, 20, 1.0,
                                  0.05, N)
            best = min(best, time.perf_counter() - t0)
        print(f"solve_symmetric N={N}: {best:.3f} s  (e_tr[N] = {out['e_tr'][-1]:.6f})")


if __name__ == "__main__":
    main()
