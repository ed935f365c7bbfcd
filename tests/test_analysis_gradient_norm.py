"""gnp.analysis.full_gradient_norm against the gradient of the concatenated data set, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from analysis_problems import masked_mlp_loss, mlp_params, uneven_batches

from gnp import analysis


def flat_norm(tree):
    return float(np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in jax.tree.leaves(tree))))


def test_full_gradient_norm_is_the_norm_of_the_whole_data_set_gradient():
    with jax.enable_x64(True):
        params = mlp_params(0)
        batches, full = uneven_batches(1)
        result = analysis.full_gradient_norm(masked_mlp_loss, params, batches)
        expected_gradient = jax.grad(masked_mlp_loss)(params, full)
        expected_norm = flat_norm(expected_gradient)
        np.testing.assert_allclose(result.norm, expected_norm, rtol=1e-12)
        np.testing.assert_allclose(result.loss, masked_mlp_loss(params, full), rtol=1e-12)
        for got, want in zip(
            jax.tree.leaves(result.gradient), jax.tree.leaves(expected_gradient), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        per_batch = [flat_norm(jax.grad(masked_mlp_loss)(params, b)) for b in batches]
        np.testing.assert_allclose(result.batch_norms, per_batch, rtol=1e-12)
        np.testing.assert_array_equal(result.batch_weights, [5, 7, 3])
        # The triangle inequality: the mean of batch norms overstates the full-set norm.
        assert np.mean(result.batch_norms) > result.norm
        assert result.summary()["gradient_norm"] == result.norm


def test_weights_as_a_sequence_or_a_function_and_batches_as_a_generator():
    with jax.enable_x64(True):
        params = mlp_params(0)
        batches, _ = uneven_batches(1)
        reference = analysis.full_gradient_norm(masked_mlp_loss, params, batches).norm
        by_sequence = analysis.full_gradient_norm(
            masked_mlp_loss, params, (b for b in batches), weights=[5, 7, 3]
        )
        by_function = analysis.full_gradient_norm(
            masked_mlp_loss, params, batches, weights=lambda b: float(jnp.sum(b["mask"]))
        )
        np.testing.assert_allclose(by_sequence.norm, reference, rtol=1e-12)
        np.testing.assert_allclose(by_function.norm, reference, rtol=1e-12)


def test_unmasked_batches_are_weighted_by_their_leading_size():
    with jax.enable_x64(True):
        params = mlp_params(0)
        batches, full = uneven_batches(1, sizes=(2, 9), padded=(4, 4))
        unmasked = [(b["x"], b["y"]) for b in batches]

        def loss(p, batch):
            x, y = batch
            return masked_mlp_loss(p, {"x": x, "y": y, "mask": jnp.ones(x.shape[0])})

        result = analysis.full_gradient_norm(loss, params, unmasked)
        np.testing.assert_allclose(
            result.norm, flat_norm(jax.grad(masked_mlp_loss)(params, full)), rtol=1e-12
        )


def test_an_empty_data_set_is_an_error():
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="empty"):
        analysis.full_gradient_norm(lambda p, b: jnp.sum(p["w"]), params, [])


def test_batches_sharded_over_devices_give_the_same_measurements():
    with jax.enable_x64(True):
        params = mlp_params(0)
        batches, _ = uneven_batches(1, sizes=(4, 8), padded=(8, 3))
        # Auto axes: the compiler partitions the user's loss (Explicit axes ask the loss itself
        # to say how a contraction over the sharded batch is sharded).
        mesh = jax.make_mesh(
            (jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
        )
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        sharded = [jax.device_put(b, sharding) for b in batches]
        assert len(sharded[0]["x"].sharding.device_set) == jax.device_count()
        local = analysis.full_gradient_norm(masked_mlp_loss, params, batches)
        spread = analysis.full_gradient_norm(masked_mlp_loss, params, sharded)
        np.testing.assert_allclose(spread.norm, local.norm, rtol=1e-12)
        vector = jnp.linspace(-1.0, 1.0, 44)
        np.testing.assert_allclose(
            analysis.hessian_operator(masked_mlp_loss, params, sharded).matvec(vector),
            analysis.hessian_operator(masked_mlp_loss, params, batches).matvec(vector),
            rtol=1e-10,
            atol=1e-13,
        )
