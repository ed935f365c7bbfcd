"""gnp.efficient (reuse after LookSAM, direction after MSAM) against GNP and hand formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P
from test_gradient import mlp_data, mlp_params, tanh_mlp, tree_max_rel_error

import gnp
from gnp import efficient

pytestmark = pytest.mark.compile_bound  # conftest: its compiles skip XLA's expensive passes

R, ALPHA = 0.1, 0.8


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def unflat(vector, like):
    leaves, sizes = jax.tree.leaves(like), [x.size for x in jax.tree.leaves(like)]
    parts = np.split(vector, np.cumsum(sizes)[:-1])
    return jax.tree.unflatten(
        jax.tree.structure(like), [p.reshape(x.shape) for p, x in zip(parts, leaves, strict=True)]
    )


def batches(count):
    return [mlp_data(jax.random.key(10 + i)) for i in range(count)]


def test_period_one_is_exactly_gnp():
    params = mlp_params(jax.random.key(0), jnp.float32)
    x, y = mlp_data(jax.random.key(1), dtype=jnp.float32)
    want_value, want = jax.jit(gnp.value_and_grad(tanh_mlp, r=R, alpha=ALPHA))(params, x, y)
    reuse = jax.jit(efficient.reuse_value_and_grad(tanh_mlp, r=R, alpha=ALPHA, period=1))
    state = efficient.reuse_init(params)
    for _ in range(2):  # every step is a full one
        value, grads, state = reuse(params, state, x, y)
        assert float(value) == float(want_value)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)


def test_reuse_steps_follow_the_hand_formula():
    """Full step at count 0: v = (g2 − g1)⊥g1 / ‖·‖, s = ‖(g2 − g1)⊥g1‖/‖g1‖ (numpy float64).
    Counts 1 and 2 (period 3): g = g1 + α·s·‖g1‖·v with the new batch's g1. Count 3: full."""
    with jax.enable_x64(True):
        params = mlp_params(jax.random.key(0))
        data = batches(4)
        grad_fn = efficient.reuse_value_and_grad(tanh_mlp, r=R, alpha=ALPHA, period=3)
        gnp_fn = gnp.value_and_grad(tanh_mlp, r=R, alpha=ALPHA)
        state = efficient.reuse_init(params)
        _, grads, state = grad_fn(params, state, *data[0])
        assert tree_max_rel_error(grads, gnp_fn(params, *data[0])[1]) < 1e-12

        g1 = flat(jax.grad(tanh_mlp)(params, *data[0]))
        g2 = flat(
            jax.grad(tanh_mlp)(unflat(flat(params) + R * g1 / np.linalg.norm(g1), params), *data[0])
        )
        d = g2 - g1
        orth = d - (d @ g1) / (g1 @ g1) * g1
        v, s = orth / np.linalg.norm(orth), np.linalg.norm(orth) / np.linalg.norm(g1)
        np.testing.assert_allclose(flat(state.orthogonal), v, rtol=1e-9, atol=1e-12)
        assert float(state.scale) == pytest.approx(s, rel=1e-6)

        for batch in data[1:3]:
            _, grads, state = grad_fn(params, state, *batch)
            g1_new = flat(jax.grad(tanh_mlp)(params, *batch))
            want = g1_new + ALPHA * float(state.scale) * np.linalg.norm(g1_new) * v
            np.testing.assert_allclose(flat(grads), want, rtol=1e-9, atol=1e-12)
        _, grads, state = grad_fn(params, state, *data[3])
        assert int(state.count) == 4
        assert tree_max_rel_error(grads, gnp_fn(params, *data[3])[1]) < 1e-12


def test_fixed_orthogonal_scale_is_looksam():
    """LookSAM (α = 1) as written in MSAM's repository (optimizer/looksam.py):
    g_v = g_s − ⟨g_s, g⟩/‖g‖²·g, normalized; between full steps g + α_look·‖g‖·g_v."""
    with jax.enable_x64(True):
        params = mlp_params(jax.random.key(0))
        (x0, y0), (x1, y1) = batches(2)
        grad_fn = efficient.reuse_value_and_grad(
            tanh_mlp, r=R, alpha=1.0, period=2, orthogonal_scale=0.7
        )
        state = efficient.reuse_init(params)
        _, _, state = grad_fn(params, state, x0, y0)
        _, grads, _ = grad_fn(params, state, x1, y1)
        g = flat(jax.grad(tanh_mlp)(params, x0, y0))
        g_s = flat(gnp.value_and_grad(tanh_mlp, r=R, alpha=1.0)(params, x0, y0)[1])
        g_v = g_s - (g_s @ g) / (g @ g) * g
        g_v /= np.linalg.norm(g_v)
        g_new = flat(jax.grad(tanh_mlp)(params, x1, y1))
        np.testing.assert_allclose(
            flat(grads), g_new + 0.7 * np.linalg.norm(g_new) * g_v, rtol=1e-9
        )


@pytest.mark.parametrize("alpha", [0.8, 1.0])
def test_direction_equal_to_g1_is_exactly_gnp(alpha):
    with jax.enable_x64(True):
        params, (x, y) = mlp_params(jax.random.key(0)), mlp_data(jax.random.key(1))
        g1 = jax.grad(tanh_mlp)(params, x, y)
        value, grads = efficient.direction_value_and_grad(tanh_mlp, r=R, alpha=alpha)(
            params, g1, x, y
        )
        want_value, want = gnp.value_and_grad(tanh_mlp, r=R, alpha=alpha)(params, x, y)
        assert tree_max_rel_error(grads, want) < 1e-12
        if alpha == 1.0:  # one pass: the value is the perturbed point's
            point = jax.tree.map(
                lambda p, g: p + R * g / jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(g1))),
                params,
                g1,
            )
            assert float(value) == pytest.approx(float(tanh_mlp(point, x, y)), rel=1e-12)
        else:
            assert float(value) == float(want_value)


def test_msam_direction_is_minus_the_momentum():
    """MSAM (optimizer/msam.py): the gradient at θ − ρ·v/‖v‖, v the SGD momentum buffer."""
    with jax.enable_x64(True):
        params, (x, y) = mlp_params(jax.random.key(0)), mlp_data(jax.random.key(1))
        optimizer = optax.sgd(0.1, momentum=0.9)
        opt_state = optimizer.init(params)
        _, opt_state = optimizer.update(jax.grad(tanh_mlp)(params, *batches(1)[0]), opt_state)
        momentum = opt_state[0].trace
        direction = jax.tree.map(jnp.negative, momentum)
        _, grads = efficient.direction_value_and_grad(tanh_mlp, r=R, alpha=1.0)(
            params, direction, x, y
        )
        v = flat(momentum)
        point = unflat(flat(params) - R * v / np.linalg.norm(v), params)
        np.testing.assert_allclose(flat(grads), flat(jax.grad(tanh_mlp)(point, x, y)), rtol=1e-12)


def dot_count(jaxpr) -> int:
    """dot_general equations, walking into sub-jaxprs (jit, custom rules)."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "dot_general"
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and eqn.primitive.name != "cond":
                    count += dot_count(inner)
    return count


def branch_dot_counts(jaxpr):
    conds = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "cond"]
    assert len(conds) == 1
    return sorted(dot_count(branch.jaxpr) for branch in conds[0].params["branches"])


def test_gradient_passes_in_the_traced_program():
    """A pass of this MLP is 5 dot products, 2 forward and 3 backward (dot_count of
    jax.value_and_grad); GNP is 2 passes; MSAM at α = 1 is 1; reuse compiles a full
    branch (2 passes) and a reuse branch (1 pass) under one cond, of which one runs."""
    params = mlp_params(jax.random.key(0), jnp.float32)
    x, y = mlp_data(jax.random.key(1), dtype=jnp.float32)

    def count(fn, *args):
        return dot_count(jax.make_jaxpr(fn)(*args).jaxpr)

    one_pass = count(jax.value_and_grad(tanh_mlp), params, x, y)
    assert one_pass > 0
    assert count(gnp.value_and_grad(tanh_mlp, r=R, alpha=ALPHA), params, x, y) == 2 * one_pass
    direction = efficient.direction_value_and_grad(tanh_mlp, r=R, alpha=1.0)
    assert count(direction, params, params, x, y) == one_pass
    direction = efficient.direction_value_and_grad(tanh_mlp, r=R, alpha=ALPHA)
    assert count(direction, params, params, x, y) == 2 * one_pass
    reuse = efficient.reuse_value_and_grad(tanh_mlp, r=R, alpha=ALPHA, period=5)
    jaxpr = jax.make_jaxpr(reuse)(params, efficient.reuse_init(params), x, y).jaxpr
    assert branch_dot_counts(jaxpr) == [one_pass, 2 * one_pass]


def test_synced_reuse_on_four_shards_equals_the_whole_batch():
    """With axis_name the state is built from averaged gradients: replicated, and the
    result equals one device with the whole batch, over a full and a reuse step."""
    with jax.enable_x64(True):
        params = mlp_params(jax.random.key(0))
        data = batches(2)
        mesh = jax.make_mesh((4,), ("data",))
        sharded = efficient.reuse_value_and_grad(
            tanh_mlp, r=R, alpha=ALPHA, period=2, axis_name="data"
        )

        def per_shard(p, state, x, y):  # check_vma=False: per-device gradients, as pmap
            _, grads, state = sharded(p, state, x, y)
            return jax.lax.pmean(grads, "data"), state

        step = jax.jit(
            jax.shard_map(
                per_shard,
                mesh=mesh,
                in_specs=(P(), P(), P("data"), P("data")),
                out_specs=(P(), P()),
                check_vma=False,
            )
        )
        whole = efficient.reuse_value_and_grad(tanh_mlp, r=R, alpha=ALPHA, period=2)
        state4 = state1 = efficient.reuse_init(params)
        rows = jax.sharding.NamedSharding(mesh, P("data"))
        for x, y in data:
            grads4, state4 = step(params, state4, *jax.device_put((x, y), rows))
            _, grads1, state1 = whole(params, state1, x, y)
            assert tree_max_rel_error(grads4, grads1) < 1e-9
        np.testing.assert_allclose(flat(state4.orthogonal), flat(state1.orthogonal), atol=1e-9)


def test_bad_period_and_scale_are_clear_errors():
    params = mlp_params(jax.random.key(0), jnp.float32)
    x, y = mlp_data(jax.random.key(1), dtype=jnp.float32)
    state = efficient.reuse_init(params)
    with pytest.raises(ValueError, match="period must be an integer ≥ 1"):
        efficient.reuse_value_and_grad(tanh_mlp, r=R, alpha=ALPHA, period=0)(params, state, x, y)
    with pytest.raises(ValueError, match="orthogonal_scale must be ≥ 0"):
        efficient.reuse_value_and_grad(tanh_mlp, r=R, alpha=ALPHA, period=2, orthogonal_scale=-1.0)(
            params, state, x, y
        )
    with pytest.raises(ValueError, match="alpha must be"):
        efficient.direction_value_and_grad(tanh_mlp, r=R, alpha=-0.5)
