"""The `histoflow` command: clear errors for bad input, and the data generator's determinism."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from histoflow.cli import main


def _digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_data_synth_is_deterministic(tmp_path):
    args = ["data", "synth", "--classes", "2", "--per-class", "4", "--size", "32", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert main([*args[:-1], "6", "--out", str(tmp_path / "c")]) == 0
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_unknown_stage(capsys):
    assert main(["stage", "trian"]) == 1
    err = capsys.readouterr().err
    assert "unknown stage 'trian'" in err and "train_encoder" in err


def test_missing_data_folder(tmp_path, monkeypatch, capsys, repo):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((repo / "params.yaml").read_text())
    assert main(["stage", "validate"]) == 1
    err = capsys.readouterr().err
    assert "data folder data does not exist" in err and "histoflow data synth" in err


def test_bad_params_fail_before_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data: {root: data, colour: red}\n")
    assert main(["stage", "validate"]) == 1
    assert "data.colour: unknown key" in capsys.readouterr().err


def test_run_with_bad_params_fails_before_any_prefect_server(tmp_path, monkeypatch, capsys, repo):
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    (tmp_path / "params.yaml").write_text(
        (repo / "params.yaml").read_text().replace("  epochs: 8\n", "  epochs: 8\n  epochz: 9\n")
    )
    started = time.monotonic()
    assert main(["run"]) == 1
    assert time.monotonic() - started < 5  # no server start (that takes 10-40 s here)
    assert "train_encoder.epochz: unknown key" in capsys.readouterr().err
    assert not (tmp_path / ".prefect").exists()


def test_predict_with_unknown_model(tmp_path, tiny_data, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(tiny_data / "stroma"), "--model", "models:/nope@champion"]) == 1
    err = capsys.readouterr().err
    assert "models:/nope@champion" in err and "histoflow run" in err


def test_predict_with_no_images(tmp_path, capsys):
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "readme.txt").write_text("no images here")
    assert main(["predict", str(tmp_path / "batch")]) == 1
    assert "no images found" in capsys.readouterr().err


def test_predict_with_the_champion(trained_project, tiny_data, monkeypatch, tmp_path):
    import pandas as pd

    monkeypatch.chdir(trained_project)
    out = tmp_path / "preds.csv"
    assert (
        main(
            [
                "predict",
                str(tiny_data / "stroma"),
                str(tiny_data / "adipose" / "*.png"),
                "--out",
                str(out),
                "--group-by",
                "folder",
            ]
        )
        == 0
    )
    table = pd.read_csv(out)
    assert len(table) == 32
    assert {"path", "label", "confidence", "uncertainty", "prob_stroma", "caption"} <= set(table)
    sizes = table["prediction_set"].fillna("").map(lambda s: len(s.split("|")) if s else 0)
    assert "set_size" in table and (table["set_size"] == sizes).all()
    # --group-by: one row per case (here each image's folder) beside the tile rows.
    cases = pd.read_csv(tmp_path / "preds_cases.csv")
    assert cases["folder"].tolist() == ["adipose", "stroma"]
    assert cases["n_images"].tolist() == [16, 16]
    # The champion beats chance on the classes it was trained on.
    truth = table["path"].str.contains("stroma").map({True: "stroma", False: "adipose"})
    assert (table["label"] == truth).mean() > 0.5


def test_data_import_folder_then_validate_layout(tmp_path, tiny_data):
    from histoflow.data.ingest.sources import read_source

    src = tmp_path / "src"
    for label in ("adipose", "stroma"):
        (src / "Training" / label).mkdir(parents=True)
        for f in sorted((tiny_data / label).glob("*.png"))[:4]:
            (src / "Training" / label / f"{f.stem} (1).png").write_bytes(f.read_bytes())
    assert main(["data", "import", "folder", str(src), "--out", str(tmp_path / "data")]) == 0
    table = read_source(tmp_path / "data")
    assert len(table) == 8 and set(table["split"]) == {"train"}
    assert table["path"].str.contains(r" \(1\)\.png").all()


def test_data_import_unknown_format(tmp_path, capsys):
    assert main(["data", "import", "dicom", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "breakhis" in capsys.readouterr().err


def test_predict_json_with_batches_matches_csv(trained_project, tiny_data, monkeypatch, tmp_path):
    import json

    import pandas as pd

    monkeypatch.chdir(trained_project)
    files = [str(p) for p in sorted((tiny_data / "lymphocytes").glob("*.png"))[:5]]
    assert main(["predict", *files, "--out", str(tmp_path / "a.json"), "--batch-size", "2"]) == 0
    assert main(["predict", *files, "--out", str(tmp_path / "b.csv"), "--no-progress"]) == 0
    as_json = pd.DataFrame(json.loads((tmp_path / "a.json").read_text()))
    as_csv = pd.read_csv(tmp_path / "b.csv")
    assert list(as_json["path"]) == files and list(as_json["label"]) == list(as_csv["label"])
    probs = [c for c in as_csv if c.startswith("prob_")]
    assert (as_json[probs] - as_csv[probs]).abs().max().max() < 1e-5
    assert main(["predict", files[0], "--batch-size", "0"]) == 1


def test_registry_status_and_rollback_without_history(trained_project, monkeypatch, capsys):
    import json

    monkeypatch.chdir(trained_project)
    assert main(["registry", "status"]) == 0
    out = capsys.readouterr().out
    assert "champion   v1" in out and "macro_recall=" in out and "history    v1" in out
    assert main(["registry", "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["champion"]["version"] == "1"
    assert report["champion"]["promotion.decision"] == "promoted"
    # Read-only above; rollback refuses before changing anything.
    assert main(["registry", "rollback"]) == 1
    assert "only champion recorded" in capsys.readouterr().err


def test_serve_without_a_prefect_server_says_how_to_start_one(tmp_path, monkeypatch, capsys):
    from servers import free_port

    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--api", f"http://127.0.0.1:{free_port()}/api"]) == 1
    assert "histoflow server" in capsys.readouterr().err


def test_predict_keeps_going_past_files_it_cannot_read(
    trained_project, tiny_data, monkeypatch, tmp_path, capsys
):
    import pandas as pd

    monkeypatch.chdir(trained_project)
    batch = tmp_path / "batch"
    batch.mkdir()
    good = sorted((tiny_data / "stroma").glob("*.png"))[:2]
    for f in good:
        (batch / f.name).write_bytes(f.read_bytes())
    (batch / "notes.png").write_text("not an image")
    (batch / "cut.png").write_bytes(good[0].read_bytes()[:100])  # truncated
    out = tmp_path / "preds.csv"

    assert main(["predict", str(batch), "--out", str(out), "--no-progress"]) == 2

    table = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert len(table) == 4
    for name in ("notes.png", "cut.png"):
        row = table.loc[str(batch / name)]
        assert str(batch / name) in row["error"] and row["label"] == ""
    assert (table.loc[[str(batch / f.name) for f in good], "error"] == "").all()
    assert set(table.loc[[str(batch / f.name) for f in good], "label"]) <= {
        "adipose",
        "lymphocytes",
        "stroma",
    }
    err = capsys.readouterr().err
    assert str(batch / "notes.png") in err
    assert err.strip().splitlines()[-1].startswith("histoflow: 2 of 4 files could not be read")


def test_predict_submission_format(trained_project, tiny_data, monkeypatch, tmp_path):
    import pandas as pd

    monkeypatch.chdir(trained_project)
    files = [str(p) for p in sorted((tiny_data / "stroma").glob("*.png"))[:5]]
    sub, full = tmp_path / "submission.csv", tmp_path / "full.csv"
    args = ["--batch-size", "2", "--no-progress"]
    assert main(["predict", *files, "--format", "submission", "--out", str(sub), *args]) == 0
    assert main(["predict", *files, "--out", str(full), *args]) == 0

    table, labels = pd.read_csv(sub, dtype=str), pd.read_csv(full)["label"]
    assert list(table.columns) == ["SubjectID", "Prediction"]
    assert list(table["SubjectID"]) == [f.rsplit("/", 1)[-1].removesuffix(".png") for f in files]
    assert list(table["Prediction"]) == list(labels)  # the class names, in file order


def test_predictions_are_written_as_each_batch_finishes(tmp_path):
    import pandas as pd

    from histoflow.predict import write_rows

    out = tmp_path / "rows.csv"

    def batches(fh):
        for i in range(3):
            if i:  # the rows of the batches before are on disk already
                assert len(pd.read_csv(out)) == 2 * i
            yield pd.DataFrame({"path": [f"a/{i}x.png", f"b/{i}y.png"], "label": "c", "error": ""})

    with open(out, "w") as fh:
        summary = write_rows(batches(fh), fh, "submission")
    assert summary.rows == 6 and summary.failed == 0
    assert pd.read_csv(out)["SubjectID"].tolist() == ["0x", "0y", "1x", "1y", "2x", "2y"]


@pytest.mark.parametrize(("env", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_commands_use_the_system_arrow_allocator_unless_told_otherwise(env, expected):
    # mimalloc (Arrow's default) keeps freed pages, which grew validate's peak with the tiles.
    code = (
        "import histoflow.cli as cli\n"
        "def command(argv):\n"
        "    import pyarrow as pa\n"
        "    print(pa.default_memory_pool().backend_name)\n"
        "    return 0\n"
        "cli._main = command\n"
        "assert cli.main([]) == 0\n"
        "import os; assert os.environ.get('ARROW_DEFAULT_MEMORY_POOL') == " + repr(env) + "\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env:
        environ["ARROW_DEFAULT_MEMORY_POOL"] = env
    run = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected
