"""Validators of the models' parameters (concrete values; traced ones are checked by the
solver through `RESULTS.invalid_input`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._covariance import AbstractKernel, Target


def concrete(x):
    """x as a NumPy array, or None while tracing (checks then ran on the concrete call)."""
    try:
        return np.asarray(x, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_scalar(name: str, value, lower: float, strict: bool) -> Array:
    val = concrete(value)
    if val is not None:
        if val.ndim != 0 or not np.isfinite(val):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if (strict and not val > lower) or (not strict and not val >= lower):
            op = ">" if strict else ">="
            raise ValueError(f"{name} must be {op} {lower}, got {float(val)}")
    return jnp.asarray(value, dtype=jnp.result_type(float))


def check_kernel(h: AbstractKernel) -> AbstractKernel:
    """The DMFT needs a finite h''(1): reject kernels (ReLU) whose memory term diverges.

    In the scheme of spec section 6, C_ii(t + dt, t) = 1 exactly while R_ii(t + dt, t) = 1, so
    M^R contains h''(1) R: with ReLU's h''(q) ~ 1/sqrt(1 - q) the continuous-time memory
    integral diverges logarithmically (1 - C_ii(t, s) ~ (t - s)^2). A Hermite truncation of the
    activation (`covariance("relu", degree=K)`) is smooth and has a finite h''(1).
    """
    val = concrete(h.d2(jnp.ones(())))
    if val is not None and not np.isfinite(val):
        raise ValueError(
            "h''(1) is infinite for this covariance (e.g. ReLU's arc-cosine kernel): the DMFT "
            "memory term h''(C_d) R_d diverges logarithmically at equal times. Use a smooth "
            "activation, or the degree-K Hermite truncation covariance('relu', degree=K).")
    return h


def target_or_noise(target: Target | None) -> Target:
    return Target.pure_noise() if target is None else target
