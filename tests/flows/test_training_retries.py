"""Which stage failures the training flow retries: transient ones only."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from histoflow.dvc import DvcError


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (
            DvcError("ERROR: Unable to acquire lock. Most likely another DVC process is running"),
            True,
        ),
        (ConnectionError("reset by peer"), True),
        (DvcError("Updating lock file 'dvc.lock'\nValueError: data.colour: unknown key"), False),
        (ValueError("validate: 3 errors"), False),
    ],
)
def test_only_transient_failures_are_retried(error, retried, flow_module):
    transient = flow_module("training")._transient
    assert transient(None, None, Failed(data=error)) is retried
