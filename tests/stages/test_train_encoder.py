"""train_encoder's recipe on tiny data: sampler, bad input, resume after a kill, 2-process DDP.

The subprocess tests run the real ``histoflow stage train_encoder`` command in a folder laid
out like a project (data, the validated manifest, params.yaml), as ``dvc repro`` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from histoflow.config import parse_params
from histoflow.stages import train_encoder, validate

HISTOFLOW = str(Path(sys.executable).parent / "histoflow")
OUT = train_encoder.Outputs()


@pytest.fixture(scope="module")
def validated(tmp_path_factory, tiny_data, tiny_params) -> Path:
    """A project folder with the tiny data and its validated manifest (copy before use)."""
    root = tmp_path_factory.mktemp("train_encoder") / "project"
    shutil.copytree(tiny_data, root / "data")
    validate.run(
        tiny_params,
        validate.Inputs(data=root / "data"),
        validate.Outputs(*(root / p for p in dataclasses.astuple(validate.Outputs()))),
    )
    return root


def _project(validated: Path, tmp_path: Path, tiny_params_dict, **train_encoder) -> Path:
    root = tmp_path / "project"
    shutil.copytree(validated, root)
    raw = tiny_params_dict(train_encoder=train_encoder)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def _io(root: Path) -> tuple[train_encoder.Inputs, train_encoder.Outputs]:
    out = train_encoder.Outputs()
    return (
        train_encoder.Inputs(data=root / "data", manifest=root / train_encoder.Inputs().manifest),
        train_encoder.Outputs(*(root / getattr(out, f) for f in out.__dataclass_fields__)),
    )


def _stage(root: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [HISTOFLOW, "stage", "train_encoder"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_split_is_named(validated, tmp_path, tiny_params, split):
    root = tmp_path / "p"
    shutil.copytree(validated, root)
    manifest = pd.read_parquet(root / train_encoder.Inputs().manifest)
    other = "val" if split == "train" else "train"
    manifest.loc[manifest["split"] == split, "split"] = other
    manifest.to_parquet(root / train_encoder.Inputs().manifest)
    with pytest.raises(ValueError, match=f"the {split} split of .*manifest.parquet has no images"):
        train_encoder.run(tiny_params, *_io(root))


def test_non_finite_loss_names_step_and_images(validated, tmp_path, tiny_params_dict):
    # An absurd learning rate blows the weights up after the first step: the loss of the
    # next batch is not finite, and training must stop there with that batch's images named.
    cfg = parse_params(
        tiny_params_dict(
            train_encoder={"lr": 1e30, "warmup_epochs": 0, "grad_clip": None, "epochs": 2}
        )
    )
    root = tmp_path / "p"
    shutil.copytree(validated, root)
    with pytest.raises(FloatingPointError, match=r"at step \d+ \(epoch \d, batch \d\).*\.png"):
        train_encoder.run(cfg, *_io(root))
    assert not (root / OUT.model).exists()


def test_killed_run_resumes_from_its_last_epoch(validated, tmp_path, tiny_params_dict):
    epochs = 6
    root = _project(
        validated, tmp_path, tiny_params_dict, epochs=epochs, patience=epochs, batch_size=8
    )
    last = root / train_encoder.checkpoint_dir(OUT) / "last.ckpt"
    proc = _stage(root)
    deadline = time.monotonic() + 300
    while not last.exists():
        assert proc.poll() is None, (
            f"stage ended before its first checkpoint:\n{proc.stdout.read()}"
        )
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved_epoch = torch.load(last, weights_only=True)["epoch"]
    assert saved_epoch < epochs - 1, "the run finished before it could be killed"
    assert not (root / OUT.model).exists()

    proc = _stage(root)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    metrics = json.loads((root / OUT.metrics).read_text())
    assert metrics["resumed_from_epoch"] == saved_epoch + 1 >= 1
    assert metrics["epochs_this_run"] == epochs - saved_epoch - 1
    history = pd.read_csv(root / OUT.history)
    assert history["epoch"].tolist() == list(range(epochs))  # one curve across both processes
    assert (root / OUT.model / "weights.safetensors").is_file()


def test_two_process_ddp_writes_one_checkpoint(validated, tmp_path, tiny_params_dict):
    root = _project(
        validated,
        tmp_path,
        tiny_params_dict,
        epochs=2,
        batch_size=4,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
    )
    proc = _stage(root)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    metrics = json.loads((root / OUT.metrics).read_text())
    n_train = (pd.read_parquet(root / train_encoder.Inputs().manifest)["split"] == "train").sum()
    assert metrics["world_size"] == 2
    # Each process trained on half the data: half the steps of a single process.
    assert metrics["global_step"] == 2 * -(-n_train // (2 * 4))
    assert len(pd.read_csv(root / OUT.history)) == 2
    ckpts = root / train_encoder.checkpoint_dir(OUT)
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "fingerprint.json", "last.ckpt"]
    # The exported encoder is the best checkpoint's.
    from safetensors.torch import load_file

    exported = load_file(root / OUT.model / "weights.safetensors")
    best = torch.load(ckpts / "best.ckpt", weights_only=True)["state_dict"]
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, best[f"encoder.{name}"])


def test_stain_target_is_fitted_on_train_stored_and_applied_alike(
    validated, tmp_path, tiny_params_dict
):
    from histoflow.config import AugmentConfig
    from histoflow.data.images import load_rgb
    from histoflow.data.manifest import read_manifest
    from histoflow.data.stain_normalization import create_stain_normalizer
    from histoflow.data.transforms import create_transform
    from histoflow.inference import ImageEmbedder
    from histoflow.training.encoder import train_loader

    root = _project(validated, tmp_path, tiny_params_dict, epochs=1)
    cfg = parse_params(
        tiny_params_dict(data={"stain_normalization": "reinhard"}, train_encoder={"epochs": 1})
    )
    inputs, outputs = _io(root)
    metrics = train_encoder.run(cfg, inputs, outputs)
    stored = json.loads((outputs.model / "model.json").read_text())["stain_normalization"]
    assert stored["method"] == "reinhard" and stored["n_tiles"] == metrics["stain_fit_tiles"] > 5
    assert stored == train_encoder._fit_stain_target(cfg, inputs, read_manifest(inputs.manifest))

    # Training's loader (augmentations off) and the inference embedder see the same tensor.
    manifest = read_manifest(inputs.manifest)
    paths = manifest.loc[manifest["split"] == "train", "path"].tolist()
    plain = cfg.train_encoder.model_copy(
        update={
            "augment": AugmentConfig(
                hflip=0,
                vflip=0,
                rot90=False,
                brightness=0,
                contrast=0,
                saturation=0,
                stain_scale=0,
                stain_shift=0,
            )
        }
    )
    loader = train_loader(
        plain, inputs.data, paths, [0] * len(paths), 32, stain=create_stain_normalizer(stored)
    )
    embedder = ImageEmbedder(outputs.model, grid=2)
    changed = 0
    for i in range(len(paths)):
        trained_on = loader.dataset[i][0]
        image = load_rgb(inputs.data / paths[i])
        served = embedder.transform(image)
        assert torch.equal(trained_on, served), paths[i]
        unnormalised = create_transform(32, train=False)(image)
        changed += not torch.equal(served, unnormalised)
    assert changed > len(paths) // 3  # the normaliser did act on most tiles
