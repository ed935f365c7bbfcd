"""gnp.value_and_grad against independent truth: double backprop, hand formulas, float64."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import gnp

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes


def tanh_mlp(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["w2"] + params["b2"]
    return jnp.mean((out - y) ** 2)


def mlp_params(key, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (5, 7), dtype) * 0.5,
        "b1": jnp.zeros(7, dtype),
        "w2": jax.random.normal(k2, (7, 3), dtype) * 0.5,
        "b2": jax.random.normal(k3, (3,), dtype) * 0.1,
    }


def mlp_data(key, n=16, dtype=jnp.float64):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, 5), dtype), jax.random.normal(ky, (n, 3), dtype)


class SmallConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3), param_dtype=x.dtype)(x))
        x = jnp.tanh(nn.Conv(4, (3, 3), strides=2, param_dtype=x.dtype)(x))
        return nn.Dense(3, param_dtype=x.dtype)(x.reshape(x.shape[0], -1))


def conv_problem():
    x = jax.random.normal(jax.random.key(1), (6, 6, 6, 2), jnp.float64)
    y = jax.nn.one_hot(jnp.arange(6) % 3, 3, dtype=jnp.float64)
    model = SmallConvNet()
    params = model.init(jax.random.key(0), x)["params"]

    def loss(p, x, y):
        logits = model.apply({"params": p}, x)
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), axis=-1))

    return loss, params, (x, y)


def mlp_problem():
    return tanh_mlp, mlp_params(jax.random.key(0)), mlp_data(jax.random.key(1))


def tree_max_rel_error(a, b):
    num = max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    den = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
    return num / den


def norm(tree):
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


@pytest.mark.slow
@pytest.mark.parametrize("problem", [mlp_problem, conv_problem], ids=["tanh_mlp", "conv"])
def test_exact_equals_double_backprop(problem):
    with jax.enable_x64(True):
        loss, params, args = problem()
        r, alpha = 0.05, 0.8
        lam = r * alpha

        def penalized(p, *a):
            return loss(p, *a) + lam * norm(jax.grad(loss)(p, *a))

        expected = jax.grad(penalized)(params, *args)
        value, grads = gnp.value_and_grad(loss, r=r, alpha=alpha, method="exact")(params, *args)
        assert value == pytest.approx(float(loss(params, *args)), rel=1e-12)
        assert tree_max_rel_error(grads, expected) < 1e-9


def test_finite_difference_converges_linearly_to_exact():
    """λ fixed, α = λ/r: the finite difference errs by O(r): log-error vs log-r has slope 1."""
    with jax.enable_x64(True):
        loss, params, args = mlp_problem()
        lam = 0.01
        exact_grad = jax.jit(gnp.value_and_grad(loss, r=0.1, alpha=lam / 0.1, method="exact"))
        exact = exact_grad(params, *args)[1]
        # r traced: one program for every radius.
        fd_grad = jax.jit(lambda r, *a: gnp.value_and_grad(loss, r=r, alpha=lam / r)(*a)[1])
        radii = [1e-1, 1e-2, 1e-3]
        errors = []
        for r in radii:
            fd = fd_grad(jnp.float64(r), params, *args)
            errors.append(
                max(
                    float(jnp.max(jnp.abs(a - b)))
                    for a, b in zip(jax.tree.leaves(fd), jax.tree.leaves(exact), strict=True)
                )
            )
        slope = np.polyfit(np.log10(radii), np.log10(errors), 1)[0]
        assert 0.9 < slope < 1.1, (errors, slope)
        assert errors[-1] < errors[0] / 50


def test_alpha_one_is_sam_written_by_hand():
    with jax.enable_x64(True):
        loss, params, args = mlp_problem()
        r = 0.05
        g = jax.grad(loss)(params, *args)
        n = norm(g)
        perturbed = jax.tree.map(lambda p, gi: p + r * gi / n, params, g)
        expected = jax.grad(loss)(perturbed, *args)
        _, grads = gnp.value_and_grad(loss, r=r, alpha=1.0)(params, *args)
        assert tree_max_rel_error(grads, expected) < 1e-12


def test_gnp_mix_written_by_hand():
    with jax.enable_x64(True):
        loss, params, args = mlp_problem()
        r, alpha = 0.05, 0.7
        g1 = jax.grad(loss)(params, *args)
        n = norm(g1)
        g2 = jax.grad(loss)(jax.tree.map(lambda p, g: p + r * g / n, params, g1), *args)
        expected = jax.tree.map(lambda a, b: (1 - alpha) * a + alpha * b, g1, g2)
        expected_normalized = jax.tree.map(lambda a, b: (1 - alpha) * a / n + alpha * b, g1, g2)
        got = gnp.value_and_grad(loss, r=r, alpha=alpha)(params, *args)[1]
        got_normalized = gnp.value_and_grad(loss, r=r, alpha=alpha, normalize_reference=True)(
            params, *args
        )[1]
        assert tree_max_rel_error(got, expected) < 1e-12
        assert tree_max_rel_error(got_normalized, expected_normalized) < 1e-12


def test_asam_written_by_hand():
    with jax.enable_x64(True):
        loss, params, args = mlp_problem()
        r, alpha, eta = 0.5, 1.0, 0.05
        g = jax.grad(loss)(params, *args)
        t = jax.tree.map(lambda p: jnp.abs(p) + eta, params)
        tg_norm = norm(jax.tree.map(lambda ti, gi: ti * gi, t, g))
        eps = jax.tree.map(lambda ti, gi: r * ti**2 * gi / tg_norm, t, g)
        expected = jax.grad(loss)(jax.tree.map(jnp.add, params, eps), *args)
        got = gnp.value_and_grad(
            loss, r=r, alpha=alpha, perturbation="asam", eta=eta, asam_leaves="all"
        )(params, *args)[1]
        assert tree_max_rel_error(got, expected) < 1e-12


def test_asam_scales_weights_not_biases_as_the_original():
    """The original ASAM (SamsungLabs/ASAM asam.py) multiplies by |w| + η only where
    ``'weight' in name``: kernels and BatchNorm scales, not biases. Hand-computed case:
    θ = {kernel: [3, -1], bias: [2]}, g = {kernel: [1, 2], bias: [4]}, η = 0, r = 1:
    T·g = [3·1, 1·2, 1·4] = [3, 2, 4], ‖T·g‖ = √29, ε = T²g/‖Tg‖ = [9, 2, 4]/√29.
    Scaling every leaf: T·g = [3, 2, 8], ε = [9, 2, 16]/√77."""
    params = {"layer": {"kernel": jnp.array([3.0, -1.0]), "bias": jnp.array([2.0])}}
    grads = {"layer": {"kernel": jnp.array([1.0, 2.0]), "bias": jnp.array([4.0])}}
    weights = gnp.ascent_direction(params, grads, "asam", eta=0.0)
    every_leaf = gnp.ascent_direction(params, grads, "asam", eta=0.0, asam_leaves="all")
    np.testing.assert_allclose(weights["layer"]["kernel"], np.array([9, 2]) / np.sqrt(29), 1e-6)
    np.testing.assert_allclose(weights["layer"]["bias"], np.array([4]) / np.sqrt(29), 1e-6)
    np.testing.assert_allclose(every_leaf["layer"]["kernel"], np.array([9, 2]) / np.sqrt(77), 1e-6)
    np.testing.assert_allclose(every_leaf["layer"]["bias"], np.array([16]) / np.sqrt(77), 1e-6)
    with pytest.raises(ValueError, match="asam_leaves='all'"):
        gnp.ascent_direction({"w": jnp.ones(2)}, {"w": jnp.ones(2)}, "asam")


class BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(3)(jax.nn.relu(x))


def test_aux_and_batch_stats_come_from_the_clean_pass():
    model = BatchNormNet()
    x, y = mlp_data(jax.random.key(2), dtype=jnp.float32)
    variables = model.init(jax.random.key(3), x, train=False)

    def loss(params, batch_stats, x, y):
        out, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean((out - y) ** 2), updates["batch_stats"]

    (value, stats), _ = jax.jit(gnp.value_and_grad(loss, r=0.5, alpha=0.8, has_aux=True))(
        variables["params"], variables["batch_stats"], x, y
    )
    expected_value, expected_stats = jax.jit(loss)(
        variables["params"], variables["batch_stats"], x, y
    )
    assert float(value) == float(expected_value)
    for got, want in zip(jax.tree.leaves(stats), jax.tree.leaves(expected_stats), strict=True):
        np.testing.assert_array_equal(got, want)


def test_zero_gradient_gives_finite_output():
    params = {"w": jnp.zeros(3)}
    loss = lambda p: jnp.sum(p["w"] ** 2)  # minimum at 0: gradient exactly zero
    for kwargs in (
        {},
        {"perturbation": "asam", "asam_leaves": "all"},
        {"normalize_reference": True},
        {"method": "exact"},
    ):
        value, grads = gnp.value_and_grad(loss, r=0.1, alpha=0.8, **kwargs)(params)
        assert np.isfinite(float(value))
        np.testing.assert_array_equal(grads["w"], np.zeros(3))


@pytest.mark.parametrize("r,alpha", [(0.0, 0.8), (0.1, 0.0)])
def test_zero_r_or_alpha_is_bit_identical_to_jax(r, alpha):
    params = mlp_params(jax.random.key(0), jnp.float32)
    args = mlp_data(jax.random.key(1), dtype=jnp.float32)
    want_value, want = jax.jit(jax.value_and_grad(tanh_mlp))(params, *args)

    got_value, got = jax.jit(gnp.value_and_grad(tanh_mlp, r=r, alpha=alpha))(params, *args)

    @jax.jit
    def traced(p, r, alpha, *a):  # r and α as traced arrays, as GR warmup passes them
        return gnp.value_and_grad(tanh_mlp, r=r, alpha=alpha)(p, *a)

    traced_value, traced_grads = traced(params, jnp.float32(r), jnp.float32(alpha), *args)
    for v, g in ((got_value, got), (traced_value, traced_grads)):
        assert float(v) == float(want_value)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)


def test_traced_r_and_alpha_match_constants():
    params = mlp_params(jax.random.key(0), jnp.float32)
    args = mlp_data(jax.random.key(1), dtype=jnp.float32)
    constant = gnp.value_and_grad(tanh_mlp, r=0.05, alpha=0.8)(params, *args)[1]
    traced = jax.jit(lambda p, r, a: gnp.value_and_grad(tanh_mlp, r=r, alpha=a)(p, *args)[1])(
        params, 0.05, 0.8
    )
    assert tree_max_rel_error(traced, constant) < 1e-6


def test_bfloat16_params_train_and_stay_close_to_float32():
    params32 = mlp_params(jax.random.key(0), jnp.float32)
    args = mlp_data(jax.random.key(1), dtype=jnp.float32)
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params32)
    grad_fn = jax.jit(gnp.value_and_grad(tanh_mlp, r=0.05, alpha=0.8))
    _, g32 = grad_fn(params32, *args)
    _, g16 = grad_fn(params16, *args)
    assert all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(g16))
    assert tree_max_rel_error(jax.tree.map(lambda g: g.astype(jnp.float32), g16), g32) < 0.05
    assert np.isfinite(float(gnp.global_norm(g16)))


def test_global_norm_of_bfloat16_accumulates_in_float32():
    # A bfloat16 running sum of 10,000 ones stalls at 256 (8-bit mantissa): the norm would be 16.
    ones = {"w": jnp.ones((10_000,), jnp.bfloat16)}
    assert float(gnp.global_norm(ones)) == pytest.approx(100.0, rel=1e-6)


def test_invalid_options_are_clear_errors():
    with pytest.raises(ValueError, match="finite_difference"):
        gnp.value_and_grad(tanh_mlp, r=0.1, alpha=0.5, method="hessian")
    with pytest.raises(ValueError, match="asam"):
        gnp.value_and_grad(tanh_mlp, r=0.1, alpha=0.5, perturbation="fisher")
    with pytest.raises(ValueError, match="finite_difference"):
        gnp.value_and_grad(tanh_mlp, r=0.1, alpha=0.5, method="exact", perturbation="asam")
    with pytest.raises(ValueError, match="asam_leaves"):
        gnp.value_and_grad(tanh_mlp, r=0.1, alpha=0.5, asam_leaves="kernels")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"r": -0.05, "alpha": 0.8}, "r must be a finite number ≥ 0"),
        ({"r": 0.05, "alpha": -1.0}, "alpha must be a finite number ≥ 0"),
        ({"r": float("nan"), "alpha": 0.8}, "r must be"),
        ({"r": 0.05, "alpha": 0.8, "eta": -0.01}, "eta must be"),
    ],
)
def test_meaningless_coefficients_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gnp.value_and_grad(tanh_mlp, **kwargs)
    params = mlp_params(jax.random.key(0), jnp.float32)
    args = mlp_data(jax.random.key(1), dtype=jnp.float32)
    with pytest.raises(ValueError, match=match):  # concrete arrays are checked too
        gnp.penalized_gradient(
            jax.value_and_grad(lambda p: tanh_mlp(p, *args)),
            jax.grad(lambda p: tanh_mlp(p, *args)),
            params,
            **{k: jnp.asarray(v) for k, v in kwargs.items()},
        )


def test_alpha_above_one_extrapolates_past_sam():
    """α > 1 is accepted: g = g2 + (α − 1)·(g2 − g1)."""
    with jax.enable_x64(True):
        loss, params, args = mlp_problem()
        g1 = jax.grad(loss)(params, *args)
        sam = gnp.value_and_grad(loss, r=0.05, alpha=1.0)(params, *args)[1]
        got = gnp.value_and_grad(loss, r=0.05, alpha=1.5)(params, *args)[1]
        expected = jax.tree.map(lambda a, b: b + 0.5 * (b - a), g1, sam)
        assert tree_max_rel_error(got, expected) < 1e-12


def sharded_gradient(params, x, y, synced: bool):
    """The GNP gradient averaged over a 4-device data-parallel shard_map."""
    mesh = jax.make_mesh((4,), ("data",))
    grad_fn = gnp.value_and_grad(tanh_mlp, r=0.1, alpha=0.8, axis_name="data" if synced else None)

    def per_shard(p, x, y):
        # Replicated params would get gradients already summed over the axis: make them
        # per-device first, so each shard holds its local gradient as under pmap.
        p = jax.lax.pcast(p, "data", to="varying")
        return jax.lax.pmean(grad_fn(p, x, y)[1], "data")

    step = jax.jit(
        jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P())
    )
    batch = jax.sharding.NamedSharding(mesh, P("data"))
    replicated = jax.sharding.NamedSharding(mesh, P())
    return step(
        jax.device_put(params, replicated), jax.device_put(x, batch), jax.device_put(y, batch)
    )


def test_synced_perturbation_on_four_shards_equals_whole_batch():
    assert jax.device_count() >= 4
    with jax.enable_x64(True):
        params, (x, y) = mlp_params(jax.random.key(0)), mlp_data(jax.random.key(1))
        whole = gnp.value_and_grad(tanh_mlp, r=0.1, alpha=0.8)(params, x, y)[1]
        got = sharded_gradient(params, x, y, synced=True)
        assert tree_max_rel_error(got, whole) < 1e-12


def test_unsynced_perturbation_is_mean_of_per_shard_gradients():
    with jax.enable_x64(True):
        params, (x, y) = mlp_params(jax.random.key(0)), mlp_data(jax.random.key(1))
        grad_fn = gnp.value_and_grad(tanh_mlp, r=0.1, alpha=0.8)
        shards = [grad_fn(params, x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4])[1] for i in range(4)]
        expected = jax.tree.map(lambda *g: sum(g) / 4, *shards)
        whole = gnp.value_and_grad(tanh_mlp, r=0.1, alpha=0.8)(params, x, y)[1]
        got = sharded_gradient(params, x, y, synced=False)
        assert tree_max_rel_error(got, expected) < 1e-12
        assert tree_max_rel_error(got, whole) > 1e-6  # m-sharpness really differs


# The sharpness diagnostics, on a least-squares model whose two passes are closed forms.


def least_squares(params, x, y):
    return 0.5 * jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def least_squares_diagnostics(params, x, y, r):
    """L(θ + ε) − L(θ), cos(g1, g2) and ‖g2‖ from the formulas, in numpy float64."""
    x, y = np.asarray(x), np.asarray(y)
    w, b = np.asarray(params["w"]), float(params["b"])

    def loss_and_gradient(w, b):
        residual = x @ w + b - y
        return 0.5 * np.mean(residual**2), np.append(x.T @ residual, residual.sum()) / len(y)

    loss1, g1 = loss_and_gradient(w, b)
    eps = r * g1 / np.linalg.norm(g1)
    loss2, g2 = loss_and_gradient(w + eps[:-1], b + eps[-1])
    cosine = g1 @ g2 / (np.linalg.norm(g1) * np.linalg.norm(g2))
    return loss2 - loss1, cosine, np.linalg.norm(g2)


def least_squares_problem():
    x, y = mlp_data(jax.random.key(3), n=12)
    params = {"w": jax.random.normal(jax.random.key(4), (5,), jnp.float64), "b": jnp.float64(0.3)}
    return params, x, y[:, 0]


def test_diagnostics_match_the_closed_form_and_leave_the_gradient_bit_for_bit():
    with jax.enable_x64(True):
        params, x, y = least_squares_problem()
        for r, alpha in [(0.1, 0.8), (0.5, 1.0)]:
            default = jax.jit(gnp.value_and_grad(least_squares, r=r, alpha=alpha))
            diagnosed = jax.jit(
                gnp.value_and_grad(least_squares, r=r, alpha=alpha, with_diagnostics=True)
            )
            value, grads, got = diagnosed(params, x, y)
            np.testing.assert_allclose(got, least_squares_diagnostics(params, x, y, r), rtol=1e-12)
            assert got.gradient_cosine < 1 - 1e-4  # the gradient really turns
            same_value, same_grads = default(params, x, y)
            assert value == same_value
            for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(same_grads), strict=True):
                np.testing.assert_array_equal(a, b)


def test_diagnostics_with_aux_clean_grad_and_a_zero_radius():
    with jax.enable_x64(True):
        params, x, y = least_squares_problem()

        def with_aux(p, x, y):
            return least_squares(p, x, y), {"rows": len(y)}

        grad_fn = gnp.value_and_grad(
            with_aux, r=0.1, alpha=0.8, has_aux=True, return_clean_grad=True, with_diagnostics=True
        )
        (_, aux), _, clean, got = grad_fn(params, x, y)
        assert aux == {"rows": 12}
        np.testing.assert_allclose(got, least_squares_diagnostics(params, x, y, 0.1), rtol=1e-12)
        # A traced r = 0 takes no second pass: the values at r = 0.
        grad_fn = jax.jit(
            lambda p, r: gnp.value_and_grad(least_squares, r=r, alpha=0.8, with_diagnostics=True)(
                p, x, y
            )
        )
        sharpness, cosine, norm = grad_fn(params, 0.0)[2]
        assert sharpness == 0 and cosine == pytest.approx(1, abs=1e-12)
        assert norm == pytest.approx(float(gnp.global_norm(clean)), rel=1e-12)
        with pytest.raises(ValueError, match="method='finite_difference'"):
            gnp.value_and_grad(
                least_squares, r=0.1, alpha=0.8, method="exact", with_diagnostics=True
            )(params, x, y)


def test_synced_diagnostics_on_four_shards_are_the_whole_batch_ones():
    with jax.enable_x64(True):
        params, x, y = least_squares_problem()
        mesh = jax.make_mesh((4,), ("data",))
        grad_fn = gnp.value_and_grad(
            least_squares, r=0.1, alpha=0.8, axis_name="data", with_diagnostics=True
        )

        def per_shard(p, x, y):
            return grad_fn(jax.lax.pcast(p, "data", to="varying"), x, y)[2]

        step = jax.jit(
            jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P())
        )
        batch = jax.sharding.NamedSharding(mesh, P("data"))
        got = step(params, jax.device_put(x, batch), jax.device_put(y, batch))
        np.testing.assert_allclose(got, least_squares_diagnostics(params, x, y, 0.1), rtol=1e-12)
