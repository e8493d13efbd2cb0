"""Torch datasets of image tiles: files under a root, decoded and transformed one at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.transforms import v2

from histoflow.data.images import load_rgb

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
    ):
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = None if labels is None else list(labels)
        self.transform = transform
        self.return_index = return_index  # items (image, label, index): to name bad samples

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple:
        image = self.transform(load_rgb(self.root / self.paths[i]))
        label = -1 if self.labels is None else self.labels[i]
        return (image, label, i) if self.return_index else (image, label)
