"""dmft_jax: dynamical mean field theory of two-layer networks trained by gradient flow."""

from importlib.metadata import PackageNotFoundError, version as _version

from ._algebra import AbstractAlgebra as AbstractAlgebra, General as General, Symmetric as Symmetric
from ._covariance import AbstractKernel as AbstractKernel, Polynomial as Polynomial, Target as Target
from ._dmft import DMFT as DMFT
from ._grid import TimeGrid as TimeGrid
from ._integrate import AbstractModel as AbstractModel, Euler as Euler, integrate as integrate, solve as solve
from ._solution import Solution as Solution

try:
    __version__ = _version("dmft_jax")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
