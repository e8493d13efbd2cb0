"""EncoderClassifier's recipe: which parameters train, frozen norms, the LR schedule, History."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from histoflow.models.encoder import create_encoder
from histoflow.training.callbacks import History
from histoflow.training.finetune import backbone_blocks, set_trainable_blocks, trainable_blocks
from histoflow.training.modules import EncoderClassifier
from histoflow.training.optim import warmup_cosine


def _fit(module: L.LightningModule, *, epochs: int = 1, steps_per_epoch: int = 2, callbacks=()):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(8 * steps_per_epoch, 3, 32, 32, generator=g),
        torch.arange(8 * steps_per_epoch) % 3,
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )
    trainer.fit(module, DataLoader(data, batch_size=8))
    return trainer


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    ("finetune", "trained_prefixes"),
    [
        ("full", ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")),
        ("partial", ("layer4",)),  # unfreeze_blocks=1: the last of timm's groups
        ("linear_probe", ()),
    ],
)
def test_strategy_trains_exactly_its_parameters(finetune, trained_prefixes):
    torch.manual_seed(0)
    module = EncoderClassifier(
        create_encoder("test_resnet"),
        3,
        lr=0.01,
        weight_decay=0.0,
        epochs=1,
        finetune=finetune,
        unfreeze_blocks=1,
    )
    trainable = {n for n, p in module.encoder.named_parameters() if p.requires_grad}
    assert trainable == {
        n for n, _ in module.encoder.named_parameters() if n.startswith(trained_prefixes)
    }
    assert all(p.requires_grad for p in module.head.parameters())
    before = _snapshot(module)
    _fit(module)
    after = module.state_dict()
    for name, old in before.items():
        if name.endswith("num_batches_tracked"):
            continue
        changed = not torch.equal(old, after[name])
        # Running statistics of a frozen batch norm stay put (eval mode), like its weights.
        expected = name.startswith("head") or name.removeprefix("encoder.").startswith(
            trained_prefixes
        )
        assert changed == expected, f"{finetune}: {name} changed={changed}"


def test_linear_probe_keeps_backbone_in_eval_mode():
    module = EncoderClassifier(
        create_encoder("test_vit"), 3, lr=0.01, weight_decay=0.0, epochs=1, finetune="linear_probe"
    )
    module.train()
    assert module.training and module.head.training
    assert not any(m.training for m in module.encoder.modules())


def test_partial_milestones_and_hybrid_branches():
    assert trainable_blocks("partial", 0, 1, {2: 3, 4: 99}) == 1
    assert trainable_blocks("partial", 3, 1, {2: 3, 4: 99}) == 3
    assert trainable_blocks("partial", 5, 1, {2: 3, 4: 99}) == 99
    assert trainable_blocks("full", 0, 1, {}) is None
    assert trainable_blocks("linear_probe", 7, 1, {}) == 0

    class Hybrid(nn.Module):
        def __init__(self):
            super().__init__()
            self.branches = nn.ModuleList(
                [create_encoder("test_resnet"), create_encoder("test_vit")]
            )

    hybrid = Hybrid()
    set_trainable_blocks(hybrid, 2)
    for blocks in backbone_blocks(hybrid):  # every branch: the last two blocks only
        flags = [{p.requires_grad for p in block} for block in blocks]
        assert flags == [{False}] * (len(blocks) - 2) + [{True}, {True}]


def test_milestone_unfreezes_during_training():
    module = EncoderClassifier(
        create_encoder("test_resnet"),
        3,
        lr=0.01,
        weight_decay=0.0,
        epochs=2,
        finetune="partial",
        unfreeze_blocks=1,
        unfreeze_at={1: 2},
    )
    layer3 = module.encoder.layer3[0].conv1.weight
    assert not layer3.requires_grad
    seen = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.append((trainer.current_epoch, layer3.detach().clone()))

    start = layer3.detach().clone()
    _fit(module, epochs=2, callbacks=[Spy()])
    assert all(torch.equal(w, start) for e, w in seen if e == 0)  # frozen in epoch 0
    assert not torch.equal(seen[-1][1], start) and layer3.requires_grad  # trained from epoch 1


def test_warmup_cosine_values():
    f = lambda s: warmup_cosine(s, warmup_steps=4, total_steps=14)  # noqa: E731
    assert [f(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f(9) == pytest.approx(0.5)  # half-way through the decay
    assert f(14) == pytest.approx(0.0) and f(20) == pytest.approx(0.0)


def test_backbone_and_head_follow_the_schedule_per_step():
    module = EncoderClassifier(
        create_encoder("test_resnet"),
        3,
        lr=0.01,
        backbone_lr=0.001,
        weight_decay=0.05,
        epochs=3,
        warmup_epochs=1,
    )
    lrs = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    _fit(module, epochs=3, steps_per_epoch=2, callbacks=[Spy()])  # 6 steps, 2 of warm-up
    groups = module.trainer.optimizers[0].param_groups
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0, 0.05, 0.0]  # no decay on 1-D
    peaks = [0.001, 0.001, 0.01, 0.01]
    for step, got in enumerate(lrs):
        factor = warmup_cosine(step, warmup_steps=2, total_steps=6)
        assert got == pytest.approx([peak * factor for peak in peaks]), step


def test_history_rows_survive_a_checkpoint():
    module = EncoderClassifier(
        create_encoder("test_resnet"), 3, lr=0.01, weight_decay=0.0, epochs=2
    )
    history = History()
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 3)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history],
    )
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    assert [r["epoch"] for r in history.rows] == [0, 1]
    assert {"train_loss", "val_loss", "val_macro_recall", "lr"} <= set(history.rows[0])
    restored = History()
    restored.load_state_dict(history.state_dict())
    assert restored.rows == history.rows


class _GradNorms(L.Callback):
    """The total gradient norm each optimiser step used: read after the step, before the next
    step's zero_grad (callbacks' on_before_optimizer_step runs before the module's)."""

    def __init__(self):
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("grad_clip", [None, 1e-3])
def test_fused_adamw_with_clipping_by_the_module(grad_clip):
    # Lightning refuses to clip for a fused optimiser, so the module clips: the optimiser sees
    # gradients of norm <= grad_clip; without clipping, the norms are far larger.
    torch.manual_seed(0)
    module = EncoderClassifier(
        create_encoder("test_resnet"), 3, lr=0.01, weight_decay=0.0, epochs=1, grad_clip=grad_clip
    )
    norms = _GradNorms()
    trainer = _fit(module, callbacks=[norms])
    assert trainer.optimizers[0].defaults["fused"] is True
    assert len(norms.norms) == 2
    if grad_clip is None:
        assert min(norms.norms) > 0.01
    else:
        assert max(norms.norms) <= grad_clip * 1.001
