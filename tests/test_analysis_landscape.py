"""Loss-landscape slices against the closed form of a quadratic; filter normalization by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from analysis_problems import quadratic

from gnp import analysis, models
from gnp.models.cait import CaiT
from gnp.models.swin import Swin


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


def test_interpolation_measures_each_point_after_at_point_maps_it():
    with jax.enable_x64(True):
        matrix, loss, params_from, theta_a, theta_b, _ = quadratic_problem()
        ts = np.array([0.0, 0.5, 1.0])
        seen = []

        def at_point(params):  # e.g. re-estimating statistics; here: a known map, θ ↦ 2θ
            seen.append(params)
            return jax.tree.map(lambda x: 2 * x, params)

        values = analysis.linear_interpolation(
            loss,
            params_from(theta_a),
            params_from(theta_b),
            [None],
            coordinates=ts,
            weights=[1.0],
            at_point=at_point,
        )
        expected = [closed_form(matrix, 2 * ((1 - t) * theta_a + t * theta_b)) for t in ts]
        np.testing.assert_allclose(values, expected, rtol=1e-12)
        assert len(seen) == 3


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
    kept = analysis.filter_normalized_direction(jax.random.key(0), params, include_non_kernels=True)
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


def block_norms(kernel, heads, projections):
    """Frobenius norm of each (projection, head) block of a (in, projections·heads·d) kernel."""
    fan_in = kernel.shape[0]
    blocks = np.asarray(kernel).reshape(fan_in, projections, heads, -1)
    return np.sqrt(np.sum(blocks**2, axis=(0, 3)))


def test_fused_qkv_kernel_is_normalized_per_projection_and_head():
    # A hand-built q/k/v kernel: 5 inputs, 3 projections × 2 heads × 4 units, every block of
    # its own size, so a rule that mixed heads or projections would get the norms wrong.
    rng = np.random.default_rng(0)
    sizes = np.array([[1.0, 10.0], [0.1, 3.0], [50.0, 0.5]])
    kernel = rng.normal(size=(5, 3, 2, 4)) * sizes[None, :, :, None]
    params = {"attention": {"Dense_0": {"kernel": jnp.asarray(kernel.reshape(5, 24))}}}
    filters = {("attention", "Dense_0", "kernel"): analysis.Filters((5, 3, 2, 4), (1, 2))}
    direction = analysis.filter_normalized_direction(jax.random.key(0), params, filters=filters)
    got = direction["attention"]["Dense_0"]["kernel"]
    np.testing.assert_allclose(block_norms(got, 2, 3), block_norms(kernel, 2, 3), rtol=1e-5)
    # Not the per-unit rule: within a block the units' norms follow the noise, not θ.
    assert not np.allclose(
        filter_norms(got, -1), filter_norms(kernel.reshape(5, 24), -1), rtol=0.05
    )
    # Flax attention's (in, heads, head_dim) kernels show their heads: one filter per head.
    vit = {"query": {"kernel": jnp.asarray(kernel[:, 0])}, "out": {"kernel": jnp.ones((2, 4, 5))}}
    direction = analysis.filter_normalized_direction(jax.random.key(1), vit)
    norms = np.linalg.norm(np.asarray(direction["query"]["kernel"]), axis=(0, 2))
    np.testing.assert_allclose(norms, np.linalg.norm(kernel[:, 0], axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(  # the output projection: one filter per output unit
        filter_norms(direction["out"]["kernel"], -1), np.full(5, np.sqrt(8)), rtol=1e-5
    )


def test_attention_filters_find_every_qkv_kernel_of_cait_and_swin():
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    cait = analysis.attention_filters(models.get_model("CaiT_XXS12", num_classes=10), images)
    # 12 talking-heads blocks (fused q/k/v, 4 heads of 48) and 2 class-attention blocks (q, k, v).
    assert cait[("CaiTBlock_0", "TalkingHeadsAttention_0", "Dense_0", "kernel")] == (
        analysis.Filters((192, 3, 4, 48), (1, 2))
    )
    assert cait[("CaiTBlock_12", "ClassAttention_0", "Dense_2", "kernel")] == (
        analysis.Filters((192, 1, 4, 48), (1, 2))
    )
    assert len(cait) == 12 + 2 * 3
    swin = analysis.attention_filters(models.get_model("Swin_Tiny_Patch4", num_classes=10), images)
    # Each stage has its own head count (3, 6, 12, 24), each head 32 units.
    assert {f.shape[2] for f in swin.values()} == {3, 6, 12, 24}
    assert {f.shape[3] for f in swin.values()} == {32}
    assert len(swin) == 2 + 2 + 6 + 2
    vit = analysis.attention_filters(models.get_model("ViT_TI16", num_classes=10), images)
    assert vit == {}


def test_default_filters_name_every_layer_type_of_the_zoo():
    rule = analysis.default_filters
    assert rule(("Conv_0", "kernel"), (3, 3, 16, 32)) == analysis.Filters((3, 3, 16, 32), (3,))
    assert rule(("Dense_0", "kernel"), (64, 10)) == analysis.Filters((64, 10), (1,))
    assert rule(("Dense_0", "kernel"), (64, 10), filter_axis=0) == analysis.Filters((64, 10), (0,))
    assert rule(("key", "kernel"), (64, 3, 16)) == analysis.Filters((64, 3, 16), (1,))
    assert rule(("out", "kernel"), (3, 16, 64)) == analysis.Filters((3, 16, 64), (2,))
    for name, shape in (
        ("bias", (3, 16)),  # a DenseGeneral bias has the output's shape
        ("scale", (64,)),
        ("gamma", (64,)),
        ("cls", (1, 1, 64)),
        ("position_embedding", (1, 65, 64)),
        ("relative_position_bias_table", (49, 3)),
    ):
        assert rule(("block", name), shape) is None


@pytest.mark.slow
def test_directions_of_small_cait_and_swin_have_per_head_norms():
    # Real zoo modules at toy sizes: the layouts attention_filters reads are the ones they use.
    images = jnp.zeros((1, 8, 8, 3), jnp.float32)
    for model, module, heads in (
        (
            CaiT(num_classes=3, embed_dim=12, depth=1, num_heads=3, class_depth=1, patch_size=4),
            ("CaiTBlock_0", "TalkingHeadsAttention_0"),
            3,
        ),
        (
            Swin(num_classes=3, embed_dim=8, depths=(1,), num_heads=(2,), window_size=2),
            ("SwinBlock_0", "WindowAttention_0"),
            2,
        ),
    ):
        # Random values in the model's shapes: the rule needs shapes and names, not an init.
        shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), images, train=False))
        rng = np.random.default_rng(0)
        params = jax.tree.map(
            lambda s, r=rng: jnp.asarray(r.normal(size=s.shape), jnp.float32), shapes["params"]
        )
        filters = analysis.attention_filters(model, images)
        direction = analysis.filter_normalized_direction(jax.random.key(1), params, filters=filters)
        kernel, moved = params, direction
        for name in (*module, "Dense_0", "kernel"):
            kernel, moved = kernel[name], moved[name]
        np.testing.assert_allclose(
            block_norms(moved, heads, 3), block_norms(kernel, heads, 3), rtol=1e-5
        )
