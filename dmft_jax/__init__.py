"""dmft_jax: dynamical mean field theory of two-layer networks trained by gradient flow.

Flat public API over private modules; see README.md and docs/equations.md.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from . import _observables as observables  # noqa: F401  (public submodule)
from ._adjoint import (
    differentiable_solve as differentiable_solve,
    jacobian as jacobian,
    value_and_grad as value_and_grad,
)
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
from ._discrete import DiscreteGD as DiscreteGD
from ._dmft import DMFT as DMFT, general_dmft as general_dmft, symmetric_dmft as symmetric_dmft
from ._gaussian_model import (
    GaussianModel as GaussianModel,
    Simulation as Simulation,
    gaussian_model as gaussian_model,
    gaussian_model_from_dmft as gaussian_model_from_dmft,
    simulate as simulate,
)
from ._grid import TimeGrid as TimeGrid
from ._integrate import (
    AbstractModel as AbstractModel,
    Adaptive as Adaptive,
    CHUNK_FROM as CHUNK_FROM,
    chunk_bounds as chunk_bounds,
    integrate as integrate,
    solve as solve,
)
from ._meanfield import (
    MeanFieldSolution as MeanFieldSolution,
    mean_field_model as mean_field_model,
    mean_field_neurons_model as mean_field_neurons_model,
)
from ._network import (
    Problem as Problem,
    TwoLayerNetwork as TwoLayerNetwork,
    population_risk as population_risk,
    problem as problem,
)
from ._reduced import (
    h2_model as h2_model,
    lz1 as lz1,
    lz2_model as lz2_model,
    mf1 as mf1,
    mf2_model as mf2_model,
    tau_prime as tau_prime,
)
from ._nongaussian import (
    NonGaussianDMFT as NonGaussianDMFT,
    NonGaussianSolution as NonGaussianSolution,
    linear_activation as linear_activation,
    nongaussian_dmft as nongaussian_dmft,
)
from ._nongaussian_fp import nongaussian_fixed_point as nongaussian_fixed_point
from ._results import RESULTS as RESULTS
from ._solution import Solution as Solution
from ._stability import (
    divergence_step as divergence_step,
    edge_of_stability_step as edge_of_stability_step,
)
from ._stepper import (
    AbstractStepper as AbstractStepper,
    Euler as Euler,
    Map as Map,
    Quadrature as Quadrature,
    Trapezoid as Trapezoid,
)
from ._sweep import SweepResult as SweepResult, sweep as sweep
from ._threshold import (
    auto_scan as auto_scan,
    fit_divergence as fit_divergence,
    kindex_threshold as kindex_threshold,
    late_fit as late_fit,
    relaxation_scan as relaxation_scan,
    threshold as threshold,
)
from ._train import (
    Protocol as Protocol,
    Trajectory as Trajectory,
    n_samples as n_samples,
    train as train,
)
from ._trainer_grad import trainer_value_and_grad as trainer_value_and_grad

try:
    __version__ = _version("dmft_jax")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
