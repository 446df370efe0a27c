from __future__ import annotations

import pytest
import torch

from gradleak.data import DATASETS, load_dataset
from gradleak.data.dataset import to_nchw_float
from gradleak.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("name", "count", "channels", "classes"),
    [("faces", 200, 1, 2), ("digits", 1797, 1, 10), ("photos", 100, 3, 10)],
)
def test_bundled_datasets_are_real_images(name: str, count: int, channels: int, classes: int) -> None:
    ds = load_dataset(name, size=32)
    assert ds.images.shape == (count, channels, 32, 32)
    assert ds.images.dtype == torch.float32
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert ds.num_classes == classes and set(ds.labels.tolist()) == set(range(classes))
    # Real photos: neighbouring pixels correlate strongly, unlike noise.
    flat = ds.images[:, 0]
    corr = torch.corrcoef(torch.stack([flat[:, :, :-1].flatten(), flat[:, :, 1:].flatten()]))[0, 1]
    assert corr > 0.7
    assert len(ds.mean) == channels and all(s > 0 for s in ds.std)


def test_size_and_channel_conversion() -> None:
    ds = load_dataset("digits", size=16, channels=3)
    assert ds.images.shape[1:] == (3, 16, 16)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])


def test_unknown_dataset_format_and_index() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'cifar100'"):
        load_dataset("cifar100")
    with pytest.raises(ConfigError, match="unknown data format 'tfrecord'"):
        load_dataset("tfrecord:/tmp/x")
    with pytest.raises(DataError, match="index 500 is out of range"):
        load_dataset("faces").batch([0, 500])
    assert set(DATASETS.names()) == {"digits", "faces", "photos"}


def test_photos_at_full_size_are_resampled_from_the_source() -> None:
    """At 224 the crops come from the photos themselves, not from their 128-pixel copies (sharper: larger
    neighbour differences); at 128 and below they are what they were (the 128 copies resized)."""
    at_128, at_224 = load_dataset("photos", size=128), load_dataset("photos", size=224)
    assert at_224.images.shape == (100, 3, 224, 224) and torch.equal(at_224.labels, at_128.labels)
    assert torch.allclose(load_dataset("photos", size=48).images, to_nchw_float(at_128.images, 48, None), atol=1e-6)
    upsampled = to_nchw_float(at_128.images, 224, None)
    detail = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert detail(at_224.images) > 1.2 * detail(upsampled)
    assert (at_224.images - upsampled).abs().mean() < 0.05  # the same crops
