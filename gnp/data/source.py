"""What every data source hands the loader: two random-access splits, constants, augmentations.

A source is one module of ``gnp.data`` with a ``load(options: SourceOptions) -> Source``
function that it registers under its ``dataset.dataset_name`` (``@register_source("name")``);
``gnp.data.pipeline`` imports every module of the package, so no list names the sources.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gnp.data.augment import check_image_level
from gnp.registry import Registry


class Split(Protocol):
    """Images by index; ``load`` returns ``None`` for an unreadable image the source skips."""

    labels: np.ndarray  # int32 [N]

    def __len__(self) -> int: ...

    def load(self, index: int, transform: Callable[[Any], np.ndarray]) -> np.ndarray | None: ...


class Augment(Protocol):
    def train(self, image: Any, rng: np.random.Generator) -> np.ndarray: ...

    def eval(self, image: Any) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """A split held in memory: images [N, *image_shape] (uint8 pixels or float signals),
    labels int32 [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int, transform: Callable[[Any], np.ndarray]) -> np.ndarray:
        return transform(self.images[index])


@dataclasses.dataclass(frozen=True)
class Source:
    """A data set ready for the loader.

    ``mean``/``std`` are per-channel statistics of the training images in
    [0, 1] (of the raw values, for float inputs); ``image_shape`` is what the
    augmentations output: (H, W, C) images or (length, C) signals.
    ``input_dtype`` is what the augmentations output: uint8 pixels are divided by
    255 before normalizing, float signals are normalized as they are.
    ``validation`` is a held-out split for tuning, where the source has one
    (``use_test_set = False`` evaluates on it instead of ``test``).
    ``worth_workers`` says whether preparing a batch costs enough (decoding,
    AutoAugment) that worker processes repay their start-up, which decides
    what ``dataset.num_workers = -1`` means.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    image_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment
    worth_workers: bool
    validation: Split | None = None
    input_dtype: type = np.uint8


DEFAULT_DATA_DIR = "~/gnp_data"


@dataclasses.dataclass(frozen=True)
class SourceOptions:
    """The config keys a source reads, resolved once with their defaults."""

    data_dir: Path
    imagenet_train_dir: Path
    imagenet_val_dir: Path
    image_size: int  # 0: the source's own size (ImageNet: 224)
    image_level_augmentations: str
    strict: bool
    # The ``dataset.*`` keys that one source alone reads (its ``config_defaults``), resolved.
    own_keys: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> SourceOptions:
        """From a trainer config: ``dataset.*`` and the top-level ImageNet folders, which is
        where the released config keeps them."""
        dataset_config = config.dataset
        data_dir = Path(dataset_config.get("data_dir", "") or DEFAULT_DATA_DIR).expanduser()
        train_dir = config.get("imagenet_train_dir", "") or data_dir / "imagenet" / "train"
        val_dir = config.get("imagenet_val_dir", "") or data_dir / "imagenet" / "val"
        return cls(
            data_dir=data_dir,
            imagenet_train_dir=Path(train_dir).expanduser(),
            imagenet_val_dir=Path(val_dir).expanduser(),
            image_size=int(dataset_config.get("image_size", 0)),
            image_level_augmentations=check_image_level(
                dataset_config.get("image_level_augmentations", "basic")
            ),
            strict=bool(dataset_config.get("strict", False)),
            own_keys={
                key: type(default)(dataset_config.get(key, default))
                for key, default in source_config_defaults().items()
            },
        )

    def native_size(self, size: int, name: str) -> None:
        """In-memory sources keep their own resolution: resizing them would only blur."""
        if self.image_size not in (0, size):
            raise ValueError(
                f"{name} images are {size}x{size}; set dataset.image_size to 0 or {size}, "
                f"not {self.image_size}"
            )


Loader = Callable[[SourceOptions], Source]
_SOURCES: Registry[Loader] = Registry("data set")
_CONFIG_DEFAULTS: dict[str, Any] = {}


def register_source(
    name: str, config_defaults: Mapping[str, Any] | None = None
) -> Callable[[Loader], Loader]:
    """Decorator: ``@register_source("cifar10")`` makes a loader ``dataset.dataset_name``'s.

    ``config_defaults``: the ``dataset.*`` keys only this source reads, with their defaults;
    the base config takes them from here, and the loader finds them in ``options.own_keys``.
    """
    for key in config_defaults or {}:
        if key in _CONFIG_DEFAULTS:
            raise ValueError(f"config key dataset.{key} is declared by two data sets")
    _CONFIG_DEFAULTS.update(config_defaults or {})
    return _SOURCES.register(name)


def source_config_defaults() -> dict[str, Any]:
    """Every source's own ``dataset.*`` keys with their defaults."""
    return dict(_CONFIG_DEFAULTS)


source_names = _SOURCES.names


def load_source(name: str, options: SourceOptions) -> Source:
    """The source registered as ``name``."""
    return _SOURCES.get(name)(options)
