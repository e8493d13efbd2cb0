"""``--overwrite`` replaces only what histoflow wrote: every dataset writer, one rule."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histoflow.cli import main
from histoflow.data.ingest import import_dataset
from histoflow.data.outdir import MARKER
from histoflow.data.synthetic import generate
from histoflow.data.synthetic.standins import make_standin

TINY = {"classes": 2, "per_class": 2, "size": 16}


def _source(root):
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(root / label / "1.png")
    return root


WRITERS = {
    "synth": lambda out, **kw: generate(out, **TINY, **kw),
    "standin": lambda out, **kw: make_standin("stroke", out, per_class=2, size=16, **kw),
    "import": lambda out, **kw: import_dataset(
        "folder", _source(out.parent / "src"), out, progress=False, **kw
    ),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_overwrite_replaces_only_a_folder_histoflow_wrote(writer, tmp_path):
    write = WRITERS[writer]
    out = tmp_path / "out"
    write(out)
    assert (out / MARKER).is_file()
    with pytest.raises(FileExistsError, match="--overwrite"):
        write(out)
    write(out, overwrite=True)  # its own dataset: replaced

    (out / "a_notes.txt").write_text("mine")  # a file histoflow did not write
    with pytest.raises(FileExistsError, match=r"1 file\(s\) that histoflow did not write"):
        write(out, overwrite=True)
    assert (out / "a_notes.txt").read_text() == "mine"

    foreign = tmp_path / "foreign"  # a folder histoflow never wrote: no marker
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match=f"no {MARKER} file"):
        write(foreign, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_a_project_and_the_current_folder_are_never_replaced(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / MARKER).write_text("a marker does not make a project replaceable\n")
    with pytest.raises(ValueError, match=r"holds dvc.yaml: it is a project"):
        generate(project, overwrite=True, **TINY)
    (project / ".git").mkdir()
    (project / "dvc.yaml").unlink()
    with pytest.raises(ValueError, match=r"holds .git"):
        generate(project, overwrite=True, **TINY)

    monkeypatch.chdir(project)
    for out in (".", "..", str(project)):
        with pytest.raises(ValueError, match="current folder|a folder above"):
            generate(out, overwrite=True, **TINY)
    assert sorted(p.name for p in project.iterdir()) == [".git", MARKER]


def test_cli_out_dot_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("")
    assert main(["data", "synth", "--out", ".", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "--out . is the current folder" in err and "e.g. --out data" in err
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]
