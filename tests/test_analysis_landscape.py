"""Loss-landscape slices against the closed form of a quadratic; filter normalization by hand."""

import jax
import jax.numpy as jnp
import numpy as np
from analysis_problems import quadratic

from gnp import analysis


def closed_form(matrix, theta):
    return 0.5 * theta @ matrix @ theta


def quadratic_problem():
    matrix, loss, params_from = quadratic(np.linspace(-1.0, 4.0, 12), seed=2)
    rng = np.random.default_rng(7)
    theta, d1, d2 = (rng.normal(size=12) for _ in range(3))
    return matrix, loss, params_from, theta, d1, d2


def test_one_and_two_dimensional_slices_match_the_quadratic():
    with jax.enable_x64(True):
        matrix, loss, params_from, theta, d1, d2 = quadratic_problem()
        ts = np.linspace(-1.0, 1.5, 6)
        batches = [None]
        values = analysis.loss_slice_1d(
            loss, params_from(theta), params_from(d1), batches, coordinates=ts, weights=[1.0]
        )
        np.testing.assert_allclose(
            values, [closed_form(matrix, theta + t * d1) for t in ts], rtol=1e-12
        )
        xs, ys = np.linspace(-1.0, 1.0, 4), np.linspace(-0.5, 2.0, 3)
        grid = analysis.loss_slice_2d(
            loss,
            params_from(theta),
            (params_from(d1), params_from(d2)),
            batches,
            coordinates_x=xs,
            coordinates_y=ys,
            weights=[1.0],
        )
        expected = [[closed_form(matrix, theta + x * d1 + y * d2) for y in ys] for x in xs]
        np.testing.assert_allclose(grid, expected, rtol=1e-12)


def test_linear_interpolation_matches_the_quadratic():
    with jax.enable_x64(True):
        matrix, loss, params_from, theta_a, theta_b, _ = quadratic_problem()
        ts = np.array([-0.5, 0.0, 0.25, 1.0, 1.5])
        values = analysis.linear_interpolation(
            loss, params_from(theta_a), params_from(theta_b), [None], coordinates=ts, weights=[1.0]
        )
        expected = [closed_form(matrix, (1 - t) * theta_a + t * theta_b) for t in ts]
        np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_slices_average_the_loss_over_batches_by_their_weights():
    with jax.enable_x64(True):
        # L_b(θ) = mean over the batch of (xᵀθ)²/2: the data-set loss is ½θᵀ(XᵀX/N)θ.
        rng = np.random.default_rng(0)
        x = rng.normal(size=(9, 3))
        theta, direction = rng.normal(size=3), rng.normal(size=3)
        batches = [jnp.asarray(x[:2]), jnp.asarray(x[2:])]
        loss = lambda p, batch: 0.5 * jnp.mean((batch @ p) ** 2)
        ts = np.array([0.0, 0.7])
        values = analysis.loss_slice_1d(
            loss, jnp.asarray(theta), jnp.asarray(direction), batches, coordinates=ts
        )
        expected = [closed_form(x.T @ x / 9, theta + t * direction) for t in ts]
        np.testing.assert_allclose(values, expected, rtol=1e-12)


def filter_norms(leaf, axis):
    moved = np.moveaxis(np.asarray(leaf), axis, 0)
    return np.linalg.norm(moved.reshape(moved.shape[0], -1), axis=1)


def conv_params():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    kernel[..., 2] = 0.0  # A dead filter gets a zero direction, not NaN.
    return {
        "conv": {
            "kernel": jnp.asarray(kernel),
            "bias": jnp.asarray(rng.normal(size=4), jnp.float32),
        },
        "dense": {"kernel": jnp.asarray(rng.normal(size=(8, 3)) * 5, jnp.float32)},
        "norm": {"scale": jnp.ones(4, jnp.float32)},
    }


def test_each_filter_of_the_direction_has_the_norm_of_the_parameters_filter():
    params = conv_params()
    direction = analysis.filter_normalized_direction(jax.random.key(0), params)
    for path in (("conv", "kernel"), ("dense", "kernel")):
        got = direction[path[0]][path[1]]
        want = params[path[0]][path[1]]
        assert got.shape == want.shape
        assert got.dtype == want.dtype
        np.testing.assert_allclose(filter_norms(got, -1), filter_norms(want, -1), rtol=1e-5)
    assert np.all(np.asarray(direction["conv"]["kernel"][..., 2]) == 0)
    assert np.all(np.asarray(direction["conv"]["bias"]) == 0)
    assert np.all(np.asarray(direction["norm"]["scale"]) == 0)
    # A direction, not a rescaled copy of θ.
    assert (
        abs(
            np.corrcoef(
                np.ravel(direction["dense"]["kernel"]), np.ravel(params["dense"]["kernel"])
            )[0, 1]
        )
        < 0.7
    )


def test_direction_options_and_determinism():
    params = conv_params()
    kept = analysis.filter_normalized_direction(
        jax.random.key(0), params, keep_one_dimensional=True
    )
    for path in (("conv", "bias"), ("norm", "scale")):
        np.testing.assert_allclose(
            np.linalg.norm(kept[path[0]][path[1]]),
            np.linalg.norm(params[path[0]][path[1]]),
            rtol=1e-5,
        )
    channels_first = analysis.filter_normalized_direction(jax.random.key(0), params, filter_axis=0)
    kernel = params["dense"]["kernel"]
    np.testing.assert_allclose(
        filter_norms(channels_first["dense"]["kernel"], 0), filter_norms(kernel, 0), rtol=1e-5
    )
    again = analysis.filter_normalized_direction(jax.random.key(0), params)
    other = analysis.filter_normalized_direction(jax.random.key(1), params)
    direction = analysis.filter_normalized_direction(jax.random.key(0), params)
    np.testing.assert_array_equal(again["dense"]["kernel"], direction["dense"]["kernel"])
    assert not np.allclose(other["dense"]["kernel"], direction["dense"]["kernel"])
