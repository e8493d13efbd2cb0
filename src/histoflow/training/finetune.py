"""Which backbone parameters train: blocks from timm's parameter groups, frozen or not.

A "block" is one of timm's fine-grained parameter groups (``model.group_matcher``): the stem,
each residual/transformer block, with the final norm folded into the last one. That works for
any timm model; an encoder with ``branches`` (a hybrid) is split per branch, so "the last N
blocks" means the last N of every branch.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["backbone_blocks", "freeze_norm_stats", "set_trainable_blocks", "trainable_blocks"]


def backbone_blocks(encoder: nn.Module) -> list[list[list[nn.Parameter]]]:
    """Per branch, the backbone's parameters in blocks, input side first.

    Returns:
        ``[branch][block] -> parameters``; one branch unless ``encoder.branches`` exists.
    """
    branches = list(getattr(encoder, "branches", None) or [encoder])
    return [_blocks(branch) for branch in branches]


def _blocks(model: nn.Module) -> list[list[nn.Parameter]]:
    params = dict(model.named_parameters())
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        groups = group_parameters(model, model.group_matcher(coarse=False))
        blocks = [[params[name] for name in names] for names in groups.values()]
    else:  # not a timm model: each direct child with parameters is a block
        blocks = [list(child.parameters()) for child in model.children()]
    return [b for b in blocks if b]


def trainable_blocks(
    finetune: str, epoch: int, unfreeze_blocks: int, unfreeze_at: Mapping[int, int]
) -> int | None:
    """How many of the last blocks train at ``epoch``; None = all of them.

    Args:
        finetune: ``full``, ``partial`` or ``linear_probe``.
        epoch: the current epoch (0-based).
        unfreeze_blocks: partial: blocks that train from the start.
        unfreeze_at: partial: ``{epoch: blocks}`` milestones, each from its epoch on.
    """
    if finetune == "full":
        return None
    if finetune == "linear_probe":
        return 0
    reached = [n for e, n in unfreeze_at.items() if e <= epoch]
    return max([unfreeze_blocks, *reached])


def set_trainable_blocks(encoder: nn.Module, n: int | None) -> int:
    """Make the last ``n`` blocks of each branch trainable (None = all) and freeze the rest.

    Returns:
        The number of trainable parameter tensors.
    """
    count = 0
    for blocks in backbone_blocks(encoder):
        first = 0 if n is None else max(len(blocks) - n, 0)
        for i, block in enumerate(blocks):
            for param in block:
                param.requires_grad_(i >= first)
                count += i >= first
    return count


def freeze_norm_stats(encoder: nn.Module) -> None:
    """Put batch norms whose parameters are frozen in eval mode (running stats stay fixed).

    A fully frozen backbone goes to eval as a whole (dropout off too).
    """
    if not any(p.requires_grad for p in encoder.parameters()):
        encoder.eval()
        return
    for module in encoder.modules():
        if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            module.eval()
