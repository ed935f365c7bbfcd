"""The loader the trainer uses: deterministic, reshuffled each epoch, checkpointable.

Batch formats (host-local numpy arrays; the trainer shards them over devices):
  train: ``{"image": float32 [B, *image_shape], "label": float32 [B, num_classes]}``
         soft labels, so batch-level mixing (mixup, ...) reaches the loss;
  eval:  ``{"image": float32 [B, *image_shape], "label": int32 [B], "mask": bool [B]}``
         where the last batch is padded and ``mask`` marks the real samples.
``image_shape`` is (H, W, C) for images, (length, C) for 1-D signals (MNIST-1D).

Every random draw is seeded from ``(seeds, what, global step, row of the global
batch)``, never from a running generator: a batch depends only on its step, so
a grain iterator restored with ``set_state`` continues with exactly the batches
of the uninterrupted run, and the rows each process (or worker) prepares are
the rows the one-process run would have prepared.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pkgutil
import signal
from typing import Any

import grain
import numpy as np
from absl import flags

from gnp.choices import check_choice
from gnp.data import label_noise, mixing, validation
from gnp.data.source import Source, SourceOptions, load_source, source_names

# Every module of the package, so that each source module registers its data set names.
for _module in pkgutil.iter_modules([os.path.dirname(__file__)]):
    importlib.import_module(f"{__package__}.{_module.name}")

# Keep the seeds of different kinds of draw apart; each kind always uses the same number of
# indices, since numpy's SeedSequence treats trailing zeros as absent.
_ORDER, _SAMPLE, _MIX, _CUTOUT, _LABEL_NOISE, _VALIDATION_NOISE = range(6)
_MAX_AUTO_WORKERS = 16


def _cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _rng(seed: int, kind: int, *indices: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, *indices])


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the trainer need to know about a data set."""

    name: str
    num_classes: int
    image_shape: tuple[int, ...]
    num_train: int
    num_test: int


class InputPipeline:
    """Train and eval batches of one data set for this process.

    ``batch_size`` is the batch over all processes; this process sees rows
    ``[process_index * local, (process_index + 1) * local)`` of each.
    ``num_workers > 0`` prepares training batches in that many grain worker
    processes; evaluation uses threads, since decoding and resizing release
    the GIL and worker start-up at every evaluation would cost more.
    """

    def __init__(
        self,
        source: Source,
        *,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        batch_level_augmentations: str = "none",
        mixup_alpha: float = 1.0,
        cutout_size: int = 0,
        cutout_mode: str = "batch",
        num_workers: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        num_train = len(source.train)
        if batch_size > num_train:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {num_train} training images of "
                f"{source.name}; lower --config.batch_size"
            )
        for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if size <= 0 or size % process_count:
                raise ValueError(
                    f"{name} {size} must be positive and divide by the {process_count} processes"
                )
        self.source = source
        self.info = DatasetInfo(
            name=source.name,
            num_classes=source.num_classes,
            image_shape=source.image_shape,
            num_train=num_train,
            num_test=len(source.test),
        )
        self.global_batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        # Both names were checked by build_input_pipeline, before any data was read.
        self.batch_level_augmentations = batch_level_augmentations
        self.mixup_alpha = mixup_alpha
        # Cutout's 16 px suits 32 px images; keep the same fraction at other sizes.
        self.cutout_size = cutout_size or max(1, round(16 * source.image_shape[0] / 32))
        self.cutout_mode = cutout_mode
        if num_workers < 0:
            num_workers = min(_cpu_count(), _MAX_AUTO_WORKERS) if source.worth_workers else 0
        self.num_workers = num_workers
        self.process_index = process_index
        self.process_count = process_count
        self.mean = np.asarray(source.mean, dtype=np.float32)
        self.std = np.asarray(source.std, dtype=np.float32)
        integer = np.issubdtype(source.input_dtype, np.integer)
        full_scale = float(np.iinfo(source.input_dtype).max) if integer else 1.0
        self._scale = 1.0 / (full_scale * self.std)
        self._offset = self.mean / self.std
        self._order: tuple[int, np.ndarray] | None = None
        self._train_iterators: list[grain.DatasetIterator] = []

    @property
    def steps_per_epoch(self) -> int:
        return self.info.num_train // self.global_batch_size

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    @property
    def local_eval_batch_size(self) -> int:
        return self.eval_batch_size // self.process_count

    @property
    def num_eval_batches(self) -> int:
        return -(-self.info.num_test // self.eval_batch_size)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 pixels to ``(x / 255 - mean) / std`` (float signals: ``(x - mean) / std``) in
        two passes without temporaries (ImageNet batches are large enough for that to matter)."""
        out = np.multiply(images, self._scale, dtype=np.float32)
        out -= self._offset
        return out

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """This epoch's permutation of the training set; computed once per epoch per worker."""
        cached = self._order
        if cached is None or cached[0] != epoch:
            cached = (epoch, _rng(self.seed, _ORDER, epoch).permutation(self.info.num_train))
            self._order = cached
        return cached[1]

    def _train_sample(self, step: int, row: int, index: int) -> tuple[np.ndarray, int]:
        """Row ``row`` of global batch ``step``; an unreadable image gives way to the next one."""
        rng = _rng(self.seed, _SAMPLE, step, row)
        split, transform = self.source.train, functools.partial(self.source.augment.train, rng=rng)
        for offset in range(len(split)):
            candidate = (index + offset) % len(split)
            image = split.load(candidate, transform)
            if image is not None:
                return image, int(split.labels[candidate])
        raise ValueError(f"no training image of {self.info.name} could be read")

    def _stack(self, samples: dict[int, tuple[np.ndarray, int]], rows: np.ndarray) -> tuple:
        images = self.normalize(np.stack([samples[row][0] for row in rows]))
        labels = np.array([samples[row][1] for row in rows])
        return images, np.eye(self.info.num_classes, dtype=np.float32)[labels]

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch ``step`` (a pure function of the step)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        batch = self.global_batch_size
        indices = self._epoch_order(epoch)[position * batch : (position + 1) * batch]
        rows = np.arange(self.local_batch_size) + self.process_index * self.local_batch_size
        mix = mixing.uses_mixup(self.batch_level_augmentations)
        # Mixup pairs row j with row B-1-j, which may belong to another process: prepare it
        # here too; its draws are keyed by its row, so it comes out the same everywhere.
        needed = np.union1d(rows, batch - 1 - rows) if mix else rows
        samples = {int(r): self._train_sample(step, int(r), int(indices[r])) for r in needed}
        images, labels = self._stack(samples, rows)
        if mix:
            partner_images, partner_labels = self._stack(samples, batch - 1 - rows)
            weight = mixing.mixup_weight(self.mixup_alpha, _rng(self.seed, _MIX, step))
            images, labels = mixing.mixup(images, labels, partner_images, partner_labels, weight)
        if mixing.uses_cutout(self.batch_level_augmentations):
            if self.cutout_mode == "batch":  # one window for the whole global batch, as released
                images = mixing.cutout(images, self.cutout_size, _rng(self.seed, _CUTOUT, step))
            else:
                images = np.stack(
                    [
                        mixing.cutout(image, self.cutout_size, _rng(self.seed, _CUTOUT, step, r))
                        for image, r in zip(images, rows.tolist(), strict=True)
                    ]
                )
        return {"image": images, "label": labels}

    def eval_batch(self, batch_index: int) -> dict[str, np.ndarray]:
        """This process's slice of global eval batch ``batch_index``, padding masked out."""
        split, local = self.source.test, self.local_eval_batch_size
        positions = batch_index * self.eval_batch_size + self.process_index * local
        positions = positions + np.arange(local)
        mask = positions < len(split)
        images = np.zeros((local, *self.info.image_shape), dtype=self.source.input_dtype)
        for i in np.flatnonzero(mask):
            image = split.load(int(positions[i]), self.source.augment.eval)
            if image is None:  # unreadable: leave it out of the metrics
                mask[i] = False
            else:
                images[i] = image
        labels = np.where(mask, split.labels[np.minimum(positions, len(split) - 1)], 0)
        return {"image": self.normalize(images), "label": labels.astype(np.int32), "mask": mask}

    # grain passes (index, element); the element is the index again. Bound methods, unlike
    # lambdas, pickle into worker processes.
    def _indexed_train_batch(self, step: int, _: int) -> dict[str, np.ndarray]:
        return self.train_batch(step)

    def _indexed_eval_batch(self, batch_index: int, _: int) -> dict[str, np.ndarray]:
        return self.eval_batch(batch_index)

    def _iterator(
        self, dataset: grain.MapDataset, num_workers: int, num_threads: int
    ) -> grain.DatasetIterator:
        # A small buffer: elements are whole batches, and 500 ImageNet batches would not fit.
        options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
        iter_dataset = dataset.to_iter_dataset(options)
        if num_workers > 0:
            # grain's worker start-up reads absl flags; outside ``absl.app`` (notebooks, tests,
            # scripts) nothing has parsed them, and grain would fail on the first batch.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            _start_resource_tracker()
            iter_dataset = iter_dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=num_workers),
                worker_init_fn=_ignore_interrupts,
            )
        return iter(iter_dataset)

    def train_iterator(self) -> grain.DatasetIterator:
        """Endless batches, reshuffled every epoch; ``get_state``/``set_state`` resume it."""
        steps = grain.MapDataset.range(self.steps_per_epoch).repeat(None)
        dataset = steps.map_with_index(self._indexed_train_batch)
        threads = 1 if self.num_workers else min(8, _cpu_count())
        iterator = self._iterator(dataset, self.num_workers, threads)
        self._train_iterators.append(iterator)
        return iterator

    def __getstate__(self) -> dict[str, Any]:
        """What a worker process receives (the batch functions are bound methods): not the
        iterators that read from the workers."""
        return self.__dict__ | {"_train_iterators": []}

    def close(self) -> None:
        """Stops the train iterators' workers and frees the batches they hold in shared
        memory. Left to garbage collection at exit, grain's clean-up finds its queues closed
        (``OSError: handle is closed``) and the batches leak (``resource_tracker: There appear
        to be N leaked shared_memory objects``)."""
        while self._train_iterators:
            self._train_iterators.pop().close()
        if self.num_workers:
            _finish_shared_memory_deletes()

    def eval_batches(self) -> grain.DatasetIterator:
        """Every test sample exactly once; the last batch padded, with ``mask``."""
        batches = grain.MapDataset.range(self.num_eval_batches)
        dataset = batches.map_with_index(self._indexed_eval_batch)
        return self._iterator(dataset, 0, min(8, _cpu_count()))


# What a terminal sends to every process of its group (Ctrl-C, a closed terminal or ssh
# session); the trainer answers them: it saves, then stops its workers.
_GROUP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGHUP") if hasattr(signal, name)
)


def _ignore_interrupts(worker_index: int, worker_count: int) -> None:
    """In each worker: its own KeyboardInterrupt would print a traceback, and its death by
    SIGHUP would lose the batches it holds in shared memory."""
    del worker_index, worker_count
    for signum in _GROUP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _finish_shared_memory_deletes() -> None:
    """Waits for grain's background deletes of the batches just dropped (it unlinks their
    shared memory in a thread of its own, which a process that exits next does not wait for),
    and deletes later ones at once. grain has no public call for this: its pool is looked up,
    and if a later grain has none, nothing is done."""
    import gc

    from grain._src.python.ipc.shared_memory_array import SharedMemoryArray

    gc.collect()  # the batches still referenced only from cycles
    pool = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if pool is not None and hasattr(SharedMemoryArray, "_disable_async_del"):
        SharedMemoryArray._disable_async_del()
        pool.close()
        pool.join()


def _start_resource_tracker() -> None:
    """multiprocessing's resource tracker (it frees the workers' shared memory) started with
    SIGHUP blocked: it ignores Ctrl-C on its own but dies of a SIGHUP to the group, and the
    one relaunched in its place prints a KeyError traceback for every block it never saw."""
    from multiprocessing import resource_tracker

    if not hasattr(signal, "pthread_sigmask") or not hasattr(signal, "SIGHUP"):
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def dataset_names() -> list[str]:
    return source_names()


def build_input_pipeline(
    config: Any, *, process_index: int = 0, process_count: int = 1
) -> InputPipeline:
    """The pipeline the config names (``config.dataset.dataset_name``)."""
    dataset_config = config.dataset
    name = dataset_config.dataset_name
    check_choice(name, dataset_names(), "dataset.dataset_name")
    # Check every name before loading: scanning ImageNet takes a while.
    batch_level = mixing.check_batch_level(dataset_config.get("batch_level_augmentations", "none"))
    noise = label_noise.check_fraction(dataset_config.get("label_noise", 0.0))
    cutout_mode = mixing.check_cutout_mode(dataset_config.get("cutout_mode", "batch"))
    held_out = not config.get("use_test_set", True)
    if held_out:
        validation.check_dataset(name)
    noisy_validation = dataset_config.get("flip_validation_labels", False)
    if noisy_validation and not held_out:
        raise ValueError(
            "dataset.flip_validation_labels flips the labels of the validation split, and test "
            "labels are never flipped; set use_test_set=False or flip_validation_labels=False"
        )
    source = load_source(name, SourceOptions.from_config(config))
    if held_out:
        source = validation.with_validation_split(source)
    source = label_noise.with_label_noise(source, noise, _rng(config.seeds, _LABEL_NOISE))
    if noisy_validation:
        rng = _rng(config.seeds, _VALIDATION_NOISE)
        source = label_noise.with_noisy_evaluation(source, noise, rng)
    return InputPipeline(
        source,
        batch_size=config.batch_size,
        eval_batch_size=config.get("eval_batch_size", None) or config.batch_size,
        seed=config.seeds,
        batch_level_augmentations=batch_level,
        mixup_alpha=dataset_config.get("mixup_alpha", 1.0),
        cutout_size=dataset_config.get("cutout_size", 0),
        cutout_mode=cutout_mode,
        num_workers=dataset_config.get("num_workers", -1),
        process_index=process_index,
        process_count=process_count,
    )
