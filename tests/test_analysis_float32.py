"""The analysis tools in float32, and on a bfloat16-compute model, against the float64 ground truth.

The same problems as the float64 tests (a quadratic with a chosen spectrum, a
small MLP over uneven padded batches); the truth is computed in float64 and each
tolerance below is what the working precision allows, stated where it is used:
float32 rounds at 6e-8 relative, bfloat16 at 4e-3.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from analysis_problems import masked_mlp_loss, mlp_params, quadratic, uneven_batches
from jax.flatten_util import ravel_pytree

from gnp import analysis

SPECTRUM = np.concatenate([[10.0, 8.0, 6.0, 5.0, 4.0], np.linspace(-1.5, 2.5, 55)])


def as_float32(tree):
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float32), tree)


def bfloat16_mlp_loss(params, batch):
    """The MLP computed in bfloat16 from float32 parameters, as a mixed-precision model is."""
    low = jax.tree.map(lambda x: x.astype(jnp.bfloat16), (params, batch))
    return masked_mlp_loss(*low).astype(jnp.float32)


@functools.cache  # shared by two tests: the dense Hessian is the slow part
def float64_truth():
    """‖∇L‖, the Hessian's eigenvalues and trace of the MLP problem, in float64."""
    with jax.enable_x64(True):
        params = mlp_params(0)
        batches, full = uneven_batches(1)
        flat, unravel = ravel_pytree(params)
        # Jitted: run op by op, the dense Hessian compiles hundreds of tiny programs.
        hessian = np.asarray(
            jax.jit(jax.hessian(lambda f: masked_mlp_loss(unravel(f), full)))(flat)
        )
        gradient = ravel_pytree(jax.jit(jax.grad(masked_mlp_loss))(params, full))[0]
        return {
            "params": as_float32(params),
            "batches": as_float32(batches),
            "gradient_norm": float(np.linalg.norm(gradient)),
            "eigenvalues": np.linalg.eigvalsh(hessian)[::-1],
            "trace": float(np.trace(hessian)),
            "hessian": hessian,
        }


def test_lanczos_and_hutchinson_in_float32_on_the_known_spectrum():
    _, loss, params_from = quadratic(SPECTRUM)
    theta = np.random.default_rng(1).normal(size=SPECTRUM.size)
    operator = analysis.hessian_operator(
        loss, as_float32(params_from(theta)), [None], weights=[1.0]
    )
    assert operator.dtype == jnp.float32
    top = analysis.top_eigenvalues(operator, 5, key=jax.random.key(0))
    # float32 products: eigenvalues to 1e-5 relative, residuals near 1e-6·‖H‖, all converged.
    np.testing.assert_allclose(top.eigenvalues, SPECTRUM[:5], rtol=1e-5)
    assert np.max(top.residual_norms) < 1e-5 * SPECTRUM.max()
    assert top.converged.all()
    trace = analysis.hessian_trace(operator, key=jax.random.key(4), num_probes=100)
    assert abs(trace.mean - SPECTRUM.sum()) < 3 * trace.standard_error


@pytest.mark.slow
def test_gradient_norm_hessian_and_slices_of_a_float32_mlp():
    truth = float64_truth()
    params, batches = truth["params"], truth["batches"]
    result = analysis.full_gradient_norm(masked_mlp_loss, params, batches)
    np.testing.assert_allclose(result.norm, truth["gradient_norm"], rtol=1e-5)
    operator = analysis.hessian_operator(masked_mlp_loss, params, batches)
    vector = np.random.default_rng(2).normal(size=operator.size)
    product = np.asarray(operator.matvec(jnp.asarray(vector, jnp.float32)))
    want = truth["hessian"] @ vector
    assert np.linalg.norm(product - want) < 1e-5 * np.linalg.norm(want)
    top = analysis.top_eigenvalues(operator, 3, key=jax.random.key(3))
    np.testing.assert_allclose(top.eigenvalues, truth["eigenvalues"][:3], rtol=1e-5)
    assert top.converged.all()
    trace = analysis.hessian_trace(operator, key=jax.random.key(4), num_probes=60)
    assert abs(trace.mean - truth["trace"]) < 3 * trace.standard_error
    # A slice's centre is the loss itself, to float32 rounding.
    direction = analysis.filter_normalized_direction(jax.random.key(5), params)
    values = analysis.loss_slice_1d(
        masked_mlp_loss, params, direction, batches, coordinates=[-0.5, 0.0, 0.5]
    )
    np.testing.assert_allclose(values[1], result.loss, rtol=1e-6)


def test_a_bfloat16_compute_model_with_float32_parameters():
    truth = float64_truth()
    params, batches = truth["params"], truth["batches"]
    result = analysis.full_gradient_norm(bfloat16_mlp_loss, params, batches)
    # bfloat16 keeps 8 bits: the gradient norm comes out within 1 %.
    np.testing.assert_allclose(result.norm, truth["gradient_norm"], rtol=1e-2)
    operator = analysis.hessian_operator(bfloat16_mlp_loss, params, batches)
    assert operator.dtype == jnp.float32  # the solvers still work in float32
    top = analysis.top_eigenvalues(operator, 3, key=jax.random.key(3))
    # Each product carries bfloat16 rounding (about 1 % of ‖H v‖), which the residuals show:
    # not converged at the default 1e-3 of ‖H‖ ...
    assert not top.converged.any()
    assert np.all(top.residual_norms > 1e-3 * truth["eigenvalues"][0])
    # ... while the eigenvalues are within their residuals of the float64 truth, and a
    # tolerance fit for bfloat16 (5 % of ‖H‖) accepts them.
    assert np.all(np.abs(top.eigenvalues - truth["eigenvalues"][:3]) <= top.residual_norms)
    loose = analysis.top_eigenvalues(operator, 3, key=jax.random.key(3), tolerance=0.05)
    assert loose.converged.all()
    trace = analysis.hessian_trace(operator, key=jax.random.key(4), num_probes=60)
    assert abs(trace.mean - truth["trace"]) < 3 * trace.standard_error
