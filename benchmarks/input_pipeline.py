"""Images per second of the training loader at 0, 1 and 2 grain worker processes.

    python benchmarks/input_pipeline.py [--seconds 6]

Data are generated in a temporary folder in the official formats: a CIFAR-10
sized archive (50,000 + 10,000 random 32×32 images) and an ImageNet-style
folder of 500×375 JPEGs (smooth random images, closer to photographs than
noise is, which decodes unusually slowly). Prints a markdown table and the
machine, for docs/data.md. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image

from gnp.data import InputPipeline, build_input_pipeline, cifar


def write_cifar10(root: Path, per_file: int = 10_000, learnable: bool = False) -> None:
    """The official archive of random images; ``learnable`` tints each image by its class, so
    that a short training has something to learn (gpu_check.py)."""
    rng = np.random.default_rng(0)
    tints = rng.integers(0, 128, size=(10, 3072))
    with tarfile.open(root / cifar.CIFAR10.archive, "w:gz", compresslevel=1) as tar:
        for name in (*cifar.CIFAR10.train_files, *cifar.CIFAR10.test_files):
            labels = rng.integers(0, 10, size=per_file)
            data = rng.integers(0, 256 - 128 * learnable, size=(per_file, 3072))
            data = (data + learnable * tints[labels]).astype(np.uint8)
            labels = labels.tolist()
            payload = pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
            info = tarfile.TarInfo(f"{cifar.CIFAR10.folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def write_imagenet(root: Path, classes: int = 8, per_class: int = 40) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
                image = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
                image.save(folder / f"{i}.JPEG", quality=90)


def config(dataset: dict, batch_size: int) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict({"batch_size": batch_size, "seeds": 0})
    cfg.dataset = ml_collections.ConfigDict(
        {"batch_level_augmentations": "none", "num_workers": 0, **dataset}
    )
    return cfg


def images_per_second(pipeline: InputPipeline, workers: int, seconds: float) -> float:
    """Throughput after the first two batches, which include worker start-up."""
    pipeline.num_workers = workers  # one loaded source for every worker count
    iterator = pipeline.train_iterator()
    next(iterator), next(iterator)
    start, images = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        images += len(next(iterator)["image"])
    rate = images / (time.perf_counter() - start)
    iterator.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per cell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar10(root)
        write_imagenet(root / "imagenet")
        cases = {
            "CIFAR-10 basic (batch 128)": (
                {"dataset_name": "cifar10", "data_dir": tmp, "image_level_augmentations": "basic"},
                128,
            ),
            "CIFAR-10 autoaugment (batch 128)": (
                {
                    "dataset_name": "cifar10",
                    "data_dir": tmp,
                    "image_level_augmentations": "autoaugment",
                },
                128,
            ),
            "ImageNet 224 basic (batch 64)": (
                {"dataset_name": "imagenet", "data_dir": tmp, "image_level_augmentations": "basic"},
                64,
            ),
        }
        workers = (0, 1, 2)
        print("| loader | " + " | ".join(f"{w} worker{'s' * (w != 1)}" for w in workers) + " |")
        print("|---" * (len(workers) + 1) + "|")
        for name, (dataset, batch_size) in cases.items():
            pipeline = build_input_pipeline(config(dataset, batch_size))
            rates = [images_per_second(pipeline, w, args.seconds) for w in workers]
            print(f"| {name} | " + " | ".join(f"{r:,.0f} img/s" for r in rates) + " |", flush=True)
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPU cores, Python {platform.python_version()}, "
        f"Pillow {Image.__version__}"
    )


if __name__ == "__main__":
    main()
