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
