"""dvc.yaml, params.yaml, the stage modules and the training flow agree with each other."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path, PurePosixPath

import pytest
import yaml

from histoflow import dvc
from histoflow.config import Params, load_params
from histoflow.stages import STAGE_NAMES, get_stage


@pytest.fixture(scope="module")
def dvc_yaml(repo) -> dict:
    return yaml.safe_load((repo / "dvc.yaml").read_text())


@pytest.fixture(scope="module")
def resolve(repo):
    """A dvc.yaml dep or out as a path, ``${data.root}`` filled in from params.yaml."""
    root = str(load_params(repo / "params.yaml").data.root)

    def path(entry) -> str:
        return (next(iter(entry)) if isinstance(entry, dict) else entry).replace(
            "${data.root}", root
        )

    return path


def test_stages_in_dvc_yaml_are_the_stage_modules_in_order(repo, dvc_yaml):
    assert list(dvc_yaml["stages"]) == list(STAGE_NAMES)
    assert dvc.stage_order(repo) == list(STAGE_NAMES)


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_declares_what_its_module_reads_and_writes(name, repo, dvc_yaml, resolve):
    spec = dvc_yaml["stages"][name]
    module = get_stage(name)
    assert spec["cmd"] == f"histoflow stage {name}"
    assert tuple(spec.get("params", ())) == module.PARAMS
    deps = {resolve(d) for d in spec["deps"]}
    inputs = module.Inputs(
        **(
            {"data": Path(resolve("${data.root}"))}
            if "data" in module.Inputs.__dataclass_fields__
            else {}
        )
    )
    for field in dataclasses.fields(inputs):
        assert str(PurePosixPath(getattr(inputs, field.name))) in deps, (
            f"{name}: input {field.name} is not a dvc dep"
        )
    declared = {resolve(o) for key in ("outs", "metrics", "plots") for o in spec.get(key, [])}
    written = {
        str(PurePosixPath(getattr(module.Outputs(), f.name)))
        for f in dataclasses.fields(module.Outputs)
    }
    assert written == declared, (
        f"{name}: module writes {sorted(written)}, dvc.yaml declares {sorted(declared)}"
    )
    assert (repo / f"src/histoflow/stages/{name}.py").is_file()


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_params_keys_exist(name):
    for key in get_stage(name).PARAMS:
        section, _, field = key.partition(".")
        alias = {"validate": "validate_"}.get(section, section)
        model = Params.model_fields[alias].annotation
        assert not field or field in model.model_fields, key


def test_every_params_section_is_a_stage_or_shared(repo):
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    # A stage that only reads shared sections (reference reads monitor) has no section of its own.
    own = {s for s in STAGE_NAMES if any(k.split(".")[0] == s for k in get_stage(s).PARAMS)}
    assert set(raw) == own | {"data", "registry", "monitor", "deploy"}


def _imports(path: Path) -> set[str]:
    """Every ``histoflow`` module a source file imports, at any depth (lazy imports too), except
    under ``if TYPE_CHECKING:``; ``from a import b`` also yields ``a.b`` (b may be a module)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] == "histoflow"}


def _source(repo: Path, module: str) -> Path | None:
    base = repo / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _code_closure(repo: Path, module: str) -> set[Path]:
    """The source files a module runs: its own, what it imports, transitively, and the
    ``__init__.py`` of every package on the way."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            file = _source(repo, ".".join(parts[:i]))
            if file is not None and file not in seen:
                seen.add(file)
                todo += sorted(_imports(file))
    return seen


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_deps_cover_the_code_it_runs(name, repo, dvc_yaml, resolve):
    deps = [PurePosixPath(resolve(d)) for d in dvc_yaml["stages"][name]["deps"]]
    code = sorted(_code_closure(repo, f"histoflow.stages.{name}"))
    assert len(code) > 3  # the walk found the stage module and what it imports
    uncovered = [
        rel
        for rel in (PurePosixPath(f.relative_to(repo).as_posix()) for f in code)
        if not any(rel == d or d in rel.parents for d in deps)
    ]
    assert not uncovered, (
        f"dvc.yaml stage {name!r} runs code its deps do not cover, so a change to it would not "
        f"re-run the stage; add to its deps: {', '.join(map(str, uncovered))}"
    )


def test_stage_code_closure_follows_lazy_imports(repo):
    # evaluate imports its models inside run(): the walk must still see them.
    code = {
        f.relative_to(repo).as_posix() for f in _code_closure(repo, "histoflow.stages.evaluate")
    }
    assert "src/histoflow/models/ablations.py" in code
    assert "src/histoflow/training/fusion.py" in code  # through the cross-group protocol
