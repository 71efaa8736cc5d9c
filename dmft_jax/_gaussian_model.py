"""The Gaussian model of spec section 3: a finite-d simulator whose n, d -> infinity limit is the DMFT.

Each residual F_i(theta) = y_i - f(x_i; theta) of the two-layer network is replaced by a Gaussian
process with the same mean and covariance, built from iid standard Gaussian tensors
J_i^(p) in (R^d)^{(x)p}, one independent set per sample i = 1..n:

    f^g_i(a, W) = (1/m) sum_j a_j sum_p s_p <J_i^(p), w_j^{(x)p}>                       [D.17]
    phi^g_i     = sum_l sum_p f_{l,p} <J_i^(p), u_l^{(x)p}>     (u_l = e_l, l = 1..k)
    y^g_i       = phi^g_i + xi_i,   xi_i ~ N(0, tau^2 + ||phi||^2 - sum_{l,p} f_{l,p}^2)

with h(q) = sum_p s_p^2 q^p and phihat_l(q) = sum_p s_p f_{l,p} q^p (finite degree: `Polynomial`
kernels). Then E f^g(theta) f^g(theta') = (1/m^2) sum a_j a'_l h(<w_j, w'_l>) because
<J, w^{(x)p}> <J, w'^{(x)p}> has mean <w, w'>^p, and E f^g phi^g = (1/m) sum_j a_j phihat(U^T w_j).
The part of phi that sigma cannot see (Hermite degrees with s_p = 0, or a ||phi||^2 larger than
sum f^2, e.g. a named target) is a Gaussian independent of every J the network sees: it is
exactly extra label noise, drawn into xi.

Training is projected gradient descent on R_n^g = (1/2n) ||f^g - y^g||^2 (or SGD on a batch of b
samples, loss (1/2b) sum over the batch), each w_j renormalized onto the unit sphere after every
step. A step of size lr advances gradient-flow time by dt = lr d / n (spec section 1).

Memory and the choice of storage (per realization; 8 bytes per entry in float64, 4 in float32):

* degree p <= 2 is stored ("materialized"): J^(1) is n x d, J^(2) is kept as its symmetric part
  S_i = (J_i + J_i^T)/2 (all that <J, w (x) w> sees), n x d x d. Settings of spec section 9 at
  d = 200, n = 300: 300 * 200^2 = 1.2e7 entries, 96 MB in float64, 48 MB in float32, so a GPU
  holds hundreds of realizations at once (`default_batch_size`: a 1 GB budget per vmapped batch).
* degree p >= 3 would need n d^p entries (d = 200, p = 3, n = 300: 2.4e9, 19 GB): by default it
  is *streamed*: J_i^(p) is regenerated from a counter-based key fold_in(key_p, i) each time it
  is needed (once per step), contracted with the m current weights to give <J_i, w_j^{(x)p}> and
  its gradient p Sym(J_i)[w_j, ..., w_j, .], and discarded; the samples are visited by `lax.map`
  in blocks of about 2^22 entries. Memory O(block + n m d); time per step O(n m p d^p) plus
  regenerating n d^p normals, which dominates (measured on the 2-core CPU: 1.2e7 float32
  normals take ~0.4 s). The process is *exact*, never a random-feature approximation: a stream
  reproduces, to rounding, the tensor that `max_stored_degree=p` would store (same keys), which
  the tests check. (Revealing only the contractions J[w_s, ..., w_s, .] along the trajectory and
  sampling each new one conditionally on the past would also be exact, but its state grows like
  n d (m x steps) and beats storage only when m x steps < d^(p-1).)

Time cost of one GD step (stored degrees): O(n m d^2) for p = 2, O(n m d) for p = 1.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array

from ._algebra import Symmetric
from ._covariance import AbstractKernel, Polynomial, Target
from ._results import diverged_rows

#: Largest number of tensor entries regenerated at once when streaming a degree >= 3.
_STREAM_BLOCK_ENTRIES = 1 << 22

#: Default memory budget (bytes) of one vmapped batch of realizations in `simulate`.
DEFAULT_BATCH_BYTES = 1 << 30


# ------------------------------------------------------------------------------ the model
class GaussianModel(eqx.Module):
    """The Gaussian model of spec section 3 with its initialization (one configuration).

    **Fields:**

    - `h`, `target`: the covariances (h Polynomial, phihat per direction Polynomial) for e_ts;
    - `s` (P+1,): normalized Hermite coefficients of sigma, s_p = sqrt(c_p);
    - `f` (k, P+1): normalized Hermite coefficients of phi per index direction, f_p = c'_p / s_p;
    - `noise2`: variance of xi_i, tau^2 + (||phi||^2 - sum f^2);
    - `tau`; `a0` (m,) the a_j(0); `c0` (m, m), `v0` (m, k): the Gram matrix of the w_j(0) and
      their overlaps U^T w_j(0) (ignored when `symmetric`);
    - static: `d`, `n`, `m`, `k`, `degrees` (the p with s_p != 0), `symmetric` (w_j(0) iid uniform
      on the sphere), `freeze_a`.

    Build with `gaussian_model` or `gaussian_model_from_dmft`.
    """

    h: AbstractKernel
    target: Target
    s: Array
    f: Array
    noise2: Array
    tau: Array
    a0: Array
    c0: Array
    v0: Array
    d: int = eqx.field(static=True)
    n: int = eqx.field(static=True)
    degrees: tuple[int, ...] = eqx.field(static=True)
    symmetric: bool = eqx.field(static=True)
    freeze_a: bool = eqx.field(static=True, default=False)

    @property
    def m(self) -> int:
        return self.a0.shape[0]

    @property
    def k(self) -> int:
        return self.target.k

    @property
    def alpha_bar(self) -> float:
        """n / d (the DMFT's alpha_bar for this finite system)."""
        return self.n / self.d

    def dt(self, lr) -> Array:
        """Gradient-flow time advanced by one step of size lr: lr d / n (spec section 1)."""
        return lr * self.d / self.n


def hermite_coefficients_of(h: AbstractKernel, target: Target):
    """(s, f, residual ||phi||^2) from a Polynomial h and Polynomial phihat_l (spec section 2).

    s_p = sqrt(c_p); f_{l,p} = c'_{l,p} / s_p; ValueError if some c'_{l,p} != 0 where s_p = 0 (no
    phi realizes it) or if the target's ||phi||^2 is below the variance sum f^2 it implies.
    """
    if not isinstance(h, Polynomial) or not all(isinstance(kr, Polynomial) for kr in target.kernels):
        raise ValueError("the Gaussian model needs covariances of finite degree: h and every "
                         "phihat must be Polynomial kernels (Taylor coefficients)")
    c = np.asarray(h.coeffs, dtype=np.float64)
    deg = max([c.shape[0]] + [kr.coeffs.shape[0] for kr in target.kernels]) - 1
    c = np.pad(c, (0, deg + 1 - c.shape[0]))
    if np.any(c < 0):
        raise ValueError(f"h has a negative Taylor coefficient: {c.tolist()}")
    s = np.sqrt(c)
    f = np.zeros((target.k, deg + 1))
    for l, kr in enumerate(target.kernels):
        cp = np.asarray(kr.coeffs, dtype=np.float64)
        cp = np.pad(cp, (0, deg + 1 - cp.shape[0]))
        bad = (cp != 0) & (s == 0)
        if np.any(bad):
            p = int(np.argmax(bad))
            raise ValueError(f"phihat has Taylor coefficient c_{p} = {cp[p]} != 0 where h's is 0: "
                             "no target phi realizes it")
        f[l] = np.where(s > 0, cp / np.where(s > 0, s, 1.0), 0.0)
    # Var phi^g: constants of the k directions add up coherently (J^(0) is one scalar).
    var = float(np.sum(f[:, 1:] ** 2) + np.sum(f[:, 0]) ** 2)
    rest = float(target.norm2) - var
    if rest < -1e-9 * max(1.0, var):
        raise ValueError(f"||phi||^2 = {float(target.norm2):.6g} is below the variance "
                         f"{var:.6g} that phihat implies")
    return s, f, max(rest, 0.0)


def sample_size(alpha_bar, d: int, round_n: bool = False) -> int:
    """n = alpha_bar d as an integer >= 1 (ValueError if not integral, unless `round_n`)."""
    exact = float(alpha_bar) * int(d)
    n = int(round(exact))
    if n < 1:
        raise ValueError(f"n = alpha_bar d = {exact:g} rounds to {n}: need n >= 1 (raise d)")
    if not round_n and abs(n - exact) > 1e-9 * max(1.0, exact):
        raise ValueError(f"n = alpha_bar d = {exact:g} is not an integer (pass n, or round_n=True)")
    return n


def gaussian_model_from_dmft(model, d: int, n: int | None = None,
                             round_n: bool = False) -> GaussianModel:
    """The Gaussian model whose large-d limit is the DMFT `model` (a `DMFT`, section 4 or 5).

    Takes h, the target, tau, freeze_a and the initialization from `model` (symmetric algebra:
    w_j(0) iid uniform, a_j(0) = a0; general: a(0), C(0, 0), v(0) as given); n defaults to
    alpha_bar d (see `sample_size`). Needs d >= m + k for a general initialization.
    """
    d = int(d)
    if d < 1:
        raise ValueError(f"d must be an integer >= 1, got {d}")
    n = sample_size(model.alpha_bar, d, round_n) if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    s, f, rest = hermite_coefficients_of(model.h, model.target)
    m, k = model.m, model.k
    symmetric = isinstance(model.algebra, Symmetric)
    if not symmetric and d < m + k:
        raise ValueError(f"d = {d} is too small for a general initialization: need d >= m + k = "
                         f"{m + k}")
    if d < k:
        raise ValueError(f"d = {d} must be >= the number of index directions k = {k}")
    dtype = jnp.result_type(float)
    a0 = jnp.broadcast_to(jnp.asarray(model.a0, dtype), (m,))
    c0 = jnp.eye(m, dtype=dtype) if symmetric else jnp.asarray(model.c0, dtype)
    v0 = jnp.zeros((m, k), dtype) if symmetric else jnp.asarray(model.v0, dtype)
    degrees = tuple(int(p) for p in np.flatnonzero(s > 0))
    return GaussianModel(
        h=model.h, target=model.target, s=jnp.asarray(s, dtype), f=jnp.asarray(f, dtype),
        noise2=jnp.asarray(model.tau, dtype) ** 2 + rest, tau=jnp.asarray(model.tau, dtype),
        a0=a0, c0=c0, v0=v0, d=d, n=n, degrees=degrees, symmetric=symmetric,
        freeze_a=model.freeze_a)


def gaussian_model(h, target: Target | None = None, *, tau, d: int, n: int | None = None,
                   alpha=None, m: int | None = None, a0=None, gamma0=None, a=None, C=None, v=None,
                   freeze_a: bool = False, round_n: bool = False) -> GaussianModel:
    """The Gaussian model from physics parameters, validated like `symmetric_dmft`/`general_dmft`.

    Symmetric initialization: give `m` and one of `a0`, `gamma0`. General: give `a` (m,), `C`
    (m, m) (Gram matrix of the w_j(0)) and optionally `v` (m, k). The sample size is `n`, or
    alpha m d with `alpha` = n / (m d).
    """
    from ._dmft import general_dmft, symmetric_dmft
    if (n is None) == (alpha is None):
        raise ValueError("give exactly one of n and alpha (= n/(m d))")
    if a is not None:
        ratio = {"alpha_bar": n / d} if n is not None else {"alpha": alpha}
        model = general_dmft(h, target, tau=tau, a=a, C=C, v=v, freeze_a=freeze_a, **ratio)
    elif m is None:
        raise ValueError("give m (symmetric initialization) or a, C (general)")
    else:
        model = symmetric_dmft(h, target, tau=tau, alpha=alpha if n is None else n / (m * d),
                               m=m, a0=a0, gamma0=gamma0, freeze_a=freeze_a)
    return gaussian_model_from_dmft(model, d, n=n, round_n=round_n)


# ------------------------------------------------------------------------------ one realization
class Realization(eqx.Module):
    """One draw of the random data of the Gaussian model: tensors, labels, initial weights.

    `tensors[i]` belongs to degree `model.degrees[i]`: (n,) for p = 0, (n, d) for p = 1, the
    symmetric parts (n, d, d) for p = 2, (n, d, ..., d) for a stored p >= 3, or None for a
    streamed degree (regenerated from `key` on demand). `y` (n,) the labels; `a0` (m,), `W0` (m, d)
    the initial weights (rows on the unit sphere).
    """

    tensors: tuple
    key: Array
    y: Array
    a0: Array
    W0: Array


def _degree_key(key, p: int):
    return jr.fold_in(key, p)


def _sample_tensor(key, p: int, i, d: int, dtype) -> Array:
    """J_i^(p): iid N(0, 1) entries from the counter-based key fold_in(key_p, i)."""
    return jr.normal(jr.fold_in(_degree_key(key, p), i), (d,) * p, dtype)


def _sample_tensors(key, p: int, rows: Array, d: int, dtype) -> Array:
    out = jax.vmap(lambda i: _sample_tensor(key, p, i, d, dtype))(rows)
    return 0.5 * (out + jnp.swapaxes(out, 1, 2)) if p == 2 else out


def _contract(t: Array, w: Array) -> Array:
    """<T, w^{(x)p}> for a tensor T with p axes."""
    for _ in range(t.ndim):
        t = t @ w
    return t


def _general_features(t: Array, W: Array):
    """<T, w_j^{(x)p}> (m,) and its gradient in w_j (m, d) for one sample's tensor T."""
    return jax.vmap(jax.value_and_grad(lambda w: _contract(t, w)))(W)


def _stored_features(p: int, t: Array, W: Array, rows):
    """(P (b, m), dP (b, m, d)) for the samples `rows` of a stored degree-p tensor."""
    if rows is not None:
        t = t[rows]
    b, (m, d) = t.shape[0], W.shape
    if p == 0:
        return jnp.broadcast_to(t[:, None], (b, m)), jnp.zeros((b, m, d), W.dtype)
    if p == 1:
        return t @ W.T, jnp.broadcast_to(t[:, None, :], (b, m, d))
    if p == 2:
        # S_i w_j for all i, j as one (b d, d) x (d, m) matrix product: on CPU a plain GEMM is
        # ~10x faster than the batched einsum "iab,jb->ija".
        sw = jnp.swapaxes((t.reshape(b * d, d) @ W.T).reshape(b, d, m), 1, 2)
        return jnp.einsum("ija,ja->ij", sw, W), 2.0 * sw
    return jax.vmap(lambda ti: _general_features(ti, W))(t)


def _streamed_features(p: int, key, W: Array, rows: Array):
    """As `_stored_features` for a degree regenerated from its key, sample by sample."""
    d = W.shape[1]
    block = max(1, _STREAM_BLOCK_ENTRIES // d**p)

    def one(i):
        return _general_features(_sample_tensor(key, p, i, d, W.dtype), W)

    return jax.lax.map(one, rows, batch_size=min(block, rows.shape[0]))


def features(model: GaussianModel, real: Realization, W: Array, rows: Array | None = None):
    """phi_ij = sum_p s_p <J_i^(p), w_j^{(x)p}> (b, m) and d phi_ij / d w_j (b, m, d).

    `rows` (b,) selects samples (default: all n). f^g_i = (1/m) sum_j a_j phi_ij.
    """
    feat, dfeat = 0.0, 0.0
    all_rows = jnp.arange(model.n) if rows is None else rows
    for p, t in zip(model.degrees, real.tensors):
        if t is None:
            val, grad = _streamed_features(p, real.key, W, all_rows)
        else:
            val, grad = _stored_features(p, t, W, rows)
        feat = feat + model.s[p].astype(W.dtype) * val
        dfeat = dfeat + model.s[p].astype(W.dtype) * grad
    return feat, dfeat


def realize(model: GaussianModel, key, *, max_stored_degree: int = 2, dtype=None) -> Realization:
    """Draw one realization: the tensors J^(p), the labels y^g, the initial weights.

    Degrees p <= `max_stored_degree` are stored, higher ones streamed (module docstring).
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    k_init, k_tensor, k_noise = jr.split(key, 3)
    n, d = model.n, model.d
    rows = jnp.arange(n)
    tensors, phi = [], jnp.zeros((n,), dtype)
    f = model.f.astype(dtype)
    for p in model.degrees:
        if p <= max_stored_degree:
            t = _sample_tensors(k_tensor, p, rows, d, dtype)
            tensors.append(t)
        else:
            t = None
            tensors.append(None)
        phi = phi + _target_values(p, t, f[:, p], k_tensor, rows, d, dtype)
    y = phi + jnp.sqrt(model.noise2).astype(dtype) * jr.normal(k_noise, (n,), dtype)
    W0 = initial_weights(model, k_init, dtype)
    return Realization(tuple(tensors), k_tensor, y, model.a0.astype(dtype), W0)


def _target_values(p: int, t, f_p: Array, key, rows, d: int, dtype) -> Array:
    """sum_l f_{l,p} <J_i^(p), e_l^{(x)p}> = sum_l f_{l,p} J_i^(p)[l, ..., l] for all samples."""
    k = f_p.shape[0]
    if p == 0:
        vals = jnp.broadcast_to(jnp.sum(f_p), (rows.shape[0],))
        return vals * (t if t is not None else jax.vmap(
            lambda i: _sample_tensor(key, 0, i, d, dtype))(rows))
    idx = jnp.arange(k)

    def diag(ti):
        return ti[(idx,) * p]                     # (k,) entries J[l, ..., l]

    if t is not None:
        return jax.vmap(diag)(t) @ f_p
    return jax.lax.map(lambda i: diag(_sample_tensor(key, p, i, d, dtype)) @ f_p, rows,
                       batch_size=min(max(1, _STREAM_BLOCK_ENTRIES // d**p), rows.shape[0]))


def initial_weights(model: GaussianModel, key, dtype=None) -> Array:
    """W(0) (m, d), unit rows: iid uniform (symmetric), or with Gram matrix C(0, 0) and overlaps
    v(0) with u_l = e_l: w_j = sum_l v_jl e_l + Q L_j, where L L^T = C - v v^T (eigenvalues
    clipped at 0, so singular Gram matrices such as w_1 = w_3 work) and Q (d, m) is a random
    orthonormal frame orthogonal to e_1..e_k."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    m, d, k = model.m, model.d, model.k
    g = jr.normal(key, (m, d), dtype)
    if model.symmetric:
        return g / jnp.linalg.norm(g, axis=1, keepdims=True)
    c0, v0 = model.c0.astype(dtype), model.v0.astype(dtype)
    lam, vec = jnp.linalg.eigh(c0 - v0 @ v0.T)
    L = vec * jnp.sqrt(jnp.clip(lam, 0.0))                      # (m, m), L L^T = C - v v^T
    q, _ = jnp.linalg.qr(g[:, k:].T)                             # (d - k, m) orthonormal
    W = jnp.concatenate([v0, L @ q.T], axis=1)
    return W / jnp.linalg.norm(W, axis=1, keepdims=True)


# ------------------------------------------------------------------------------ risk, gradients
def residuals(model: GaussianModel, real: Realization, a: Array, W: Array, rows=None):
    """Delta_i = y_i - f^g_i over `rows`, with the features (phi_ij, d phi_ij / d w_j)."""
    feat, dfeat = features(model, real, W, rows)
    y = real.y if rows is None else real.y[rows]
    return y - feat @ a / model.m, feat, dfeat


def empirical_risk(model: GaussianModel, real: Realization, a: Array, W: Array, rows=None):
    """R_n^g = (1/2b) sum_{i in rows} (y_i - f^g_i)^2 (b = n for all samples)."""
    delta, _, _ = residuals(model, real, a, W, rows)
    return 0.5 * jnp.mean(delta**2)


def risk_gradient(model: GaussianModel, real: Realization, a: Array, W: Array, rows=None):
    """(R, dR/da (m,), dR/dW (m, d)) of `empirical_risk`, written out (no autodiff through the
    tensors, so streamed degrees cost one pass):

        dR/da_j = -(1/(b m)) sum_i Delta_i phi_ij,  dR/dw_j = -(a_j/(b m)) sum_i Delta_i d phi_ij/dw_j
    """
    delta, feat, dfeat = residuals(model, real, a, W, rows)
    scale = 1.0 / (delta.shape[0] * model.m)
    grad_a = -scale * feat.T @ delta
    grad_w = -scale * a[:, None] * jnp.einsum("i,ija->ja", delta, dfeat)
    return 0.5 * jnp.mean(delta**2), grad_a, grad_w


def population_error(model: GaussianModel, a: Array, W: Array) -> Array:
    """Population test error of spec section 2 (exact, no test set):
    e_ts = (1/2)[tau^2 + ||phi||^2 - (2/m) sum a_j phihat(U^T w_j) + (1/m^2) sum a_j a_l h(<w_j, w_l>)]."""
    m, k = model.m, model.k
    fit = jnp.sum(a * model.target.phihat(W[:, :k])) / m
    quad = a @ model.h(W @ W.T) @ a / m**2
    return 0.5 * (model.tau**2 + model.target.norm2 - 2.0 * fit + quad)


# ------------------------------------------------------------------------------ training
class Simulation(eqx.Module):
    """Recorded trajectories of the Gaussian model, one row per realization.

    **Fields:** `t` (T,) gradient-flow times (step count x lr d / n); `a` (R, T, m); `v` (R, T, m, k)
    = U^T w_j; `C0` (R, T, m, m) = <w_i(t), w_j(0)>; `C` (R, T, m, m) = <w_i(t), w_j(t)>; `e_tr`
    (R, T) = R_n^g (all n samples, also under SGD); `e_ts` (R, T) the population formula;
    `diverged` (R,) True where a value became non-finite or e_tr grew beyond 1e3 (1 + e_tr(0))
    (`dmft_jax._results.diverged_rows`, the rule shared with the DMFT and the networks);
    `controls` (R, m + 1) zero-mean control variates (`initial_controls`).
    """

    t: Array
    a: Array
    v: Array
    C0: Array
    C: Array
    e_tr: Array
    e_ts: Array
    diverged: Array
    controls: Array

    @property
    def C_d0(self) -> Array:
        """(R, T): mean_i C_ii(t, 0) (the symmetric DMFT's C_d(t, 0))."""
        return jnp.mean(jnp.diagonal(self.C0, axis1=-2, axis2=-1), axis=-1)

    @property
    def C_o(self) -> Array:
        """(R, T): mean over i != j of C_ij(t, t) (the symmetric DMFT's C_o(t, t); 0 if m = 1)."""
        m = self.C.shape[-1]
        if m == 1:
            return jnp.zeros(self.C.shape[:-2], self.C.dtype)
        total = jnp.sum(self.C, axis=(-2, -1)) - jnp.trace(self.C, axis1=-2, axis2=-1)
        return total / (m * (m - 1))

    def mean_and_error(self, x: Array, controls: bool = False):
        """Mean over non-diverged realizations of an (R, ...) array and its standard error.

        With `controls`, the regression (control-variate) estimator: the intercept of the least
        squares fit of x on [1, controls], whose mean is known to be 0, and the intercept's
        standard error. Same expectation, smaller error where x correlates with the initial
        fluctuations (measured: se x 0.45-0.8 at t = 5 for a_i and e_tr, far less at early t).
        """
        keep = ~np.asarray(self.diverged)
        x = np.asarray(x, np.float64)[keep]
        count = x.shape[0]
        y = x.reshape(count, -1)
        if not controls:
            mean = y.mean(axis=0)
            err = y.std(axis=0, ddof=1) / math.sqrt(count) if count > 1 else np.full_like(mean, np.nan)
            return mean.reshape(x.shape[1:]), err.reshape(x.shape[1:])
        z = np.asarray(self.controls, np.float64)[keep]
        design = np.concatenate([np.ones((count, 1)), z], axis=1)     # y = mu + beta z + noise
        if count <= design.shape[1] + 1:
            return self.mean_and_error(x)
        # lstsq / pinv: controls may be collinear (e.g. neurons with equal w_j(0))
        coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
        sigma2 = np.sum((y - design @ coef) ** 2, axis=0) / (count - rank)
        err = np.sqrt(sigma2 * np.linalg.pinv(design.T @ design)[0, 0])
        return coef[0].reshape(x.shape[1:]), err.reshape(x.shape[1:])


def initial_controls(model: GaussianModel, real: Realization) -> Array:
    """Zero-mean statistics of a realization at t = 0, used as control variates (m + 1,):

        dR/da_j(0) - E[dR/da_j(0)],  E[dR/da_j] = -(1/m) [phihat(U^T w_j) - (1/m) sum_l a_l h(<w_j, w_l>)]
        e_tr(0) - e_ts(0)            (E R_n^g = the population error at fixed weights)

    exact at any finite d because W(0) is independent of the tensors and labels.
    """
    a, W, m = real.a0, real.W0, model.m
    risk, grad_a, _ = risk_gradient(model, real, a, W)
    expected = -(model.target.phihat(W[:, :model.k]) - model.h(W @ W.T) @ a / m) / m
    return jnp.concatenate([grad_a - expected, (risk - population_error(model, a, W))[None]])


def _record(model, real, a, W, W0):
    delta, _, _ = residuals(model, real, a, W)
    return dict(a=a, v=W[:, :model.k], C0=W @ W0.T, C=W @ W.T, e_tr=0.5 * jnp.mean(delta**2),
                e_ts=population_error(model, a, W))


def _train_one(model: GaussianModel, key, lr, steps: int, record_every: int, batch: int | None,
               max_stored_degree: int, dtype):
    """One realization: draw, run `steps` projected (S)GD steps, record every `record_every`."""
    k_real, k_sgd = jr.split(key)
    real = realize(model, k_real, max_stored_degree=max_stored_degree, dtype=dtype)
    lr = jnp.asarray(lr, dtype)

    def step(i, aw):
        a, W = aw
        rows = None if batch is None else jr.choice(jr.fold_in(k_sgd, i), model.n, (batch,),
                                                     replace=False)
        _, grad_a, grad_w = risk_gradient(model, real, a, W, rows)
        if not model.freeze_a:
            a = a - lr * grad_a
        W = W - lr * grad_w
        return a, W / jnp.linalg.norm(W, axis=1, keepdims=True)

    def segment(aw, j):
        aw = jax.lax.fori_loop(j * record_every, (j + 1) * record_every, step, aw)
        return aw, _record(model, real, *aw, real.W0)

    first = _record(model, real, real.a0, real.W0, real.W0)
    _, rest = jax.lax.scan(segment, (real.a0, real.W0), jnp.arange(steps // record_every))
    out = jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x[None], y]), first, rest)
    return dict(out, controls=initial_controls(model, real))


def memory_per_realization(model: GaussianModel, max_stored_degree: int = 2, itemsize: int = 8,
                           batch: int | None = None) -> int:
    """Approximate bytes held by one realization in `simulate`: the stored tensors, the features
    and their gradients (rows x m x d, a few copies), an SGD batch's gathered tensors, and one
    block of a streamed degree."""
    d, n, m = model.d, model.n, model.m
    rows = n if batch is None else batch
    stored = sum(n * d**p for p in model.degrees if p <= max_stored_degree)
    gathered = sum(rows * d**p for p in model.degrees if p <= max_stored_degree) if batch else 0
    streamed = max([min(_STREAM_BLOCK_ENTRIES, n * d**p)
                    for p in model.degrees if p > max_stored_degree], default=0)
    return itemsize * (stored + gathered + streamed + 4 * rows * m * d)


def default_batch_size(model: GaussianModel, realizations: int, max_stored_degree: int = 2,
                       dtype=None, batch: int | None = None) -> int:
    """Realizations vmapped together by `simulate`: 1 on CPU (measured: batching the tensor
    contractions there is slower than a sequential `lax.map`), else as many as fit in
    `DEFAULT_BATCH_BYTES`."""
    if jax.default_backend() == "cpu":
        return 1
    itemsize = jnp.dtype(jnp.result_type(float) if dtype is None else dtype).itemsize
    per = memory_per_realization(model, max_stored_degree, itemsize, batch)
    return max(1, min(int(realizations), DEFAULT_BATCH_BYTES // max(per, 1)))


@eqx.filter_jit
def _simulate(model, keys, lr, steps, record_every, batch, batch_size, max_stored_degree, dtype):
    def one(key):
        return _train_one(model, key, lr, steps, record_every, batch, max_stored_degree, dtype)

    return jax.lax.map(one, keys, batch_size=batch_size)


def simulate(model: GaussianModel, key, realizations: int, *, lr, steps: int,
             record_every: int = 1, batch: int | None = None, batch_size: int | None = None,
             max_stored_degree: int = 2, dtype=None) -> Simulation:
    """Train `realizations` independent draws of the Gaussian model and record observables.

    **Arguments:**

    - `model`: a `GaussianModel`; `key`: a PRNG key (realization r uses `split(key, R)[r]`).
    - `lr`: step size (gradient-flow time lr d / n per step, traced: new values do not
      recompile); `steps`: number of steps, a multiple of `record_every`.
    - `batch`: SGD batch size b (samples drawn without replacement each step), None or 0 for
      full-batch GD.
    - `batch_size`: realizations vmapped together inside `lax.map` (default: as many as fit in
      `DEFAULT_BATCH_BYTES`, see `memory_per_realization`).
    - `max_stored_degree`: higher degrees of h are streamed (module docstring).
    - `dtype`: float dtype of the simulation (default: the ambient float; float32 halves
      memory and is ample for the statistical accuracy of a simulation).

    **Returns:** a `Simulation`.
    """
    steps, record_every = int(steps), int(record_every)
    if record_every < 1 or steps < 1 or steps % record_every:
        raise ValueError(f"steps ({steps}) must be a positive multiple of record_every "
                         f"({record_every})")
    if int(realizations) < 1:
        raise ValueError(f"realizations must be >= 1, got {realizations}")
    batch = None if not batch else int(batch)
    if batch is not None and not 1 <= batch <= model.n:
        raise ValueError(f"the SGD batch must be in 1..n = {model.n}, got {batch}")
    lr_val = np.asarray(lr, dtype=np.float64)
    if lr_val.ndim != 0 or not np.isfinite(lr_val) or not lr_val > 0:
        raise ValueError(f"the step lr must be a finite number > 0, got {lr!r}")
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if batch_size is None:
        batch_size = default_batch_size(model, int(realizations), max_stored_degree, dtype, batch)
    keys = jr.split(key, int(realizations))
    out = _simulate(model, keys, jnp.asarray(lr, dtype), steps, record_every, batch,
                    int(batch_size), int(max_stored_degree), dtype)
    t = np.arange(steps // record_every + 1) * record_every * float(lr_val) * model.d / model.n
    bad = jax.vmap(diverged_rows)(out["e_tr"], out["a"])      # the rule of dmft_jax._results
    return Simulation(t=jnp.asarray(t), a=out["a"], v=out["v"], C0=out["C0"], C=out["C"],
                      e_tr=out["e_tr"], e_ts=out["e_ts"], diverged=jnp.any(bad, axis=1),
                      controls=out["controls"])
