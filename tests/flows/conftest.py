"""The flows under test are this repository's ``flows/`` files."""

from __future__ import annotations

import pytest

from histoflow.project import load_flow


@pytest.fixture(scope="session")
def flow_module(repo):
    """``flow_module(name)``: ``flows/NAME.py`` of this repository, imported."""
    return lambda name: load_flow(name, repo)
