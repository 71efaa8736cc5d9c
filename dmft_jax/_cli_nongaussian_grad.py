"""`dmft-jax grad --theory nongaussian`: forward-mode derivatives of a timed observable of the
non-Gaussian DMFT at fixed draws (common random numbers: the same --seed gives the same draws,
so the derivative is that of a deterministic function of the parameters).

Checked against central finite differences of the same seed (tests/test_cli_nongaussian.py:
m = 2, 8 steps of dt = 0.1, 400 draws in 4 replicas, relative agreement 1e-5 or better).

The library's path extension takes the symmetric square root of the conditional covariance by
an eigen-decomposition, whose JAX derivative is NaN for degenerate eigenvalues (C(0, 0) = I)
and infinite for the zero innovations of the first Euler row. `_Differentiable` is the same
model with that square root given the Daleckii-Krein derivative (divided differences of sqrt,
zero on the null space, eigenvalues below 1e-8 x max(1, |lambda|) counted as zero); its values
are the library's bit for bit (checked by the same test). There is no reverse mode: the
non-Gaussian DMFT has no adjoint (`jax.grad` through the loop would store every step).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._cli_args import SolveError, UsageError
from ._nongaussian import NonGaussianDMFT

#: Observables (`--observable`) and parameters (`--wrt`) the non-Gaussian derivative supports.
OBSERVABLES = ("e_ts", "e_tr", "gap", "gamma", "a", "v")
WRT = ("a0", "gamma0", "tau", "alpha", "alpha_bar")
#: Eigenvalues of the conditional covariance below this (relative) count as zero.
TINY = 1e-8


@jax.custom_jvp
def psd_sqrt(S):
    """The symmetric square root of the PSD part of S (negative eigenvalues clipped to 0)."""
    lam, U = jnp.linalg.eigh(S)
    return (U * jnp.sqrt(jnp.maximum(lam, 0.0))) @ U.T


@psd_sqrt.defjvp
def _psd_sqrt_jvp(primals, tangents):
    """Daleckii-Krein: d sqrt(S) = U [(U^T dS U) o D] U^T with D the divided differences of
    f = sqrt(max(., 0)) (f' on ties, 0 on the null space)."""
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


class _Differentiable(NonGaussianDMFT):
    """`NonGaussianDMFT` whose path extension (spec 7.3 step 4) has a finite forward-mode
    derivative: the same computation as the library's `_extend_paths`, with `psd_sqrt`."""

    def _extend_paths(self, n, s):
        m, size = self.m, s["rho"].shape[-1]
        past = jnp.arange(size) < n
        v, v_n = s["v"], s["v"][..., n]
        q_n = s["C"][:, :, n, :] - jnp.einsum("ic,jcl->ijl", v_n, v)
        mask2 = past[:, None, None, None] & past[None, None, :, None]
        A = jnp.where(mask2, jnp.transpose(s["Lf"], (2, 0, 3, 1)), 0.0).reshape(size * m, -1)
        B = jnp.where(past[None, :, None], jnp.transpose(q_n, (0, 2, 1)), 0.0).reshape(m, -1)
        X = (jnp.linalg.pinv(A, rtol=self.rtol) @ B.T).T
        mismatch = jnp.max(jnp.abs(X @ A.T - B))
        schur = q_n[..., n] - X @ X.T
        sym = 0.5 * (schur + schur.T)
        clipped = jnp.sum(jnp.maximum(-jnp.linalg.eigvalsh(sym), 0.0))
        row = jnp.transpose(X.reshape(m, size, m), (0, 2, 1))
        row = jnp.where(past, row, 0.0).at[..., n].set(psd_sqrt(sym))
        xi_n = jnp.einsum("ijl,pjl->pi", row, s["z"]) + s["r0"] @ v_n.T
        return dict(s, Lf=s["Lf"].at[:, :, n, :].set(row), xi=s["xi"].at[..., n].set(xi_n),
                    clipped=s["clipped"].at[n].set(clipped),
                    mismatch=s["mismatch"].at[n].set(mismatch)), xi_n


def differentiable(model: NonGaussianDMFT) -> _Differentiable:
    return _Differentiable(**{f.name: getattr(model, f.name) for f in dataclasses.fields(model)})


def _check(args) -> list[str]:
    """UsageError for what the non-Gaussian derivative cannot do; the --wrt names."""
    if args.mode == "reverse":
        raise UsageError("--mode reverse: the non-Gaussian DMFT has no adjoint; use --mode "
                         "forward (the default with --theory nongaussian)")
    args.mode = "forward"
    if args.observable not in OBSERVABLES:
        raise UsageError(f"--observable {args.observable}: the non-Gaussian derivative takes "
                         f"{', '.join(OBSERVABLES)}")
    if args.temperature is not None or args.chunks is not None:
        raise UsageError("--temperature and --chunks do not apply to --theory nongaussian")
    names = [x.strip() for x in args.wrt.split(",") if x.strip()]
    bad = [x for x in names if x not in WRT]
    if not names or bad or len(set(names)) != len(names):
        raise UsageError(f"--wrt: {', '.join(bad) or args.wrt!r} not supported with --theory "
                         f"nongaussian (known: {', '.join(WRT)}, each once)")
    return names


def run(args, out) -> int:
    """`grad --theory nongaussian`: the JSON line of value and forward-mode derivatives."""
    import jax.tree_util as jtu

    from . import _adjoint
    from . import _cli_nongaussian as ng
    from ._cli_grad import _as_scalar, _jsonable, _observable, _output_shape
    ng.check_flags(args, "grad")
    names = _check(args)
    args.dt = 0.05 if args.dt is None else args.dt
    args.steps = 200 if args.steps is None else args.steps
    model, grid = ng.model_from_args(args)
    model = differentiable(model)
    observable = _observable(args, grid)
    ng.check_solve_memory(args, model, copies=3.0)
    t0 = time.perf_counter()
    shape = _output_shape(observable, model, grid)
    if shape != () and int(np.prod(shape)) == 1:
        observable, shape = jtu.Partial(_as_scalar, observable), ()
    call = (observable, model, grid, tuple(names), "forward", None)
    _adjoint.lower(*call, jacobian=shape != ()).compile()
    t1 = time.perf_counter()
    fn = _adjoint.value_and_grad if shape == () else _adjoint.jacobian
    value, grads = fn(*call)
    value, grads = np.asarray(value), {k: np.asarray(v) for k, v in grads.items()}
    result = dict(value=_jsonable(value), grad={k: _jsonable(g) for k, g in grads.items()},
                  mode="forward", theory="nongaussian", draws=args.draws, groups=args.groups,
                  seed=args.seed, seconds=round(time.perf_counter() - t1, 4),
                  compile_seconds=round(t1 - t0, 4))
    out.json = True
    if not (np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads.values())):
        out.error_json(dict(result, diverged=True))
        raise SolveError("the derivative is not finite (non-finite value or gradient): the "
                         f"solve diverged or some draws are unstable; try a smaller --dt than "
                         f"{float(grid.dt):g}")
    out.report(dict(result, diverged=False), "")
    return 0
