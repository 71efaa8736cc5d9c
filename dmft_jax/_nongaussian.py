"""The non-Gaussian DMFT of the real two-layer network (paper App. K, spec nongaussian.md):
the causal pass of spec section 7.3 on a fixed grid with the Euler stepper.

The weight side (W1-W5, spec section 4.2) is the Gaussian DMFT's, reused unchanged through
`dmft_jax._dmft.weight_terms` / `weight_row` in the `General(m)` algebra; only the kernel
provider changes (spec section 6.1). The kernels of row n are Monte Carlo averages over draws
of the sample-side process (spec section 4.3, grid formulas of section 7.2):

    r_p[n]   = xi_p[n] + sum_{l<n} w_l R[n,l] F_p[l]                                  (K.4)
    E_p[n]   = y_p - (1/m) a[n].sigma(r_p[n]),  g = a * sigma'(r),  F = g E / m          (K.5)
    S_p[n]   = -diag(a sigma''(r)) E + g g^T / m                                       (K.9)
    J_p[n,l] = -(1/m) (R[n,l] S_p[l] + sum_{l<q<n} w_q R[n,q] S_p[q] J_p[q,l])          (K.13)
    K_p[n]   = (1/m) sum_{l<n} w_l R[n,l] (g_p[l] grad phi(r0_p)^T - S_p[l] K_p[l])     (K.14)

    M^delta[n] = alpha_bar avg S[n];  M[n,l] = alpha_bar avg S[n] J[n,l]                (K.6)
    M*[n]      = (alpha_bar/m) avg (S[n] K[n] - g[n] grad phi^T)                        (K.7)
    C^E[n,l]   = alpha_bar avg F[n] F[l]^T                                       (K.8', N4)
    da/dt      = (alpha_bar/m) avg E sigma(r)                                          (K.1)

In the Gaussian DMFT's conventions (`Kernels`): delta = M^delta, memory = M, noise = -m C^E
(the weight side feels -(1/m) M^C = C^E), force = -M*, d_a = da/dt. nu is W5 (the weight
side's C_ii(t, t) = 1); nu_K2 = alpha_bar avg F_i r_i (K.2) is a diagnostic (N14).

**Gaussian paths** (spec N3, 7.3 step 4). r0 = z0 ~ N(0, I_k) exactly and
xi[n] = v[n] r0 + xi_perp[n], xi_perp ~ GP(0, C - v v^T) (N3, "equivalent form"). xi_perp is
extended row by row conditionally on its realized past: with Lf the block-lower-triangular
factor of the realized past (xi_perp[l] = sum_{q<=l} Lf[l,q] z[q]), the new block row is
X = B (Lf_past^T)^+ (least squares; B = C[n, <n] - v[n] v[<n]^T) and Lf[n,n] the symmetric
square root of the Schur complement C[n,n] - v v^T - X X^T with its negative eigenvalues
clipped to zero. The Euler covariance is not PSD (spec 7.5): the clipped mass (sum of the
negative eigenvalues' magnitudes) and the mismatch |X Lf_past^T - B| are reported per row in
the solution (`clipped`, `sampling_mismatch`), never hidden. With `paths=True` (spec 7.5's
path-wise weight side, `_row_paths`) the paths are instead the effective weight process
itself, stepped next to R and a and driven by a noise made of the other draws' F: their
covariance is PSD by construction, C and v are measured on them, nothing is clipped.

**Replicas and standard errors.** The `draws` are split into `groups` independent replicas of
draws / groups draws each, each with its own weight side (vmapped). Every observable is the
replica mean, and its standard error is the replica standard deviation / sqrt(groups) (batch
means over draw groups, each group a full, self-consistent solve). The bias of a replica's
nonlinear feedback is O(groups / draws), below the standard error for draws / groups >~ 100.

**Memory and cost.** Per draw the history of xi, F, g, E (N_t m each), S (N_t m^2), K
(N_t m k) and the responses, kept as Y[q, l] = S[q] J[q, l] (`y_zeros`: the lower triangle in
blocks of `J_BLOCK` rows, about 4 N_t^2 m^2 bytes in float64; m = 8, N_t = 100: 2.9 MB). Each
row reads every draw's Y once, so the pass is bound by memory traffic, O(P N_t^3 m^2) in total.
The sampling step solves a least-squares problem of size (N_t m)^2 per row and replica
(O(N_t^4 m^3) in total). `replica_batch` solves the replicas a few at a time (memory); the
fixed-point iteration (`nongaussian_fixed_point`) keeps Y for one batch of draws at a time.

Also here: the semi-implicit per-draw step (`implicit`), control variates, the symmetric
weight side (`symmetric`), forward-mode derivatives at fixed draws. Not done (see
docs/nongaussian.md): PSD-by-construction sampling in the fixed-point iteration (it factors each
iterate's Euler covariance and reports the clipping).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.lax.linalg import SvdAlgorithm, svd
from jaxtyping import Array

from ._algebra import General, Symmetric
from ._checks import check_kernel, check_scalar, concrete, target_or_noise
from ._covariance import AbstractKernel, Activation, Target, activation, covariance
from ._dmft import Kernels, check_initialization, weight_row, weight_terms, weight_write
from ._integrate import AbstractModel
from ._solution import Solution
from ._stepper import Row, RowWeights


def _d1(fn):
    """sigma' of an elementwise function, by forward mode."""
    return lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


class NonGaussianDMFT(AbstractModel):
    """The non-Gaussian DMFT (App. K, spec nongaussian.md sections 4, 6, 7.2, 7.3): the causal
    pass, Euler stepper, `General(m)` algebra. Construct with `nongaussian_dmft`, solve with
    `dj.solve(model, dj.TimeGrid(dt, steps))` (Euler only; other steppers raise ValueError).

    **Fields:** `sigma`, `phi` (pointwise activation and target, jnp-callable Modules; phi maps
    r0 (..., k) to (...), None for pure noise); `h`, `target` (the activation's covariance and
    the target's phihat, ||phi||^2: used only by the test error [4.6]); `tau`, `alpha_bar`;
    `a0` (m,), `c0` (m, m), `v0` (m, k); `key` (common random numbers: the same key gives the
    same draws); `draws` per replica and `groups` replicas (static); `freeze_a`;
    `antithetic` (bool array: each replica's second half of draws is minus its first half,
    (xi, r0, eps) -> -(xi, r0, eps), spec 7.8); `exchangeable` (bool array: under a symmetric
    initialization, average every kernel over neuron permutations, i.e. project matrices on
    D I + O (J - I) and neuron vectors on their mean, spec 4.7 and 7.8; exact in expectation,
    it only removes noise); `control_variates` (bool array: estimate da/dt (K.1) and e_tr with
    the Gaussian model's error at the same paths as control variates, whose means are known in
    closed form, spec 7.8; see `_controls`); `rtol`: relative cutoff of the least-squares
    solve of the path extension; `symmetric` (static): the weight side in the `Symmetric(m)`
    algebra (the pair D, O of spec section 5) under a symmetric initialization, with the
    exchangeable kernels as pairs; the sample side always works with m x m matrices
    (`general_view`); `replica_batch` (static): replicas solved together (see `run_fixed`;
    `draw_groups`, `group_offset` are set there); `paths` (static): the path-wise weight side
    of spec 7.5 (`_row_paths`) instead of the factor of the Euler covariance. `antithetic`,
    `exchangeable` and `control_variates` are traced: switching them does not recompile.
    """

    sigma: Callable
    phi: Callable | None
    h: AbstractKernel
    target: Target
    tau: Array
    alpha_bar: Array
    a0: Array
    c0: Array
    v0: Array
    key: Array
    draws: int = eqx.field(static=True)
    groups: int = eqx.field(static=True)
    freeze_a: bool = eqx.field(static=True, default=False)
    antithetic: Array = False
    exchangeable: Array = False
    control_variates: Array = False
    symmetric: bool = eqx.field(static=True, default=False)
    implicit: bool = eqx.field(static=True, default=False)
    newton: int = eqx.field(static=True, default=20)
    rtol: float = eqx.field(static=True, default=1e-7)
    replica_batch: int | None = eqx.field(static=True, default=None)
    draw_groups: int | None = eqx.field(static=True, default=None)
    group_offset: Array = 0
    paths: bool = eqx.field(static=True, default=False)

    @property
    def m(self) -> int:
        return self.a0.shape[0]

    @property
    def k(self) -> int:
        return self.target.k

    @property
    def algebra(self):
        """The weight side's neuron algebra: `Symmetric(m)` (the pair D, O) when `symmetric`,
        else `General(m)`. The sample side always works with m x m matrices."""
        return Symmetric(self.m) if self.symmetric else General(self.m)

    def _weights0(self):
        """a(0), C(0, 0), v(0) in the weight side's algebra."""
        if not self.symmetric:
            return self.a0, self.c0, self.v0
        off = self.c0[0, 1] if self.m > 1 else jnp.zeros((), self.c0.dtype)
        return self.a0[0], jnp.stack([self.c0[0, 0], off]), self.v0[0]

    def general_view(self, s):
        """The weight-side buffers a, v, C, R, nu of one replica as m x m matrices and neuron
        vectors (identity under `General`; D I + O (J - I) and broadcasts under `Symmetric`)."""
        if not self.symmetric:
            return s
        m = self.m
        return dict(s, a=jnp.broadcast_to(s["a"], (m,) + s["a"].shape),
                    v=jnp.broadcast_to(s["v"], (m,) + s["v"].shape),
                    nu=jnp.broadcast_to(s["nu"], (m,) + s["nu"].shape),
                    C=_dense(jnp.stack(s["C"]), m), R=_dense(jnp.stack(s["R"]), m))

    def _pairs(self, kernels: Kernels) -> Kernels:
        """Exchangeable kernels as (D, O) pairs and neuron means (the `Symmetric` algebra)."""
        if not self.symmetric:
            return kernels
        mats = ("delta", "memory", "memory_jump", "noise")
        return Kernels(**{name: _pair(x) if name in mats else jnp.mean(x, axis=0)
                          for name, x in kernels._asdict().items()})

    @property
    def dtype(self):
        return jnp.result_type(float, self.tau, self.alpha_bar, self.a0)

    def valid(self) -> Array:
        return (self.alpha_bar > 0) & (self.tau >= 0) & jnp.isfinite(self.alpha_bar) \
            & jnp.isfinite(self.tau) & jnp.all(jnp.isfinite(self.a0))

    # ----------------------------------------------------------------- buffers
    def draws_of(self, size: int) -> dict:
        """The draws of every replica (common random numbers from `key`): whitened normals
        z (G, P, m, L) for xi_perp, r0 (G, P, k), the labels y = phi(r0) + eps (G, P) and
        grad phi(r0) (G, P, k). One call to the generator (its compilation dominates small
        problems)."""
        G, P, m, k, dtype = self.groups, self.draws, self.m, self.k, self.dtype
        # the path-wise weight side needs normals at t = 0 only: its draws (z (G, P, m)) do
        # not depend on the grid, so grids of different steps share them
        size_z = 1 if self.paths else size
        flat = jax.random.normal(self.key, (self.draw_groups or G, P, m * size_z + k + 1),
                                 dtype)
        flat = jax.lax.dynamic_slice_in_dim(flat, self.group_offset, G)   # see run_fixed
        half = flat[:, :P // 2]
        pairs = jnp.concatenate([half, -half, flat[:, 2 * (P // 2):]], axis=1)
        flat = jnp.where(self.antithetic, pairs, flat)
        z = flat[..., :m * size_z].reshape((G, P, m) + ((size,) if not self.paths else ()))
        r0 = flat[..., m * size_z:m * size_z + k]
        if self.paths:       # avg r0 r0^T = I_k exactly: v(t) then has no Monte Carlo noise
            r0 = jax.vmap(_unit_second_moment)(r0)      # from it (see `_whitened`)
        eps = self.tau * flat[..., -1]
        if self.phi is None:
            y, dphi = eps, jnp.zeros((G, P, k), dtype)
        else:
            y = self.phi(r0) + eps
            dphi = jax.grad(lambda x: jnp.sum(self.phi(x)))(r0)
        out = dict(z=z, r0=r0, y=y, dphi=dphi)
        return dict(out, G=self._couplings()) if self.paths else out

    def _couplings(self):
        """The fixed Gaussian couplings of the path-wise weight side (spec 7.5), (G, P, P):
        draw p's noise is zeta_p(t) = sqrt(alpha_bar / count) sum_q G_pq F_q(t), no
        self-coupling (G_pp = 0), count the nonzero entries of a row (P - 1; P - 2 with
        antithetic pairs). Independent G_pq and G_qp (not symmetric): the reaction of F_q to
        zeta_p then averages out at O(1/sqrt(P)) and zeta_p is Gaussian with covariance C^E
        (K.8') as P grows. Antithetic draws (p and p' = p + P/2) get opposite rows and no
        coupling to each other, so zeta_p' = -zeta_p and their paths stay opposite."""
        G, P, dtype = self.groups, self.draws, self.dtype
        key = jax.random.fold_in(self.key, 1)
        g = jax.random.normal(key, (self.draw_groups or G, P, P), dtype)
        g = jax.lax.dynamic_slice_in_dim(g, self.group_offset, G)
        idx, half = jnp.arange(P), P // 2
        partner = jnp.where(idx < half, idx + half, jnp.where(idx < 2 * half, idx - half, idx))
        pair = jnp.where((idx >= half) & (idx < 2 * half), idx - half, idx)
        anti = self.antithetic & (P >= 2)
        flip = jnp.where(anti & (idx >= half) & (idx < 2 * half), -1.0, 1.0)
        g = jnp.where(anti, flip[None, :, None] * g[:, pair, :], g)
        drop = (idx[:, None] == idx[None, :]) | (anti & (partner[:, None] == idx[None, :]))
        return jnp.where(drop, 0.0, g)

    def init(self, size: int) -> dict:
        """Buffers with a leading replica axis (groups), and the draws (`draws_of`)."""
        G, P, m, k, dtype = self.groups, self.draws, self.m, self.k, self.dtype
        alg = self.algebra
        a0, c0, v0 = self._weights0()
        vec, mat = alg.vector_shape, alg.matrix_shape
        one = dict(
            a=jnp.zeros(vec + (size,), dtype).at[..., 0].set(a0),
            v=jnp.zeros(vec + (k, size), dtype).at[..., 0].set(v0),
            C=alg.history_set(alg.history_zeros(size, dtype), 0,
                              jnp.zeros(mat + (size,), dtype).at[..., 0].set(c0), True),
            R=alg.history_zeros(size, dtype),
            nu=jnp.zeros(vec + (size,), dtype),
            rho=jnp.zeros((size,), dtype),
            nu_k2=jnp.zeros((m, size), dtype),
            e_tr=jnp.zeros((size,), dtype),
            clipped=jnp.zeros((size,), dtype),
            mismatch=jnp.zeros((size,), dtype),
            Lf=jnp.zeros((m, m, size, size), dtype),
            xi=jnp.zeros((P, m, size), dtype),
            F=jnp.zeros((P, m, size), dtype),
            g=jnp.zeros((P, m, size), dtype),
            E=jnp.zeros((P, size), dtype),
            lam=jnp.zeros((P, size), dtype),
            S=jnp.zeros((P, m, m, size), dtype),
            K=jnp.zeros((P, m, k, size), dtype),
            Y=y_zeros(P, m, size, dtype),
        )
        s = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (G,) + x.shape), one)
        s = dict(s, **self.draws_of(size))
        if self.paths:
            s = jax.vmap(self._start_paths)(s)
        # replicas are independent: with several devices each holds some of them
        return shard_draws(s)

    def _mat(self, x):
        """An m x m matrix (m, m, ...) in the weight side's algebra (its (D, O) pair under
        `Symmetric`)."""
        return _pair(x) if self.symmetric else x

    def _vec(self, x):
        """A neuron vector (m, ...) in the weight side's algebra (its mean under `Symmetric`)."""
        return jnp.mean(x, axis=0) if self.symmetric else x

    def _measured(self, n, s, xi_n):
        """The path-wise weight side's C(t_n, t_l <= t_n) = avg_p xi_p[n] xi_p[l]^T (m, m, L)
        and v(t_n) = avg_p xi_p[n] r0_p^T (m, k): the draws' own covariances (spec 7.5)."""
        P = xi_n.shape[0]
        past = jnp.arange(s["xi"].shape[-1]) <= n
        c_row = jnp.where(past, jnp.einsum("pi,pjl->ijl", xi_n, s["xi"]) / P, 0.0)
        eye = jnp.eye(self.m, dtype=xi_n.dtype)
        c_nn = c_row[..., n] * (1 - eye) + eye        # exact after `_normalized`
        return c_row.at[..., n].set(c_nn), xi_n.T @ s["r0"] / P

    def _start_paths(self, s):
        """One replica's paths at t = 0 for the path-wise weight side: xi_p[0] = (C(0,0) -
        v v^T)^(1/2) z_p[0] + v(0) r0_p (N3, N5; exact: C(0, 0) is PSD), normalized, and the
        measured C(0, 0), v(0) in place of the given ones."""
        q0 = self.c0 - self.v0 @ self.v0.T
        xi0 = _normalized(_whitened(s["z"], s["r0"]) @ psd_sqrt(q0).T
                          + s["r0"] @ self.v0.T)
        s = dict(s, xi=s["xi"].at[..., 0].set(xi0))
        c_row, v0 = self._measured(0, s, xi0)
        alg = self.algebra
        return dict(s, C=alg.history_set(s["C"], 0, self._mat(c_row), column=True),
                    v=s["v"].at[..., 0].set(self._vec(v0)))

    def time_axes(self):
        two = ("C", "R", "Lf")
        zero = ("r0", "y", "dphi")
        out = {key: (2 if key in two else 0 if key in zero else 1)
               for key in ("a", "v", "C", "R", "nu", "rho", "nu_k2", "e_tr", "clipped",
                           "mismatch", "Lf", "xi", "F", "g", "E", "lam", "S", "K", "Y", "z",
                           "r0", "y", "dphi")}
        return dict(out, G=0, z=0) if self.paths else out

    def advancing(self):
        return frozenset({"a", "v", "C", "R"})

    def run_fixed(self, loop):
        """With `replica_batch` = b < groups, the replicas are solved b at a time, one group
        after another (`lax.map`): memory ~ b / groups of the vmapped pass, the same run time
        on a CPU. Each group is this model restricted to replicas [offset, offset + b) of the
        same draws (`draw_groups`, `group_offset`); the per-draw responses Y are dropped
        before the groups' final states are joined (the solution does not read them)."""
        b, G = self.replica_batch, self.groups
        if b is None or b >= G:
            return loop(self)

        def one(offset):
            part = dataclasses.replace(self, groups=b, draw_groups=G, group_offset=offset,
                                       replica_batch=None)
            return dict(loop(part), Y=())

        states = jax.lax.map(one, jnp.arange(0, G, b))
        return jax.tree_util.tree_map(lambda x: x.reshape((G,) + x.shape[2:]), states)

    def default_chunks(self, steps: int) -> int | None:
        """Causal chunks: 4 from 32 steps on, 10 from 80: the per-draw J recursion reads
        O(P L^2 m^2) numbers per row on an L-row window, so chunking cuts the run time, which
        dominates the (larger) compile time once the draws are many (m = 8, 100 steps, 400
        draws on the 2-core CPU: 21.1 s run + 13 s compile with 4 chunks, 17.5 s + 33 s with
        10; the run time per draw falls further, see benchmarks/results/nongaussian.md)."""
        return None if steps < 32 else 4 if steps < 80 else 10

    # -------------------------------------------------------------- one row
    def _extend_paths(self, n, s, factor):
        """Spec 7.3 step 4 (here at the start of row n): xi_p[n] given the realized past and
        the factor's row n (`factor_row`)."""
        row, clipped, mismatch = factor
        xi_n = path_row(n, row, s["z"], s["r0"], s["v"])
        return dict(s, Lf=s["Lf"].at[:, :, n, :].set(row), xi=s["xi"].at[..., n].set(xi_n),
                    clipped=s["clipped"].at[n].set(clipped),
                    mismatch=s["mismatch"].at[n].set(mismatch)), xi_n

    def _sample_side(self, n, s, wts: RowWeights, xi_n):
        """Spec 7.2 (K.4, K.5, K.9, K.13, K.14) and the kernels of row n (K.1, K.6-K.8), given
        the Gaussian paths' row xi_n (P, m). Draw averages are over the draws in `s` (all of a
        replica's in the causal pass, one batch in the fixed-point iteration); every kernel is
        linear in them, so batch means average to the full mean."""
        m, P = self.m, s["F"].shape[0]
        R_n, a_n, w = s["R"][:, :, n, :], s["a"][:, n], wts.w
        d1 = _d1(self.sigma)
        eye = jnp.eye(m, dtype=xi_n.dtype)

        def local(r):
            """sigma, E, g, F, S of every draw at r (K.5, K.9)."""
            sig = self.sigma(r)
            E = s["y"] - sig @ a_n / m
            g = a_n * d1(r)
            S = (-(a_n * _d1(d1)(r) * E[:, None])[:, :, None] * eye
                 + g[:, :, None] * g[:, None, :] / m)
            return sig, E, g, g * E[:, None] / m, S

        # the semi-implicit step (spec 7.6) takes the newest memory slot, l = n - 1 with
        # R[n, n-1] = I, at the new point: r = b + c F(r), c = w_{n-1} R[n, n-1]
        last = jnp.maximum(n - 1, 0)
        c = jnp.where((n >= 1) & self.implicit, w[last], 0.0) * R_n[:, :, last]
        w_old = jnp.where((jnp.arange(w.shape[0]) == last) & (n >= 1) & self.implicit, 0.0, w)
        r_n = xi_n + jnp.einsum("l,ijl,pjl->pi", w_old, R_n, s["F"])         # K.4
        b = r_n
        if self.implicit:
            r_n = b + s["F"][..., last] @ c.T              # the explicit value as a start
            def resid(r):
                return r - b - local(r)[3] @ c.T

            def newton(_, r):          # Newton on r - b - c F(r) = 0, each draw taking the
                _, _, _, F, S = local(r)   # step length (1, 1/2, ..., 1/16) that most reduces
                jac = eye + jnp.einsum("ij,pjk->pik", c, S) / m          # the residual
                step = jnp.linalg.solve(jac, (r - b - F @ c.T)[..., None])[..., 0]
                trials = r[None] - step[None] / 2.0 ** jnp.arange(5.0)[:, None, None]
                norms = jax.vmap(lambda x: jnp.sum(resid(x) ** 2, axis=-1))(trials)
                best = jnp.argmin(jnp.where(jnp.isfinite(norms), norms, jnp.inf), axis=0)
                return jnp.take_along_axis(trials, best[None, :, None], axis=0)[0]

            r_n = jax.lax.fori_loop(0, self.newton, newton, r_n)
        sig, E_n, g_n, F_n, S_n = local(r_n)
        # a draw whose Newton iteration did not converge counts as unstable (lambda = inf)
        stuck = jnp.max(jnp.abs(r_n - b - F_n @ c.T), axis=-1) > 1e-8 * (
            1.0 + jnp.max(jnp.abs(r_n), axis=-1))
        # the responses (K.13, K.14) of the same discrete map: A_n dr[n] = (older slots), with
        # A_n = I + c S_n / m (= I for the explicit step)
        A_n = eye + jnp.einsum("ij,pjk->pik", c, S_n) / m
        R_sum = R_n * (w_old > 0) if self.implicit else R_n
        T = jnp.einsum("ijq,pjkq->pikq", R_sum, s["S"])                    # R[n,q] S[q], q < n
        J_n = -(T + _memory_sum(w, R_sum, s["Y"])) / m                       # K.13
        inner = (s["g"][:, :, None, :] * s["dphi"][:, None, :, None]
                 - jnp.einsum("pjql,pqcl->pjcl", s["S"], s["K"]))
        K_n = (jnp.einsum("l,ijl,pjcl->pic", w_old, R_n, inner)
               + jnp.einsum("ij,pj,pc->pic", c, g_n, s["dphi"])) / m          # K.14
        if self.implicit:
            J_n = jnp.linalg.solve(A_n, J_n.reshape(P, m, -1)).reshape(J_n.shape)
            K_n = jnp.linalg.solve(A_n, K_n)
        Y_n = jnp.einsum("pij,pjkl->pikl", S_n, J_n)                          # S[n] J[n, l]
        F_hist = s["F"].at[..., n].set(F_n)
        lam = jnp.linalg.eigvalsh(S_n)[:, -1] / m     # per-draw stiffness lambda_max(S) / m
        lam = jnp.where(stuck & self.implicit, jnp.inf, lam)
        s = dict(s, F=F_hist, g=s["g"].at[..., n].set(g_n), E=s["E"].at[:, n].set(E_n),
                 S=s["S"].at[..., n].set(S_n), K=s["K"].at[..., n].set(K_n),
                 Y=_write_row(s["Y"], n, Y_n), lam=s["lam"].at[:, n].set(lam))
        abar = self.alpha_bar
        # K.6: M^delta = alpha_bar Mean[S dr[n]/dxi[n]]; dr[n]/dxi[n] = A_n^{-1} (I explicitly)
        resp = (jnp.swapaxes(jnp.linalg.solve(jnp.swapaxes(A_n, 1, 2), S_n), 1, 2)
                if self.implicit else S_n)
        m_delta = abar * jnp.mean(resp, axis=0)
        memory = abar * jnp.mean(Y_n, axis=0)
        jump = -abar * jnp.einsum("pij,pjk->ik", S_n, S_n) / (P * m)  # M(t, t^-): J(t^+,t) = -S/m
        m_star = abar / m * jnp.mean(jnp.einsum("pij,pjc->pic", S_n, K_n)
                                     - g_n[:, :, None] * s["dphi"][:, None, :], axis=0)  # K.7
        c_e = abar * jnp.einsum("pi,pjl->ijl", F_n, F_hist) / P                   # K.8'
        e_g, fit_g, mu_e, mu_fit = self._controls(n, s, xi_n, a_n)
        on = self.control_variates
        d_a = (jnp.zeros_like(a_n) if self.freeze_a
               else abar / m * _cv_mean(E_n[:, None] * sig, fit_g, mu_fit, on))    # K.1
        kernels = Kernels(delta=m_delta, memory=memory, memory_jump=jump, noise=-m * c_e,
                          force=-m_star, d_a=d_a)
        sym = Kernels(*[_symmetrize(x, name in ("delta", "memory", "memory_jump", "noise"))
                        for name, x in kernels._asdict().items()])
        kernels = jax.tree_util.tree_map(lambda x, y: jnp.where(self.exchangeable, y, x),
                                         kernels, sym)
        s = dict(s, nu_k2=s["nu_k2"].at[:, n].set(abar * jnp.mean(F_n * r_n, axis=0)),  # K.2
                 e_tr=s["e_tr"].at[n].set(_cv_mean(0.5 * E_n**2, e_g, mu_e, on)))
        return s, kernels

    def _controls(self, n, s, xi_n, a_n):
        """Control variates with closed-form Gaussian means (spec 7.8) for row n: the Gaussian
        model's error E_G = y - (1/m) a.sigma(x) at the paths standardized under their sampled
        law, x_i = xi_i / sqrt(c_ii) with c the realized covariance of xi[n] (the factor's row
        times its transpose plus v v^T, so the means below are exact even where the clipping
        of spec 7.5 moved c_ii off 1): E[E_G^2 / 2] is the test error [4.6] at (a, v_i /
        sqrt(c_ii), c_ij / sqrt(c_ii c_jj)), and E[E_G sigma(x_i)] = phihat(v_i / sqrt(c_ii))
        - (1/m) sum_j a_j h(c_ij / sqrt(c_ii c_jj)). Returns the per-draw controls
        (E_G^2 / 2, E_G sigma(x)) and their means."""
        m = self.m
        row, v_n = s["Lf"][:, :, n, :], s["v"][..., n]
        c = jnp.einsum("ijl,kjl->ik", row, row) + v_n @ v_n.T
        sd = jnp.sqrt(jnp.maximum(jnp.diagonal(c), jnp.finfo(c.dtype).tiny))
        rho, v_hat = c / (sd[:, None] * sd[None, :]), v_n / sd[:, None]
        sig = self.sigma(xi_n / sd)
        e_g = s["y"] - sig @ a_n / m
        mu_fit = self.target.phihat(v_hat) - self.h(rho) @ a_n / m
        return 0.5 * e_g**2, e_g[:, None] * sig, self.test_error(a_n, v_hat, rho), mu_fit

    def _row1(self, n, s, wts: RowWeights, factor):
        view, xi_n = self._extend_paths(n, self.general_view(s), factor)
        s, _, row = self._rates(n, s, view, wts, xi_n)
        return s, row

    def _rates(self, n, s, view, wts: RowWeights, xi_n):
        """The sample side of row n on the paths' row xi_n (`view`: the replica's m x m view),
        then the weight side's rates. Returns the state, the kernels (m x m) and the row."""
        view, kernels = self._sample_side(n, view, wts, xi_n)
        weights = ("a", "v", "C", "R", "nu")         # kept in the weight side's algebra
        s = {key: (s[key] if key in weights else view[key]) for key in view}
        s, x = weight_terms(self.algebra, n, s, wts, self._pairs(kernels))  # W2-W5 (nu: W5)
        row = weight_row(self.algebra, n, s, wts, x)                        # W1-W4 rates
        return s, kernels, row._replace(stiff=None)

    def _row_paths(self, n, s, wts: RowWeights):
        """Row n with the path-wise weight side (spec 7.5, `paths`): the draws' paths xi_p
        are the weight side's effective process (K.3 with N5-N7) itself, advanced by the
        stepper from the rate

            d xi_p/dt = -nu xi_p - (1/m) [M^delta xi_p(t) + int_0^t M(t, s) xi_p(s) ds]
                        - M* r0_p + zeta_p(t),   zeta_p = sqrt(alpha_bar / count) G_p. F(t)

        (`_couplings`), so their law is a covariance by construction (no factor, nothing
        clipped), and C, v are the draws' own averages (`_measured`). R (W1) and a (K.1) stay
        deterministic; nu is W5 at the measured C, v; the write normalizes each neuron's paths
        (`_normalized`: C_ii(t, t) = 1, as projected GD keeps |w_i| = 1)."""
        view = self.general_view(s)
        xi_n = view["xi"][..., n]
        s, kernels, row = self._rates(n, s, view, wts, xi_n)
        m, P = self.m, xi_n.shape[0]
        nu = self.general_view(s)["nu"][..., n]
        inst = kernels.delta + wts.upper * kernels.memory_jump
        count = jnp.where(self.antithetic, P - 2, P - 1)      # nonzero couplings per row
        zeta = jnp.sqrt(self.alpha_bar / count) * (s["G"] @ s["F"][..., n])
        # The noise is independent of (xi(0), r0) (spec 4.2): its sample correlation with them
        # is pure Monte Carlo noise in C(t, 0) and v(t); project it out (O((m + k)/P) change)
        base = jnp.concatenate([s["r0"], s["xi"][..., 0]], axis=1)
        zeta = zeta - base @ jnp.linalg.solve(base.T @ base, base.T @ zeta)
        drift = (-nu * xi_n - xi_n @ inst.T / m
                 - jnp.einsum("l,ijl,pjl->pi", wts.w, kernels.memory, s["xi"]) / m
                 + s["r0"] @ kernels.force.T + zeta)
        return s, Row(dict(row.front, xi=xi_n), dict(row.rate, xi=drift),
                      dict(row.after, xi=jnp.zeros_like(xi_n)), None)

    def _write_paths(self, n, s, front):
        """Write row n of the path-wise weight side: the advanced paths, normalized, and C, v
        measured on them in place of the stepped ones (see `_row_paths`)."""
        xi_n = _normalized(front["xi"])
        s = dict(s, xi=s["xi"].at[..., n].set(xi_n))
        c_row, v_n = self._measured(n, s, xi_n)
        front = dict(front, C=self._mat(c_row), C_eq=self._mat(c_row[..., n]),
                     v=self._vec(v_n))
        return weight_write(self.algebra, n, s, front)

    def row(self, n, s, wts: RowWeights):
        if wts.jumps:
            raise ValueError("NonGaussianDMFT implements the causal pass with the Euler stepper "
                             "only (spec 7.2, 7.3): solve with dj.Euler() on a TimeGrid")
        if self.paths:
            return jax.vmap(self._row_paths, in_axes=(None, 0, None))(n, s, wts)
        weights = {key: s[key] for key in ("a", "v", "C", "R", "nu", "Lf")}

        def factor(w):               # one replica at a time: see `_pinv`
            w = self.general_view(w)
            return factor_row(n, w["Lf"], w["C"], w["v"], self.rtol)

        return jax.vmap(self._row1, in_axes=(None, 0, None, 0))(
            n, s, wts, jax.lax.map(factor, weights))

    def write(self, n, s, front):
        if self.paths:
            return jax.vmap(lambda st, fr: self._write_paths(n, st, fr))(s, front)
        return jax.vmap(lambda st, fr: weight_write(self.algebra, n, st, fr))(s, front)

    # --------------------------------------------------------------- result
    def test_error(self, a: Array, v: Array, c_eq: Array) -> Array:
        """e_ts [4.6]: (1/2)[tau^2 + ||phi||^2 - (2/m) sum_i a_i phihat(v_i)
        + (1/m^2) sum_ij a_i a_j h(C_ij(t,t))]; a (T, m), v (T, m, k), c_eq (T, m, m)."""
        fit = jnp.mean(a * self.target.phihat(v), axis=-1)
        quad = jnp.mean(a[..., :, None] * a[..., None, :] * self.h(c_eq), axis=(-2, -1))
        return 0.5 * (self.tau**2 + self.target.norm2 - 2.0 * fit + quad)

    def solution(self, s, ts, records=None) -> "NonGaussianSolution":
        del records
        dt = jnp.concatenate([jnp.diff(ts), jnp.zeros((1,), ts.dtype)])
        return self.solution_from(jax.vmap(self.general_view)(s),
                                  jax.vmap(lambda st: aggregates(st, dt, not self.implicit))(s),
                                  ts)

    def solution_from(self, s, agg: dict, ts, **extra) -> "NonGaussianSolution":
        """The solution from the replicas' weight-side buffers and row diagnostics `s` (a, v,
        nu, nu_k2, e_tr, C, R, clipped, mismatch; leading axis groups) and the per-draw
        `aggregates` of each replica (leading axis groups); `extra`: further fields."""
        G, size = self.groups, ts.shape[0]
        idx = jnp.arange(size)
        per = dict(
            a=jnp.moveaxis(s["a"], -1, 1), v=jnp.moveaxis(s["v"], -1, 1),
            nu=jnp.moveaxis(s["nu"], -1, 1), nu_k2=jnp.moveaxis(s["nu_k2"], -1, 1),
            e_tr=s["e_tr"],
            C_t0=jnp.moveaxis(s["C"][..., :, 0], -1, 1),
            C_tt=jnp.moveaxis(s["C"][..., idx, idx], -1, 1),
        )
        per["e_ts"] = jax.vmap(self.test_error)(per["a"], per["v"], per["C_tt"])
        mean = {key: jnp.mean(x, axis=0) for key, x in per.items()}
        se = {key: jnp.std(x, axis=0, ddof=1) / np.sqrt(G) for key, x in per.items()}
        stein = self._stein(s, agg, ts)
        return NonGaussianSolution(
            t=ts, a=mean["a"], v=mean["v"], nu=mean["nu"],
            rho=jnp.full((size,), jnp.nan, ts.dtype), e_tr=mean["e_tr"], e_ts=mean["e_ts"],
            C_t0=mean["C_t0"], C_tt=mean["C_tt"], t_stored=ts,
            C=jnp.mean(s["C"], axis=0), R=jnp.mean(s["R"], axis=0),
            C_A=-jnp.mean(agg["ee"], axis=0), R_A=jnp.full((size, size), jnp.nan, ts.dtype),
            algebra=General(self.m),
            a_se=se["a"], v_se=se["v"], nu_se=se["nu"], e_tr_se=se["e_tr"],
            e_ts_se=se["e_ts"], C_t0_se=se["C_t0"], C_tt_se=se["C_tt"],
            nu_k2=mean["nu_k2"], nu_k2_se=se["nu_k2"],
            clipped=jnp.mean(s["clipped"], axis=0), sampling_mismatch=jnp.max(s["mismatch"], 0),
            stiff_fraction=jnp.mean(agg["stiff"], axis=0),
            stiffness=jnp.max(agg["lam_max"], axis=0),
            unstable=jnp.mean(agg["unstable"], axis=0),
            unstable_draws=jnp.round(jnp.sum(agg["unstable_draws"], axis=0) * self.draws),
            stein_C0=jnp.mean(stein["C0"], 0), stein_C0_se=jnp.std(stein["C0"], 0, ddof=1)
            / np.sqrt(G), stein_v=jnp.mean(stein["v"], 0),
            stein_v_se=jnp.std(stein["v"], 0, ddof=1) / np.sqrt(G),
            replicas=per, groups=G, draws=G * self.draws, **extra)

    def _stein(self, s, agg, ts):
        """Per replica, the weight side's Euler rates of C(t, 0) and v(t) minus the exact
        identities I1 (t' = 0) and I2 of spec 4.4, which need no response kernels:
        d/dt C_ij(t, 0) = -nu_i C_ij(t, 0) + alpha_bar Mean[F_i(t) xi_j(0)] and
        dv_i/dt = -nu_i v_i + alpha_bar Mean[F_i(t) r0]. They agree exactly in expectation
        (Stein's lemma, spec 4.4) when the sampled paths follow C; the differences measure the
        sampling inconsistency of spec 7.5 (and Monte Carlo noise). Shapes (G, L, m, m) and
        (G, L, m, k); NaN on the last row (no step after it)."""
        dt = jnp.diff(ts)
        abar = self.alpha_bar
        nu, C, v = s["nu"], s["C"][..., 0], s["v"]                     # (G,m,L) (G,m,m,L)
        i1 = -nu[:, :, None, :] * C + abar * agg["f_xi0"]
        i2 = -nu[:, :, None, :] * v + abar * agg["f_r0"]

        def rate(x):
            r = jnp.diff(x, axis=-1) / dt
            return jnp.concatenate([r, jnp.full(r.shape[:-1] + (1,), jnp.nan, r.dtype)], -1)

        return dict(C0=jnp.moveaxis(rate(C) - i1, -1, 1), v=jnp.moveaxis(rate(v) - i2, -1, 1))


def shard_draws(tree, axis: int = 0):
    """Split `axis` of every array of `tree` across all devices when there are several (and
    the axis divides evenly): the Monte Carlo draws (or replicas) run in parallel, XLA
    inserting the reductions of their averages. Identity on one device. The mesh uses
    `AxisType.Auto` (the default explicit axes reject unsharded buffers that receive sharded
    rows inside the loop; engineering notes)."""
    n = jax.device_count()
    if n < 2:
        return tree
    mesh = jax.make_mesh((n,), ("draws",), axis_types=(jax.sharding.AxisType.Auto,))

    def one(x):
        if x.ndim <= axis or x.shape[axis] % n:
            return x
        spec = [None] * x.ndim
        spec[axis] = "draws"
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
        return jax.lax.with_sharding_constraint(x, sharding)

    return jax.tree_util.tree_map(one, tree)


def _cv_mean(f, g, mu, on):
    """The draw mean of f (P, ...), with the control g (same shape, exact mean mu) when `on`:
    mean(f) - beta (mean(g) - mu), beta = Cov(f, g) / Var(g) per entry from the same draws
    (the regression estimator; its bias is O(1/P))."""
    mf, mg = jnp.mean(f, axis=0), jnp.mean(g, axis=0)
    cov = jnp.mean((f - mf) * (g - mg), axis=0)
    var = jnp.mean((g - mg) ** 2, axis=0)
    beta = jnp.where(var > 0, cov / jnp.where(var > 0, var, 1.0), 0.0)
    return jnp.where(on, mf - beta * (mg - mu), mf)


#: Rows per block of the per-draw responses (see `y_zeros`).
J_BLOCK = 10


def y_blocks(size: int) -> list[tuple[int, int]]:
    """(rows, sources) of each block of `y_zeros` for `size` stored times."""
    return [(min(J_BLOCK, size - q0), min(size, q0 + J_BLOCK)) for q0 in range(0, size, J_BLOCK)]


def y_zeros(P: int, m: int, size: int, dtype) -> tuple:
    """The per-draw responses as Y[q, j, p, k, l] = (S_p[q] J_p[q, l])_jk (K.13: the only form
    in which J enters the later rows and the memory kernel M = alpha_bar avg Y[n]), in blocks
    of `J_BLOCK` rows q: block b holds rows q0 <= q < q0 + J_BLOCK (q0 = b J_BLOCK) and only
    the sources l < q0 + J_BLOCK, since J[q, l] = 0 for l >= q. The lower triangle is about
    half the square (memory: ~4 N^2 m^2 bytes per draw), and `_memory_sum` reads each block as
    one contiguous matrix."""
    return tuple(jnp.zeros((rows, m, P, m, ext), dtype) for rows, ext in y_blocks(size))


def _memory_sum(w, R, blocks):
    """K.13's sum over q < n: sum_{q, j} w_q R[n, q]_ij Y[q, j, p, k, l] -> (P, m, m, L).

    R[n, q] is the same for every draw, so per block this is one matrix product,
    (i) x (q j) times (q j) x (p k l), that streams the block once. On the 2-core CPU (m = 8,
    L = 100, one row): 0.37 s per 200 draws as the einsum over J (P, m, m, L, L) that XLA
    transposed on every row (the old layout), 0.08 s per 200 draws as one product per draw
    over J (P, L, m, m, L); over the triangular blocks, 0.43 s per 1000 draws with one product
    per draw, 0.28 s with the shared R. Blocks starting at q0 >= L - 1 hold no row
    q < n <= L - 1 and are skipped."""
    m, _, L = R.shape
    P = blocks[0].shape[2]
    A = jnp.transpose(R * w, (0, 2, 1))                           # (i, q, j)
    out = jnp.zeros((m, P, m, L), R.dtype)
    for b, blk in enumerate(blocks):
        q0 = b * J_BLOCK
        if q0 >= L - 1:
            break
        rows, ext = min(blk.shape[0], L - q0), blk.shape[-1]
        part = A[:, q0:q0 + rows].reshape(m, rows * m) @ blk[:rows].reshape(rows * m, -1)
        out = out.at[..., :ext].add(part.reshape(m, P, m, ext))
    return jnp.transpose(out, (1, 0, 2, 3))


def _write_row(blocks, n, Y_n) -> tuple:
    """Row n of Y (Y_n (P, m, m, L)) written into its block (masked writes: n is traced)."""
    Y_n = jnp.transpose(Y_n, (1, 0, 2, 3))                          # (j, p, k, l)
    out = []
    for b, blk in enumerate(blocks):
        q0, rows, ext = b * J_BLOCK, blk.shape[0], blk.shape[-1]
        here = (n >= q0) & (n < q0 + rows)
        loc = jnp.clip(n - q0, 0, rows - 1)
        out.append(blk.at[loc].set(jnp.where(here, Y_n[..., :ext], blk[loc])))
    return tuple(out)


def aggregates(s, dt, explicit: bool = True) -> dict:
    """Draw averages of one replica's (or batch's) per-draw histories that the solution needs
    besides the row diagnostics: Mean[E(t) E(s)] (`ee`, (L, L)), Mean[F_i(t) xi_j(0)]
    (`f_xi0`, (m, m, L)), Mean[F_i(t) r0] (`f_r0`, (m, k, L)), the fraction of draws with
    dt lambda_max(S_p)/m > 1 (`stiff`, (L,)) and the largest lambda_max(S_p)/m (`lam_max`);
    the fraction of draws *unstable* at row n (`unstable`, (L,): dt lambda_max(S_p)/m > 2, the
    explicit per-draw step's stability bound of spec 7.6, on rows n - 1 and n: the step
    amplified the draw's error twice in a row) and of draws unstable at some row
    (`unstable_draws`). All but `lam_max` are means (average batch values with equal weights);
    `lam_max` is a max."""
    P = s["F"].shape[0]
    over = ~(s["lam"] * dt <= 2.0)          # a non-finite lambda counts as unstable
    twice = over & jnp.concatenate([jnp.zeros_like(over[:, :1]), over[:, :-1]], axis=1)
    if not explicit:         # the semi-implicit step has no such bound: only failed Newton solves
        twice = ~jnp.isfinite(s["lam"])
    return dict(unstable=jnp.mean(twice, axis=0),
                unstable_draws=jnp.mean(jnp.any(twice, axis=1)),
                ee=jnp.einsum("pn,pl->nl", s["E"], s["E"]) / P,
                f_xi0=jnp.einsum("pin,pj->ijn", s["F"], s["xi"][..., 0]) / P,
                f_r0=jnp.einsum("pin,pc->icn", s["F"], s["r0"]) / P,
                stiff=jnp.mean(s["lam"] * dt > 1.0, axis=0), lam_max=jnp.max(s["lam"], axis=0))


#: Eigenvalues below TINY x max(1, |lambda|) count as zero in the derivative of `psd_sqrt`.
TINY = 1e-8


@jax.custom_jvp
def psd_sqrt(S):
    """The symmetric square root of the PSD part of a symmetric S (negative eigenvalues
    clipped to 0), with a finite forward-mode derivative (see `_psd_sqrt_jvp`)."""
    lam, U = jnp.linalg.eigh(S)
    return (U * jnp.sqrt(jnp.maximum(lam, 0.0))) @ U.T


@psd_sqrt.defjvp
def _psd_sqrt_jvp(primals, tangents):
    """Daleckii-Krein: d sqrt(S) = U [(U^T dS U) o D] U^T, D the divided differences of
    f = sqrt(max(., 0)) (f' on ties, 0 on the null space). JAX's derivative of `eigh` is NaN
    for repeated eigenvalues (C(0, 0) = I) and sqrt's is infinite at the zero innovations of
    the first Euler row; this one is finite, so forward-mode derivatives of the non-Gaussian
    DMFT at fixed draws exist (`dmft-jax grad --theory nongaussian`)."""
    (S,), (dS,) = primals, tangents
    lam, U = jnp.linalg.eigh(S)
    tiny = TINY * jnp.maximum(1.0, jnp.max(jnp.abs(lam)))
    pos = lam > tiny
    f = jnp.where(pos, jnp.sqrt(jnp.where(pos, lam, 1.0)), 0.0)
    d1 = jnp.where(pos, 0.5 / jnp.where(pos, f, 1.0), 0.0)
    close = jnp.abs(lam[:, None] - lam[None, :]) <= tiny
    dd = jnp.where(close, 0.5 * (d1[:, None] + d1[None, :]),
                   (f[:, None] - f[None, :]) / jnp.where(close, 1.0, lam[:, None] - lam[None, :]))
    return (U * jnp.sqrt(jnp.maximum(lam, 0.0))) @ U.T, U @ ((U.T @ dS @ U) * dd) @ U.T


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _pinv(A, rtol):
    """The pseudo-inverse of A, singular values below rtol * s_max dropped (as
    `jnp.linalg.pinv`). The SVD is LAPACK's divide and conquer (gesdd), which returned NaN
    for a finite path factor at m = 8 (row 83 of 100, 600 draws per replica); the
    QR-iteration SVD (gesvd, 7x slower at size 800) is the fallback when it does. The cond
    is a real branch where the replicas are mapped (`NonGaussianDMFT.row`, the fixed point's
    `lax.map`), not vmapped."""
    def decompose(algorithm):
        return svd(A, full_matrices=False, algorithm=algorithm)

    U, sv, Vt = decompose(SvdAlgorithm.DEFAULT)
    ok = jnp.all(jnp.isfinite(sv)) & jnp.all(jnp.isfinite(U)) & jnp.all(jnp.isfinite(Vt))
    U, sv, Vt = jax.lax.cond(ok, lambda: (U, sv, Vt), lambda: decompose(SvdAlgorithm.QR))
    keep = sv > rtol * sv[0]
    return Vt.T @ (jnp.where(keep, 1.0 / jnp.where(keep, sv, 1.0), 0.0)[:, None] * U.T)


@_pinv.defjvp
def _pinv_jvp(rtol, primals, tangents):
    """The derivative of the pseudo-inverse at fixed rank (the formula of `jnp.linalg.pinv`):
    dP = -P dA P + P P^T dA^T (I - A P) + (I - P A) dA^T P^T P."""
    (A,), (dA,) = primals, tangents
    P = _pinv(A, rtol)
    dP = (-P @ dA @ P + P @ P.T @ dA.T @ (jnp.eye(A.shape[0], dtype=A.dtype) - A @ P)
          + (jnp.eye(A.shape[1], dtype=A.dtype) - P @ A) @ dA.T @ P.T @ P)
    return P, dP


def factor_row(n, Lf, C, v, rtol):
    """Row n of the causal (block lower-triangular) factor of the Gaussian paths xi_perp ~
    GP(0, C - v v^T) (N3), given its rows < n: xi_perp_i[n] = sum_{l<=n, j} Lf[i, j, n, l]
    z_j[l] (spec 7.3 step 4). The new block row is the least-squares solution X of
    X Lf_past^T = B (B = C[n, <n] - v[n] v[<n]^T; pseudo-inverse with relative cutoff `rtol`)
    and Lf[n, n] the symmetric square root of the Schur complement C[n, n] - v v^T - X X^T
    with its negative eigenvalues clipped to zero (the Euler covariance is not PSD, spec 7.5).
    Row n depends only on C, v up to row n, so the factor of a whole trajectory is the same
    whether built row by row (causal pass) or after the fact (fixed-point iteration).
    Returns (row (m, m, L), clipped mass (sum of the clipped eigenvalues' magnitudes),
    max |X Lf_past^T - B|). Cost O((L m)^3) per row (the pseudo-inverse)."""
    m, size = C.shape[0], C.shape[-1]
    past = jnp.arange(size) < n
    v_n = v[..., n]
    q_n = C[:, :, n, :] - jnp.einsum("ic,jcl->ijl", v_n, v)        # C - v v^T, row n
    mask2 = past[:, None, None, None] & past[None, None, :, None]
    A = jnp.where(mask2, jnp.transpose(Lf, (2, 0, 3, 1)), 0.0).reshape(size * m, size * m)
    B = jnp.where(past[None, :, None], jnp.transpose(q_n, (0, 2, 1)), 0.0).reshape(m, size * m)
    X = (_pinv(A, rtol) @ B.T).T                                      # (m, L m)
    mismatch = jnp.max(jnp.abs(X @ A.T - B))
    schur = q_n[..., n] - X @ X.T
    sym = 0.5 * (schur + schur.T)
    clipped = jnp.sum(jnp.maximum(-jnp.linalg.eigvalsh(sym), 0.0))
    l_nn = psd_sqrt(sym)
    row = jnp.transpose(X.reshape(m, size, m), (0, 2, 1))            # (i, j, l)
    return jnp.where(past, row, 0.0).at[..., n].set(l_nn), clipped, mismatch


def _unit_second_moment(x):
    """x (P, k) times the inverse square root of its mean square avg x x^T (then I_k);
    a linear map of the columns, so antithetic pairs stay opposite."""
    lam, U = jnp.linalg.eigh(x.T @ x / x.shape[0])
    return x @ (U / jnp.sqrt(lam)) @ U.T


def _whitened(z, r0):
    """Normals z (P, m) made orthogonal to the draws' r0 (P, k) and to each other with mean
    square 1 (avg z z^T = I, avg z r0^T = 0 exactly): the initial paths of the path-wise
    weight side then have C(0, 0) = I (and v(0) = 0) without Monte Carlo noise, as in the
    factor construction. Needs P >= m + k. Antithetic pairs stay opposite."""
    P = z.shape[0]
    q, _ = jnp.linalg.qr(jnp.concatenate([r0, z], axis=1))
    ortho = q[:, r0.shape[1]:]
    signs = jnp.sign(jnp.sum(ortho * z, axis=0))      # keep each column close to its z
    return jnp.sqrt(P) * ortho * jnp.where(signs == 0, 1.0, signs)


def _normalized(xi):
    """Paths (P, m) with each neuron's mean square over the draws set to 1 (C_ii(t, t) = 1)."""
    return xi / jnp.sqrt(jnp.mean(xi**2, axis=0))


def path_row(n, row, z, r0, v):
    """xi_p[n] = v[n] r0_p + sum_{l<=n} Lf[n, l] z_p[l] (N3): (P, m)."""
    return jnp.einsum("ijl,pjl->pi", row, z) + r0 @ v[..., n].T


class NonGaussianSolution(Solution):
    """A `Solution` of the non-Gaussian DMFT: the one-time and two-time fields are replica
    means (see `NonGaussianDMFT`), plus Monte Carlo standard errors and diagnostics.

    Differences from the Gaussian `Solution`: `rho` and `R_A` are NaN (the non-Gaussian
    theory has no R_A, spec 6.1); `C_A` is -Mean[E(t) E(s)] (the analogue of C_A [4.6]), so
    that e_tr = -C_A(t, t)/2 as in [C.24].

    **Extra fields:** `<name>_se` (same shapes): the standard error of a, v, nu, e_tr, e_ts,
    C_t0, C_tt (replica standard deviation / sqrt(groups)); `nu_k2`, `nu_k2_se`: K.2 (compare
    with `nu`, which is W5); `clipped` (T,): the negative eigenvalue mass of the conditional
    covariance clipped when the Gaussian paths are extended (spec 7.5; replica mean);
    `sampling_mismatch` (T,): max |sampled - wanted| cross-covariance of xi[n] with its past
    (replica max); `stiffness` (T,): max over draws of lambda_max(S_p)/m; `stiff_fraction`
    (T,): the fraction of draws with dt lambda_max(S_p)/m > 1 (spec 7.6); `unstable` (T,): the
    fraction of draws beyond the explicit step's stability bound, dt lambda_max(S_p)/m > 2, on
    this row and the one before (a solve with any is `RESULTS.diverged`); `unstable_draws`:
    how many draws were unstable at some row; `stein_C0`
    (T, m, m), `stein_v` (T, m, k) and their `_se`: the weight side's rates of C(t, 0) and v
    minus the response-free identities I1, I2 (spec 4.4), zero in expectation for exactly
    sampled paths (NaN on the last row; see `NonGaussianDMFT._stein`); `replicas`: the
    per-replica one-time series (dict, leading axis groups); `groups`, `draws` (total).
    """

    a_se: Array = None
    v_se: Array = None
    nu_se: Array = None
    e_tr_se: Array = None
    e_ts_se: Array = None
    C_t0_se: Array = None
    C_tt_se: Array = None
    nu_k2: Array = None
    nu_k2_se: Array = None
    clipped: Array = None
    sampling_mismatch: Array = None
    stiffness: Array = None
    stiff_fraction: Array = None
    stein_C0: Array = None
    stein_C0_se: Array = None
    stein_v: Array = None
    stein_v_se: Array = None
    replicas: dict = None
    unstable: Array = None
    unstable_draws: Array = None
    iterations: Array = None
    residuals: Array = None

    @property
    def bad_rows(self) -> Array:
        """The Gaussian solution's divergence rule (`dmft_jax._results`), and the rows at which
        some draw is unstable (`unstable` > 0): a solve with unstable draws fails
        (RESULTS.diverged) rather than return an answer biased by them."""
        rows = super().bad_rows
        return rows if self.unstable is None else rows | (self.unstable > 0)
    groups: int = eqx.field(static=True, default=1)
    draws: int = eqx.field(static=True, default=0)


def _pair(x):
    """The means (D, O) of the diagonal and off-diagonal entries of a matrix (m, m, ...): its
    projection on D I + O (J - I), in the `Symmetric` representation (2, ...)."""
    m = x.shape[0]
    eye = jnp.eye(m, dtype=x.dtype).reshape((m, m) + (1,) * (x.ndim - 2))
    return jnp.stack([jnp.sum(x * eye, axis=(0, 1)) / m,
                      jnp.sum(x * (1 - eye), axis=(0, 1)) / max(m * (m - 1), 1)])


def _dense(x, m: int):
    """The m x m matrices D I + O (J - I) of pairs x (2, ...): shape (m, m, ...)."""
    eye = jnp.eye(m, dtype=x.dtype).reshape((m, m) + (1,) * (x.ndim - 1))
    return x[1] + (x[0] - x[1]) * eye


def _symmetrize(x, matrix: bool):
    """Average over neuron permutations: a matrix (m, m, ...) -> D I + O (J - I) with D, O
    the means of its diagonal and off-diagonal entries; a neuron vector (m, ...) -> its mean."""
    if not matrix:
        return jnp.broadcast_to(jnp.mean(x, axis=0), x.shape)
    return _dense(_pair(x), x.shape[0])


# ------------------------------------------------------------------------------ construction
class _SumOver(eqx.Module):
    """phi(r0) = sum_c sigma(r0_c): the target "phi = sigma" in each of k directions."""

    base: Callable

    def __call__(self, r0):
        return jnp.sum(self.base(r0), axis=-1)


def _key(key):
    if key is None:
        raise ValueError("nongaussian_dmft needs a jax.random key (common random numbers)")
    if isinstance(key, (int, np.integer)):
        return jax.random.PRNGKey(int(key))
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single key, got shape {key.shape}")
        return key
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise ValueError("key must be jax.random.key(seed), jax.random.PRNGKey(seed) or an "
                         f"integer seed, got dtype {key.dtype} and shape {key.shape}")
    return key


def _check_fn(name, fn, shape_in, shape_out):
    try:
        out = fn(jnp.linspace(-1.0, 1.0, int(np.prod(shape_in))).reshape(shape_in))
    except Exception as err:  # noqa: BLE001  (any failure is bad input)
        raise ValueError(f"{name} could not be evaluated on an array of shape {shape_in}: "
                         f"{err}") from err
    if jnp.shape(out) != shape_out:
        raise ValueError(f"{name} must map an array of shape {shape_in} to shape {shape_out} "
                         f"(pointwise), got {jnp.shape(out)}")
    val = concrete(out)
    if val is not None and not np.all(np.isfinite(val)):
        raise ValueError(f"{name} is not finite on [-1, 1]")


def nongaussian_dmft(sigma, phi=None, *, tau, a, C=None, v=None, alpha=None, alpha_bar=None,
                     draws: int, key, groups: int = 8, h=None, target: Target | None = None,
                     k: int | None = None, freeze_a: bool = False, antithetic: bool = False,
                     exchangeable: bool = False, control_variates: bool = False,
                     symmetric: bool = False, implicit: bool = False, newton: int = 20,
                     rtol: float = 1e-7, replica_batch: int | None = None,
                     paths: bool = False) -> NonGaussianDMFT:
    """The non-Gaussian DMFT (spec nongaussian.md) from a deterministic initialization, validated.

    **Arguments:**

    - `sigma`: the activation, pointwise and twice differentiable (sigma', sigma'' by forward
      mode). Either any jnp-callable, or an activation spec of `dj.activation`: a sequence of
      Taylor coefficients of h (sigma = sum_k sqrt(c_k) He_k / sqrt(k!), spec section 1), a
      preset name or "identity"; then `h` defaults to `dj.covariance(sigma)`.
    - `phi`: the target. None: pure noise (y = eps). "same": phi(r0) = sum_c sigma(r0_c)
      (then `target` defaults to `dj.target("same", sigma, k)`). Or a callable mapping r0
      (..., k) to (...); then `target` (a `dj.Target` with the matching phihat and
      ||phi||^2, used for e_ts only) is required.
    - `h`: the activation's covariance (kernel or `dj.covariance` spec), for e_ts.
    - `tau` >= 0; `a` (m,), `C` (m, m) (default I), `v` (m, k) (default 0): the initial a,
      C(0, 0), v(0) as in `general_dmft` (validated the same way); exactly one of `alpha`
      = n/(m d) and `alpha_bar` = n/d.
    - `draws`: total number of Monte Carlo draws, split into `groups` replicas (>= 2) for the
      standard errors; `draws` must be a multiple of `groups` (of 2 `groups` if
      `antithetic`). `key`: `jax.random.key`/`PRNGKey` or an integer seed.
    - `implicit`: the semi-implicit per-draw step of spec 7.6 (the newest memory slot taken
      at the new point, `newton` Newton steps per row; the responses J, K and M^delta follow
      the same discrete map), not bound by the draws' stiffness; first order like the
      explicit step, from which it differs at O(dt). A draw whose Newton iteration has not
      converged (relative residual > 1e-8) counts as unstable and fails the solve.
    - `symmetric`: run the weight side in the two-number algebra `Symmetric(m)` (needs a
      symmetric initialization; the kernels are averaged over neuron permutations as with
      `exchangeable`, and the result equals `exchangeable=True` up to round-off).
    - `replica_batch`: solve the causal pass `replica_batch` replicas at a time, one group
      after another (a divisor of `groups`; None: all together). The results are the same
      (same draws); the memory of the per-draw responses falls to replica_batch / groups of
      it (m = 8, 100 steps: ~4 GB per 1000 draws solved together).
    - `paths`: the path-wise weight side of spec 7.5: the draws' Gaussian paths are the weight
      side's effective process itself, driven by a noise built from the other draws' F, so
      their covariance is positive semidefinite by construction (nothing is clipped, no
      factor is computed) and C, v are measured on them; see `NonGaussianDMFT._row_paths`.
      Not with `control_variates` (their closed-form means need the paths' exact Gaussian
      law) nor with the fixed-point iteration.
    - `freeze_a`: keep a(t) = a(0) (drop K.1). `antithetic`, `exchangeable`,
      `control_variates`, `rtol`: see
      `NonGaussianDMFT`; `exchangeable` needs a symmetric initialization (all a_i(0) equal,
      C(0, 0) = D I + O (J - I), all v_i(0) equal).
    """
    spec = None
    if not callable(sigma) or isinstance(sigma, str):
        spec = sigma
        sigma = activation(sigma)
    elif not isinstance(sigma, eqx.Module):
        sigma = Activation(sigma, getattr(sigma, "__name__", "sigma"))
    if h is None:
        if spec is None:
            raise ValueError("give h (the covariance of sigma, for the test error) when sigma "
                             "is a callable")
        h = covariance(spec)
    h = check_kernel(covariance(h) if not isinstance(h, AbstractKernel) else h)
    _check_fn("sigma", sigma, (7,), (7,))
    if isinstance(phi, str):
        if phi.lower() != "same":
            raise ValueError(f"phi must be None, 'same' or a callable, got {phi!r}")
        kk = 1 if k is None else int(k)
        phi = _SumOver(sigma)
        if target is None:
            if spec is None:
                raise ValueError("phi='same' with a callable sigma needs an explicit target")
            from ._covariance import target as make_target
            target = make_target("same", spec, kk)
    elif phi is not None:
        if not callable(phi):
            raise ValueError(f"phi must be None, 'same' or a callable, got {type(phi).__name__}")
        if target is None:
            raise ValueError("a callable phi needs `target` (a dj.Target with its phihat and "
                             "||phi||^2, for the test error)")
        phi = phi if isinstance(phi, eqx.Module) else Activation(phi, "phi")
    elif target is not None and concrete(target.norm2) not in (None, 0.0):
        raise ValueError("a target with ||phi||^2 > 0 needs the pointwise phi")
    target = target_or_noise(target)
    if k is not None and int(k) != target.k:
        raise ValueError(f"k = {k} does not match the target's k = {target.k}")
    if phi is not None:
        _check_fn("phi", phi, (5, target.k), (5,))
    a, C0, v0 = check_initialization(a, np.eye(len(np.atleast_1d(a))) if C is None else C, v,
                                     target.k)
    if phi is None and np.any(v0 != 0):
        raise ValueError("v(0) must be 0 for pure noise (there is no teacher direction)")
    if (alpha is None) == (alpha_bar is None):
        raise ValueError("give exactly one of alpha (= n/(m d)) and alpha_bar (= n/d)")
    m = a.shape[0]
    alpha_bar = (check_scalar("alpha_bar", alpha_bar, 0.0, strict=True) if alpha is None
                 else check_scalar("alpha", alpha, 0.0, strict=True) * m)
    for name, val in (("draws", draws), ("groups", groups)):
        if int(val) != val:
            raise ValueError(f"{name} must be an integer, got {val!r}")
    draws, groups = int(draws), int(groups)
    if groups < 2:
        raise ValueError(f"groups must be >= 2 (the standard errors are replica spreads), got "
                         f"{groups}")
    unit = 2 * groups if antithetic else groups
    if draws < unit or draws % unit:
        raise ValueError(f"draws must be a positive multiple of {unit} (groups"
                         f"{' x 2 for antithetic pairs' if antithetic else ''}), got {draws}")
    symmetric_init = (np.allclose(a, a[0]) and np.allclose(v0, v0[:1])
                      and np.allclose(np.diag(C0), C0[0, 0])
                      and np.allclose(C0[~np.eye(m, dtype=bool)], C0[0, -1]))
    for name, flag in (("exchangeable", exchangeable), ("symmetric", symmetric)):
        if flag and not symmetric_init:
            raise ValueError(f"{name}=True needs a symmetric initialization: all a_i(0) equal, "
                             "all v_i(0) equal and equal off-diagonal C_ij(0, 0)")
    if int(newton) != newton or newton < 1:
        raise ValueError(f"newton must be a positive integer, got {newton}")
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1), got {rtol}")
    if replica_batch is not None and (int(replica_batch) != replica_batch or replica_batch < 1
                                      or groups % int(replica_batch)):
        raise ValueError(f"replica_batch must be a positive divisor of groups = {groups}, got "
                         f"{replica_batch!r}")
    if paths and draws // groups <= 2 * (len(a) + target.k):
        raise ValueError(f"paths=True needs more than 2 (m + k) = {2 * (len(a) + target.k)} "
                         f"draws per replica (its paths are whitened against each other), got "
                         f"{draws // groups}: raise draws or lower groups")
    if paths and control_variates:
        raise ValueError("control_variates need the exact Gaussian law of the paths (their "
                         "closed-form means); the path-wise weight side (paths=True) samples "
                         "that law only as the draws grow: use one or the other")
    dtype = jnp.result_type(float)
    return NonGaussianDMFT(
        sigma=sigma, phi=phi, h=h, target=target,
        tau=check_scalar("tau", tau, 0.0, strict=False), alpha_bar=alpha_bar,
        a0=jnp.asarray(a, dtype), c0=jnp.asarray(C0, dtype), v0=jnp.asarray(v0, dtype),
        key=_key(key), draws=draws // groups, groups=groups, freeze_a=bool(freeze_a),
        antithetic=jnp.asarray(bool(antithetic)), exchangeable=jnp.asarray(bool(exchangeable)),
        control_variates=jnp.asarray(bool(control_variates)), symmetric=bool(symmetric),
        implicit=bool(implicit), newton=int(newton), rtol=float(rtol),
        replica_batch=None if replica_batch is None else int(replica_batch), paths=bool(paths))


def linear_activation(s1: float):
    """sigma(z) = s1 z (h(q) = s1^2 q): the exact-coincidence case of spec 6.2. Returns
    (sigma, h) for `nongaussian_dmft(sigma, h=h, ...)`."""
    from ._covariance import HermiteActivation, Polynomial
    s1 = float(s1)
    return HermiteActivation([0.0, s1]), Polynomial([0.0, s1**2])
