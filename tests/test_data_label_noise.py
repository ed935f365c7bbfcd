"""``dataset.label_noise``: exactly that fraction of training labels moves to another class."""

import numpy as np
import pytest

from gnp.configs.default import get_config
from gnp.data import build_input_pipeline
from gnp.data.digits import load_digits_split
from gnp.data.label_noise import flip_labels


def digits_pipeline(noise: float, seed: int = 0):
    config = get_config()
    config.dataset.label_noise = noise
    config.seeds = seed
    return build_input_pipeline(config)


def test_exact_count_flipped_never_to_the_same_class():
    clean = load_digits_split()["train"][1]
    noisy = digits_pipeline(0.2).source.train.labels
    changed = noisy != clean
    assert changed.sum() == round(0.2 * len(clean))  # 287 of 1,437
    assert noisy.dtype == clean.dtype
    assert set(np.unique(noisy)) <= set(range(10))


def test_every_other_class_reachable_and_none_kept():
    labels = np.zeros(10_000, np.int32)
    noisy = flip_labels(labels, 0.5, 10, np.random.default_rng(1))
    assert (noisy != 0).sum() == 5_000
    counts = np.bincount(noisy[noisy != 0], minlength=10)[1:]
    assert counts.min() > 450  # about 5,000 / 9 each: uniform over the other classes


def test_deterministic_in_the_seed_and_independent_of_batches():
    first = digits_pipeline(0.2, seed=3)
    again = digits_pipeline(0.2, seed=3)
    other = digits_pipeline(0.2, seed=4)
    np.testing.assert_array_equal(first.source.train.labels, again.source.train.labels)
    assert (first.source.train.labels != other.source.train.labels).any()
    # Batches (any step, any order) carry the noisy labels of their samples.
    late, early = first.train_batch(25), first.train_batch(0)
    np.testing.assert_array_equal(late["label"], again.train_batch(25)["label"])
    np.testing.assert_array_equal(early["label"], again.train_batch(0)["label"])
    order = first._epoch_order(0)[: first.global_batch_size]
    expected = np.eye(10, dtype=np.float32)[first.source.train.labels[order]]
    np.testing.assert_array_equal(early["label"], expected)


def test_test_split_untouched_and_zero_noise_is_the_clean_source():
    clean = load_digits_split()
    noisy = digits_pipeline(0.4)
    np.testing.assert_array_equal(noisy.source.test.labels, clean["test"][1])
    batch = noisy.eval_batch(0)
    np.testing.assert_array_equal(batch["label"][batch["mask"]], clean["test"][1][:128])
    np.testing.assert_array_equal(digits_pipeline(0.0).source.train.labels, clean["train"][1])


@pytest.mark.parametrize("noise", [-0.1, 1.0, 1.5])
def test_fraction_outside_zero_one_is_a_clear_error(noise):
    with pytest.raises(ValueError, match=r"dataset.label_noise must lie in \[0, 1\)"):
        digits_pipeline(noise)


def held_out_pipeline(noise: float, flip: bool, seed: int = 0):
    config = get_config()
    config.dataset.label_noise = noise
    config.dataset.flip_validation_labels = flip
    config.use_test_set = False
    config.seeds = seed
    return build_input_pipeline(config)


def test_flipped_validation_labels_at_the_training_rate():
    """The held-out tenth of digits' training split (143 images) flipped at 30 %, drawn apart
    from the training flips; the clean labels stay beneath, and off means the clean split."""
    clean = load_digits_split()["train"][1]
    noisy = held_out_pipeline(0.3, flip=True)
    plain = held_out_pipeline(0.3, flip=False)
    held_out = clean[len(clean) - len(clean) // 10 :]
    np.testing.assert_array_equal(noisy.source.test.split.labels, held_out)
    np.testing.assert_array_equal(plain.source.test.labels, held_out)
    changed = noisy.source.test.labels != held_out
    assert changed.sum() == round(0.3 * 143)
    np.testing.assert_array_equal(noisy.source.train.labels, plain.source.train.labels)
    batch = noisy.eval_batch(0)
    np.testing.assert_array_equal(batch["label"][batch["mask"]], noisy.source.test.labels[:128])
    again = held_out_pipeline(0.3, flip=True).source.test.labels
    np.testing.assert_array_equal(again, noisy.source.test.labels)
    other = held_out_pipeline(0.3, flip=True, seed=1).source.test.labels
    assert (other != noisy.source.test.labels).any()


def test_flipping_the_test_labels_is_refused():
    config = get_config()
    config.dataset.label_noise = 0.3
    config.dataset.flip_validation_labels = True
    with pytest.raises(ValueError, match="test labels are never flipped; set use_test_set=False"):
        build_input_pipeline(config)
