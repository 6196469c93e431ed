"""Your own images: npz:PATH and folder:PATH data sets, their split rule, bad files, and training on them."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from trainers import data, sample, train_lib
from trainers.config import TrainConfig


def images_and_labels(count, shape=(6, 6), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count,) + shape).astype(np.uint8), rng.integers(0, classes, count)


def take_all(dataset):
    pairs = list(dataset.as_numpy_iterator())
    return np.stack([image for image, _ in pairs]), np.array([label for _, label in pairs])


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(tf.io.encode_png(image).numpy())


def test_npz_grey_images_get_a_channel_and_the_last_tenth_is_the_test_split(tmp_path):
    images, labels = images_and_labels(25)
    path = tmp_path / "mine.npz"
    np.savez(path, images=images.astype(np.int64), labels=labels)
    opened = data.open_dataset(f"npz:{path}")
    assert opened.image_shape == (6, 6, 1) and opened.num_classes == labels.max() + 1
    train_images, train_labels = take_all(opened.split("train"))
    test_images, test_labels = take_all(opened.split("test"))
    assert len(test_images) == 3  # ceil(25 / 10), the last ones in array order
    np.testing.assert_array_equal(test_images[..., 0], images[22:])
    np.testing.assert_array_equal(train_labels, labels[:22])
    assert test_images.dtype == np.uint8 and test_labels.dtype == np.int32


def test_the_pipelines_batch_in_a_seeded_or_fixed_order_without_the_autotuning_model(tmp_path):
    images, labels = images_and_labels(20)
    path = tmp_path / "mine.npz"
    np.savez(path, images=images, labels=labels, test_images=images[:7], test_labels=labels[:7])
    opened = data.open_dataset(f"npz:{path}")
    first = [next(iter(data.train_pipeline(opened, 8, seed)))[0].numpy() for seed in (1, 1, 2)]
    assert first[0].shape == (8, 6, 6, 1)
    np.testing.assert_array_equal(first[0], first[1])  # the seed fixes the order
    assert not np.array_equal(first[0], first[2])
    evaluated = [batch[0].numpy() for batch in data.eval_pipeline(opened, 4)]
    assert [len(batch) for batch in evaluated] == [4, 3]  # the last batch is smaller
    np.testing.assert_array_equal(np.concatenate(evaluated)[..., 0], images[:7])
    # No autotuning model (data.py, _pipeline_options): deleting an iterator does not wait for its thread.
    for pipeline in (data.train_pipeline(opened, 8, 1), data.eval_pipeline(opened, 4)):
        assert pipeline.options().autotune.enabled is False


def test_npz_with_its_own_test_part_and_without_labels(tmp_path):
    images, _ = images_and_labels(10, shape=(4, 4, 3))
    test_images, _ = images_and_labels(4, shape=(4, 4, 3), seed=1)
    path = tmp_path / "split.npz"
    np.savez(path, images=images, test_images=test_images)
    opened = data.open_dataset(f"npz:{path}")
    assert opened.num_classes is None and opened.image_shape == (4, 4, 3)
    got, labels = take_all(opened.split("test"))
    np.testing.assert_array_equal(got, test_images)
    assert (labels == -1).all()
    np.savez(tmp_path / "labelled.npz", images=images, labels=np.arange(10) % 2)
    assert data.open_dataset(f"npz:{tmp_path}/labelled.npz", num_classes=5).num_classes == 5


@pytest.mark.parametrize(
    "arrays, num_classes, pattern",
    [
        ({"images": np.zeros((4, 5, 5), np.float32)}, None, "expected integer images with values 0..255"),
        ({"images": np.full((4, 5, 5), 300, np.int32)}, None, "expected values in 0..255, got values from 300 to 300"),
        ({"images": np.full((4, 5, 5), -1, np.int32)}, None, "expected values in 0..255"),
        ({"images": np.zeros((4, 5), np.uint8)}, None, r"expected images \[N, H, W, C\] or \[N, H, W\], got shape"),
        ({"images": np.zeros((0, 5, 5), np.uint8)}, None, "no images"),
        ({"images": np.zeros((4, 5, 5), np.uint8), "labels": np.zeros(3, np.int64)}, None, "one label per image"),
        ({"images": np.zeros((4, 5, 5), np.uint8), "labels": np.zeros(4, np.float32)}, None, "integer class labels"),
        ({"images": np.zeros((4, 5, 5), np.uint8), "labels": np.array([0, 1, 2, 7])}, 5,
         r"label 7, expected labels in \[0, 5\)"),
        ({"images": np.zeros((4, 5, 5), np.uint8), "labels": np.array([0, 1, -2, 1])}, None, "expected labels >= 0"),
        ({"pictures": np.zeros((4, 5, 5), np.uint8)}, None, "has no 'images' array"),
        ({"images": np.zeros((1, 5, 5), np.uint8)}, None, "at least 2 images"),
        ({"images": np.zeros((4, 5, 5), np.uint8)}, 3, "num_classes: given, but .* has no labels"),
    ],
)  # fmt: skip
def test_bad_npz_files_are_named_with_what_was_expected(tmp_path, arrays, num_classes, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=pattern) as error:
        data.open_dataset(f"npz:{path}", num_classes=num_classes)
    assert str(path) in str(error.value) or pattern.startswith("num_classes")


def test_unreadable_npz_and_missing_folder(tmp_path):
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(ValueError, match=f"dataset=npz:{tmp_path}/text.npz: cannot read"):
        data.open_dataset(f"npz:{tmp_path}/text.npz")
    with pytest.raises(ValueError, match="is not a directory"):
        data.open_dataset(f"folder:{tmp_path}/nowhere")


def test_folder_of_class_subfolders(tmp_path):
    images, _ = images_and_labels(12, shape=(5, 5, 3))
    for index, image in enumerate(images):
        write_png(str(tmp_path / "pics" / ("cat" if index < 6 else "dog") / f"{index:02d}.png"), image)
    opened = data.open_dataset(f"folder:{tmp_path}/pics")
    assert opened.image_shape == (5, 5, 3) and opened.num_classes == 2
    train_images, train_labels = take_all(opened.split("train"))
    test_images, test_labels = take_all(opened.split("test"))
    # 12 files in sorted order (cat/00..05, dog/06..11): the last ceil(12 / 10) = 2 are the test split.
    np.testing.assert_array_equal(test_images, images[10:])
    np.testing.assert_array_equal(train_labels, [0] * 6 + [1] * 4)
    np.testing.assert_array_equal(test_labels, [1, 1])


def test_folder_with_train_and_test_parts(tmp_path):
    images, _ = images_and_labels(6, shape=(4, 4, 1))
    for index, image in enumerate(images):
        part = "train" if index < 4 else "test"
        write_png(str(tmp_path / "root" / part / f"class_{index % 2}" / f"{index}.png"), image)
    opened = data.open_dataset(f"folder:{tmp_path}/root")
    assert opened.num_classes == 2
    got, labels = take_all(opened.split("test"))
    np.testing.assert_array_equal(got, images[4:])
    np.testing.assert_array_equal(labels, [0, 1])


def test_bad_folders(tmp_path):
    write_png(str(tmp_path / "mixed" / "a" / "1.png"), np.zeros((4, 4, 1), np.uint8))
    write_png(str(tmp_path / "mixed" / "a" / "2.png"), np.zeros((5, 4, 1), np.uint8))
    with pytest.raises(ValueError, match=r"expected images of one size, but .*2.png is \(5, 4, 1\)"):
        data.open_dataset(f"folder:{tmp_path}/mixed")
    os.makedirs(tmp_path / "empty" / "a")
    with pytest.raises(ValueError, match="no images"):
        data.open_dataset(f"folder:{tmp_path}/empty")
    write_png(str(tmp_path / "broken" / "a" / "1.png"), np.zeros((4, 4, 1), np.uint8))
    (tmp_path / "broken" / "a" / "2.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"cannot decode .*2.png as an image"):
        data.open_dataset(f"folder:{tmp_path}/broken")
    write_png(str(tmp_path / "parts" / "train" / "a" / "1.png"), np.zeros((4, 4, 1), np.uint8))
    write_png(str(tmp_path / "parts" / "test" / "1.png"), np.zeros((4, 4, 1), np.uint8))
    with pytest.raises(ValueError, match="must both hold class subfolders or both hold images"):
        data.open_dataset(f"folder:{tmp_path}/parts")


@pytest.mark.large  # large: trainer runs on npz and folder data
def test_training_and_sampling_on_your_own_images(tmp_path):
    images, labels = images_and_labels(40, shape=(5, 5), classes=2)
    npz = tmp_path / "own.npz"
    np.savez(npz, images=images, labels=labels)
    for index, image in enumerate(images[:20]):
        write_png(str(tmp_path / "pics" / f"c{labels[index]}" / f"{index:02d}.png"), image[..., None])
    config = TrainConfig(num_layers=1, filters=4, batch_size=8, train_steps=4, eval_every=4, samples_per_class=1)
    for dataset in (f"npz:{npz}", f"folder:{tmp_path}/pics"):
        model_dir = str(tmp_path / dataset.split(":")[0])
        metrics = train_lib.train_and_evaluate(config.replace(dataset=dataset), model_dir)
        assert metrics["step"] == 4 and np.isfinite(metrics["test_bits_per_dim"])
        assert json.load(open(os.path.join(model_dir, "run_config.json")))["dataset"] == dataset
    _, samples = sample.sample(str(tmp_path / "npz"), num=2, seed=0)
    assert samples.shape == (2, 2, 5, 5, 1)  # one row per class of the npz labels


def test_any_tfds_image_data_set_by_name():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        opened = data.open_dataset("kmnist")  # no recipe in TFDS_SPECS: read from its features
        assert opened.image_shape == (28, 28, 1) and opened.num_classes == 10
        image, label = next(iter(opened.split("test")))
        assert image.dtype == tf.uint8 and 0 <= int(label) < 10
    with pytest.raises(ValueError, match="expected a tfds image data set"):
        data.open_dataset("imdb_reviews")


def test_sample_images_file_takes_npy_and_npz(tmp_path):
    images, _ = images_and_labels(3, shape=(4, 4, 1))
    np.save(tmp_path / "a.npy", images)
    np.savez(tmp_path / "b.npz", images=images[..., 0].astype(np.int32))
    for name in ("a.npy", "b.npz"):
        np.testing.assert_array_equal(sample.read_image_file(str(tmp_path / name), (4, 4, 1)), images)
    np.save(tmp_path / "float.npy", images.astype(np.float32))
    with pytest.raises(ValueError, match="images: .*float.npy: expected integer images"):
        sample.read_image_file(str(tmp_path / "float.npy"), (4, 4, 1))
    with pytest.raises(ValueError, match=r"images: expected images \[N, 5, 5, 1\]"):
        sample.read_image_file(str(tmp_path / "a.npy"), (5, 5, 1))


def test_npz_codes_open_as_int32_grids_with_num_categories(tmp_path):
    path = tmp_path / "codes.npz"
    np.savez(path, images=np.arange(60).reshape(10, 2, 3) % 7, labels=np.arange(10) % 2)
    opened = data.open_dataset(f"npz:{path}", num_categories=7)
    codes, labels = next(iter(opened.split("train").batch(100)))
    assert opened.image_shape == (2, 3, 1) and codes.dtype == tf.int32 and int(tf.reduce_max(codes)) == 6
    assert opened.num_classes == 2 and labels.dtype == tf.int32
    with pytest.raises(ValueError, match=r"expected codes in \[0, num_categories=5\), got values from 0 to 6"):
        data.open_dataset(f"npz:{path}", num_categories=5)
    np.savez(path, images=np.zeros((4, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"'images': expected integer codes for num_categories=7, got float32"):
        data.open_dataset(f"npz:{path}", num_categories=7)
    with pytest.raises(ValueError, match=r"num_categories: only used with npz:PATH data of integer codes"):
        data.open_dataset("digits", num_categories=7)
