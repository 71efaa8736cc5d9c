"""dmft_jax: dynamical mean field theory of two-layer networks trained by gradient flow.

Flat public API over private modules; see README.md and ../shared/spec/dmft.md.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from ._algebra import AbstractAlgebra as AbstractAlgebra, General as General, Symmetric as Symmetric
from ._covariance import (
    PRESETS as PRESETS,
    AbstractKernel as AbstractKernel,
    Erf as Erf,
    Polynomial as Polynomial,
    Quadrature as Quadrature,
    ReLU as ReLU,
    Target as Target,
    activation as activation,
    activation_from_h_coeffs as activation_from_h_coeffs,
    covariance as covariance,
    hermite_activation as hermite_activation,
    hermite_coefficients as hermite_coefficients,
    target as target,
)
from ._dmft import DMFT as DMFT, general_dmft as general_dmft, symmetric_dmft as symmetric_dmft
from ._grid import TimeGrid as TimeGrid
from ._integrate import (
    AbstractModel as AbstractModel,
    Euler as Euler,
    integrate as integrate,
    solve as solve,
)
from ._solution import Solution as Solution

try:
    __version__ = _version("dmft_jax")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
