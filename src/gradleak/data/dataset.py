"""The in-memory image dataset every loader returns: pixels in [0, 1], NCHW, integer labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from gradleak import limits
from gradleak.errors import ConfigError, DataError


@dataclass(frozen=True)
class ImageDataset:
    """Images in [0, 1] as float32 ``(N, C, H, W)``, labels as int64 ``(N,)``.

    ``mean`` and ``std`` are per-channel statistics of ``images``; victims normalise with them and the
    attacker is told them (they are public in every real pipeline). ``label_is_source``: images of one label are
    crops of one picture (the bundled photos), so a set *disjoint* from a private batch leaves out its labels.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    label_is_source: bool = False

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"dataset {self.name!r}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"dataset {self.name!r}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(f"dataset {self.name!r}: labels must lie in [0, {len(self.class_names)})")
        if not self.mean:
            object.__setattr__(self, "mean", tuple(self.images.mean(dim=(0, 2, 3)).tolist()))
        if not self.std:
            std = self.images.std(dim=(0, 2, 3)).clamp_min(1e-3)
            object.__setattr__(self, "std", tuple(std.tolist()))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def disjoint_from(self, indices: list[int]) -> list[int]:
        """The indices of images that share nothing with the images at ``indices``: not those images, and, where
        a label names the source picture, no crop of the same picture."""
        private = set(indices)
        labels = {int(self.labels[i]) for i in indices} if self.label_is_source else set()
        return [i for i in range(len(self)) if i not in private and int(self.labels[i]) not in labels]

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels at ``indices`` (errors name the bad index)."""
        for i in indices:
            if not 0 <= i < len(self):
                raise DataError(f"dataset {self.name!r} has {len(self)} images; index {i} is out of range")
        idx = torch.tensor(indices, dtype=torch.long)
        return self.images[idx].clone(), self.labels[idx].clone()


def check_image_size(size: object, channels: int | None = None, flag: str = "image_size") -> None:
    """``size`` must be a positive integer whose ``size`` x ``size`` x channels image stays within the limit on
    elements per input (``gradleak.limits``; ``--allow-large`` lifts it)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {size!r}")
    elements = size * size * (channels or 3)
    bound = limits.limits().input_elements
    if elements > bound:
        raise ConfigError(f"{flag} {size} makes {elements} elements per image, above the limit of {bound}; "
                          "pass --allow-large if this is real large work")


def check_elements(name: str, shape: tuple[int, ...], what: str = "images") -> None:
    """Refuse, before allocating, a dataset whose ``shape`` holds more elements than the limit, or an empty
    image (a 0 x 0 picture cannot be resized or attacked)."""
    if len(shape) >= 2 and any(int(d) < 1 for d in shape[-2:]):
        raise DataError(f"{name}: {what} of shape {tuple(shape)} are empty (height or width 0)")
    elements = 1
    for d in shape:
        elements *= int(d)
    bound = limits.limits().dataset_elements
    if elements > bound:
        raise DataError(f"{name}: {what} of shape {tuple(shape)} hold {elements} elements, above the limit of "
                        f"{bound}; pass --allow-large if this is real large work")


def to_nchw_float(images: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` images in [0, 1] to ``size`` x ``size`` (antialiased) and ``channels`` channels."""
    if images.ndim != 4 or images.shape[1] < 1 or images.shape[2] < 1 or images.shape[3] < 1:
        raise DataError(f"images must be (N, C, H, W) with C, H, W >= 1, got shape {tuple(images.shape)}")
    if size is not None:
        check_image_size(size, channels or int(images.shape[1]))
    images = images.float()
    if size is not None and images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if channels is not None and images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images[:, :3] * weights).sum(1, keepdim=True)
        else:
            raise DataError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
    return images.clamp(0.0, 1.0).contiguous()
