"""Recipes: a source project's settings as one YAML file of params overrides.

A recipe names only the keys that differ from histoflow's defaults (which are what the
repository's ``params.yaml`` holds). Applying it writes defaults + recipe into ``params.yaml``,
so DVC sees exactly the params that changed and ``dvc repro`` / ``dvc exp run`` re-run what
depends on them. Applying onto the defaults, not onto the current file, makes the result the
same whatever was applied before. Comments in ``params.yaml`` are kept.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from histoflow.config import ConfigError, Params, parse_params
from histoflow.io import atomic_path

__all__ = ["apply_recipe", "default_params", "load_recipe", "resolve_recipe"]


def default_params() -> dict:
    """Histoflow's default params as plain YAML-ready data (section names as in the file)."""
    sections = [f.alias or name for name, f in Params.model_fields.items()]
    return Params.model_validate({s: {} for s in sections}).model_dump(mode="json", by_alias=True)


def load_recipe(path: str | Path) -> dict:
    """Read a recipe and check that defaults + recipe are valid params.

    Raises:
        ConfigError: naming the recipe file and the bad key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe not found; recipes live in recipes/*.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of params sections")
    parse_params(_merge(default_params(), raw), source=str(path))
    return raw


def resolve_recipe(path: str | Path) -> dict:
    """The full params a recipe stands for: defaults with the recipe's keys applied."""
    merged = _merge(default_params(), load_recipe(path))
    return parse_params(merged, source=str(path)).model_dump(mode="json", by_alias=True)


def apply_recipe(recipe: str | Path, params_path: str | Path = "params.yaml") -> list[str]:
    """Write the recipe's full params into ``params_path``, keeping its comments.

    Returns:
        The dotted keys whose values changed (empty when the file already matched).
    """
    target = resolve_recipe(recipe)
    params_path = Path(params_path)
    rt = YAML()  # round-trip: comments and key order survive
    rt.preserve_quotes = True
    rt.width = 100
    doc = rt.load(params_path.read_text()) if params_path.is_file() else None
    if doc is None:
        doc = rt.load("{}")
    changed: list[str] = []
    _update(doc, target, "", changed)
    if changed:
        buf = io.StringIO()
        rt.dump(doc, buf)
        parse_params(yaml.safe_load(buf.getvalue()), source=str(params_path))
        with atomic_path(params_path) as tmp:
            tmp.write_text(buf.getvalue())
    return changed


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _update(node: Any, target: dict, prefix: str, changed: list[str]) -> None:
    """Set every leaf of ``target`` in the round-trip mapping ``node``, recording changes."""
    for key, value in target.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and isinstance(node.get(key), dict):
            _update(node[key], value, dotted + ".", changed)
        elif key not in node or node[key] != value:
            node[key] = value
            changed.append(dotted)
