"""Filter-normalized directions (Li et al. 2018) and the filters of each layer type in the zoo.

Li et al. ("Visualizing the Loss Landscape of Neural Nets") showed that a raw
random direction makes sharpness incomparable between networks: a ReLU
network's function does not change when a layer's weights are scaled up and the
next one's down, but its landscape along a fixed direction does. *Filter
normalization* rescales each filter of the direction to the norm of the matching
filter of θ, so a step of 1 moves every filter by its own size.

A filter is the group of weights such a rescaling acts on: a conv's output
channel, a Dense layer's output unit. In attention the group is one head of one
projection: scaling head h's query weights by c and its key weights by 1/c (or
rotating both) leaves the attention unchanged, so each (projection, head) block
of a q/k/v kernel is one filter, never a unit shared across heads.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnp.analysis.data import PyTree

Path = tuple[str, ...]

# Leaves that are not a layer's kernel, by their Flax name: biases (DenseGeneral's have the
# output's shape, (heads, head_dim)), norm scales, LayerScale gains, embeddings and Swin's
# relative position bias. They shift or rescale activations rather than filter them.
NON_KERNEL_NAMES = frozenset(
    {"bias", "scale", "gamma", "cls", "position_embedding", "relative_position_bias_table"}
)
# Flax attention projects with ``DenseGeneral`` kernels (in, heads, head_dim).
_PER_HEAD_PROJECTIONS = frozenset({"query", "key", "value"})


@dataclasses.dataclass(frozen=True)
class Filters:
    """How a kernel splits into filters: reshaped to ``shape``, each index along ``axes`` is one.

    ``Filters((3, 3, 16, 32), (3,))`` is a conv kernel's 32 output channels;
    ``Filters((64, 3, 4, 16), (1, 2))`` is a fused (64, 192) q/k/v kernel of 4
    heads of 16 units, one filter per projection and head.
    """

    shape: tuple[int, ...]
    axes: tuple[int, ...]


def leaf_path(path: tuple[Any, ...]) -> Path:
    """A ``tree_flatten_with_path`` path as plain names: ``("Dense_0", "kernel")``."""
    return tuple(
        str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))
        for entry in path
    )


def default_filters(path: Path, shape: tuple[int, ...], filter_axis: int = -1) -> Filters | None:
    """The filters of a leaf by its name and shape; ``None`` for a leaf that is not a kernel.

    - rank ≤ 1, or a name in ``NON_KERNEL_NAMES``: not a kernel.
    - ``query``/``key``/``value`` kernels of rank 3 (Flax attention, (in, heads,
      head_dim)): one filter per head.
    - any other leaf of rank ≥ 2 (Conv HWIO, Dense (in, out), an attention output
      (heads, head_dim, out)): one filter per index of ``filter_axis``, the output
      unit or channel.
    """
    rank = len(shape)
    if rank <= 1 or (path and path[-1] in NON_KERNEL_NAMES):
        return None
    if rank == 3 and len(path) >= 2 and path[-2] in _PER_HEAD_PROJECTIONS:
        return Filters(shape, (1,))
    return Filters(shape, (filter_axis % rank,))


def _normalize_filters(direction: jax.Array, weight: jax.Array, filters: Filters) -> jax.Array:
    """Each filter of ``direction`` gets the norm of ``weight``'s matching filter."""
    direction, weight = direction.reshape(filters.shape), weight.reshape(filters.shape)
    axes = tuple(a for a in range(len(filters.shape)) if a not in filters.axes)
    direction_norm = jnp.sqrt(jnp.sum(jnp.square(direction), axis=axes, keepdims=True))
    weight_norm = jnp.sqrt(jnp.sum(jnp.square(weight), axis=axes, keepdims=True))
    return direction * weight_norm / jnp.where(direction_norm > 0, direction_norm, 1)


def filter_normalized_direction(
    key: jax.Array,
    params: PyTree,
    *,
    filter_axis: int = -1,
    include_non_kernels: bool = False,
    filters: Mapping[Path, Filters] | None = None,
) -> PyTree:
    """A Gaussian direction with each filter rescaled to the norm of θ's filter (Li et al. 2018).

    Args:
      key: the PRNG key; the direction is a function of it and of θ's shapes.
      params: θ, any pytree of arrays.
      filter_axis: the output-channel axis of a plain kernel (``default_filters``).
        Flax kernels keep it last (Conv ``HWIO``, Dense ``(in, out)``);
        PyTorch-layout weights use 0.
      include_non_kernels: leaves that are not kernels (``default_filters``:
        biases, norm scales and offsets, embeddings) get a zero direction by
        default, as in the paper; with True each is one filter, a random vector
        of the leaf's norm.
      filters: the filters of particular leaves by path, overriding the default
        rule: ``attention_filters`` gives them for fused q/k/v kernels, whose
        heads the shapes do not show.
    """
    overrides = dict(filters or {})
    layouts = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names, shape = leaf_path(path), tuple(jnp.shape(leaf))
        layout = overrides.get(names) or default_filters(names, shape, filter_axis)
        if layout is None and include_non_kernels:
            layout = Filters((int(np.prod(shape)), 1), (1,))  # The whole leaf is one filter.
        layouts.append(layout)
    return _direction(key, params, tuple(layouts))


# One compiled program for the whole tree: leaf by leaf, eager operations compile a dozen small
# kernels per shape, which dominates on a network's many leaves.
@functools.partial(jax.jit, static_argnums=2)
def _direction(key: jax.Array, params: PyTree, layouts: tuple[Filters | None, ...]) -> PyTree:
    """``None`` in ``layouts`` is a zero direction for that leaf."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    directions = []
    for leaf_key, weight, layout in zip(keys, leaves, layouts, strict=True):
        weight = jnp.asarray(weight)
        if layout is None:
            directions.append(jnp.zeros_like(weight))
            continue
        dtype = jnp.promote_types(weight.dtype, jnp.float32)
        noise = jax.random.normal(leaf_key, weight.shape, dtype)
        scaled = _normalize_filters(noise, weight.astype(dtype), layout).reshape(weight.shape)
        directions.append(scaled.astype(weight.dtype))
    return jax.tree.unflatten(treedef, directions)


# The zoo's attention modules whose q/k/v kernels do not show their heads: each module's
# q/k/v kernels by child name, and how many projections (q, k, v) each holds side by side.
_QKV_KERNELS: dict[str, dict[str, int]] = {
    "TalkingHeadsAttention": {"Dense_0": 3},  # CaiT: Dense(3·features), split q, k, v
    "WindowAttention": {"Dense_0": 3},  # Swin: the same layout
    "ClassAttention": {"Dense_0": 1, "Dense_1": 1, "Dense_2": 1},  # CaiT: q, k, v apart
}


def attention_filters(model: nn.Module, inputs: jax.ShapeDtypeStruct) -> dict[Path, Filters]:
    """One filter per (projection, head) of the zoo's CaiT and Swin q/k/v kernels, by path.

    Those kernels are plain Dense kernels ``(in, projections·heads·head_dim)``
    whose head count lives in the module, not the shape: this initializes
    ``model`` abstractly (``jax.eval_shape``, no arithmetic) on ``inputs``'
    shape and reads each attention module's ``num_heads``. Pass the result as
    ``filter_normalized_direction(..., filters=...)``. ViT needs none: Flax's
    attention kernels ``(in, heads, head_dim)`` show their heads, and
    ``default_filters`` splits them.
    """
    heads: dict[Path, tuple[str, int]] = {}

    def record(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        kind = type(context.module).__name__
        if context.method_name == "__call__" and kind in _QKV_KERNELS:
            heads[context.module.path] = (kind, context.module.num_heads)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), inputs)
    shapes = {
        leaf_path(path): leaf.shape
        for path, leaf in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    }
    filters = {}
    for module_path, (kind, num_heads) in heads.items():
        for child, projections in _QKV_KERNELS[kind].items():
            path = (*module_path, child, "kernel")
            fan_in, fan_out = shapes[path]
            head_dim = fan_out // (projections * num_heads)
            filters[path] = Filters((fan_in, projections, num_heads, head_dim), (1, 2))
    return filters
