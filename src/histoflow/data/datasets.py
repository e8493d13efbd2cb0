"""Torch datasets of image tiles: files under a root, decoded and transformed one at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.transforms import v2

from histoflow.data.images import DEFAULT_MAX_PIXELS, load_rgb

__all__ = ["TileDataset"]


class TileDataset(Dataset):
    """Images under ``root`` with optional integer labels (-1 when None)."""

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        labels: Sequence[int] | None,
        transform: v2.Compose,
        *,
        return_index: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        """Index the tiles; nothing is read until an item is asked for.

        Args:
            root: Folder the paths are relative to.
            paths: Image paths, one per item.
            labels: Integer label per path, or None for unlabelled images.
            transform: Turns the decoded RGB image into the item's tensor.
            return_index: Items are ``(image, label, index)`` instead of ``(image, label)``.
            max_pixels: An image with more pixels raises
                :class:`~histoflow.data.images.ImageTooLarge` before it is decoded.
        """
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = None if labels is None else list(labels)
        self.transform = transform
        self.return_index = return_index  # items (image, label, index): to name bad samples
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        """Number of tiles."""
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple:
        """Tile ``i`` decoded and transformed, with its label (and index)."""
        image = self.transform(load_rgb(self.root / self.paths[i], max_pixels=self.max_pixels))
        label = -1 if self.labels is None else self.labels[i]
        return (image, label, i) if self.return_index else (image, label)
