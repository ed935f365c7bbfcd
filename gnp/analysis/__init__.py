"""Measurements of a trained (or training) model: gradient norm, Hessian spectrum, landscape.

Pure functions over the user's ``loss_fn(params, batch)`` (the mean loss over
the batch's real examples), any parameter pytree and an iterable of batches;
every tool measures the loss of the whole data set (see ``gnp.analysis.data``).
"""

from gnp.analysis.batchnorm import recompute_batch_stats
from gnp.analysis.data import default_weight, mean_loss
from gnp.analysis.directions import (
    Filters,
    attention_filters,
    default_filters,
    filter_normalized_direction,
)
from gnp.analysis.gradient_norm import GradientNormResult, full_gradient_norm
from gnp.analysis.hessian import (
    Eigenpairs,
    HessianOperator,
    TraceDifference,
    TraceEstimate,
    hessian_operator,
    hessian_trace,
    power_iteration,
    top_eigenvalues,
    trace_difference,
)
from gnp.analysis.landscape import (
    linear_interpolation,
    loss_slice_1d,
    loss_slice_2d,
)
from gnp.analysis.plots import (
    plot_alpha_sweep,
    plot_batch_gradient_norms,
    plot_eigenvalues,
    plot_loss_contour,
    plot_loss_curve,
)

__all__ = [
    "Eigenpairs",
    "Filters",
    "GradientNormResult",
    "HessianOperator",
    "TraceDifference",
    "TraceEstimate",
    "attention_filters",
    "default_filters",
    "default_weight",
    "filter_normalized_direction",
    "full_gradient_norm",
    "hessian_operator",
    "hessian_trace",
    "linear_interpolation",
    "loss_slice_1d",
    "loss_slice_2d",
    "mean_loss",
    "plot_alpha_sweep",
    "plot_batch_gradient_norms",
    "plot_eigenvalues",
    "plot_loss_contour",
    "plot_loss_curve",
    "power_iteration",
    "recompute_batch_stats",
    "top_eigenvalues",
    "trace_difference",
]
