"""The model card: data, classes, metrics with CIs, breakdowns, intended use and limits."""

from __future__ import annotations

import pandas as pd

from histoflow.registry import render_model_card

EVAL = {
    "accuracy": 0.9,
    "macro_recall": 0.875,
    "auroc": float("nan"),
    "n": 40,
    "per_class_recall": {"tumor": 0.95, "stroma": 0.6},
    "per_class": {
        "tumor": {"precision": 0.9, "recall": 0.95, "f1": 0.92},
        "stroma": {"precision": 0.8, "recall": 0.6, "f1": 0.69},
    },
    "by_group": {"site": {"A": {"accuracy": 0.95, "n": 30}, "B": {"accuracy": 0.7, "n": 10}}},
}
MANIFEST = pd.DataFrame(
    {
        "label": ["tumor", "tumor", "stroma", "stroma"],
        "split": ["train", "test", "train", "test"],
        "patient_id": ["p1", "p2", "p3", "p3"],
    }
)


def test_card_has_every_section_and_the_numbers(tiny_params):
    card = render_model_card(
        {**EVAL, "ci": {"macro_recall": [0.8, 0.93]}},
        tiny_params,
        MANIFEST,
        git_commit="abc",
        data_hash="d41d8",
    )
    for heading in ("## Data", "## Classes", "## Test metrics", "### Per class", "### By site"):
        assert heading in card
    assert "| macro_recall | 0.875 | [0.800, 0.930] |" in card
    assert "| accuracy | 0.900 | not computed |" in card
    assert "| auroc | n/a |" in card
    assert "4 images from 3 patients" in card and "`d41d8`" in card and "`abc`" in card
    assert "| B | 0.700 | 10 |" in card
    assert tiny_params.registry.intended_use in card
    assert "Recall below 0.7 for: stroma." in card
    assert "Fewer than 20 test images for site = B." in card


def test_card_says_when_there_are_no_cis(tiny_params):
    card = render_model_card(EVAL, tiny_params, MANIFEST)
    assert "No confidence intervals were computed" in card
    assert "The test split is small (n = 40)" in card


def test_card_records_how_to_reproduce_it_and_the_machine(tiny_params):
    spread = {
        "seeds": [1, 2, 3],
        "macro_recall": {"mean": 0.86, "std": 0.021, "values": [0.84, 0.86, 0.88]},
    }
    card = render_model_card(
        {**EVAL, "seed_spread": spread},
        tiny_params,
        MANIFEST,
        git_commit="abc",
        data_hash="d41d8",
        machine={
            "machine.cpu": "AMD EPYC 9R14",
            "machine.bf16": "avx512_bf16",
            "machine.torch_threads": "2",
            "package.torch": "2.14.1",
            "package.mlflow": "3.0",
        },
        precision={"train_encoder": "bf16-mixed on cpu", "embed": "image bf16, text bf16"},
    )
    assert "| macro_recall | 0.875 | not computed | 0.860 +- 0.021 |" in card
    assert "Seeds 1, 2, 3" in card
    section = card[card.index("## Reproducibility") :]
    assert "commit `abc`" in section and "DVC hash `d41d8`" in section
    assert "`train_fusion.seed` 42" in section
    for row in (
        "| CPU | AMD EPYC 9R14 |",
        "| CPU bf16 kernels | avx512_bf16 |",
        "| train_encoder ran in | bf16-mixed on cpu |",
        "| embed ran in | image bf16, text bf16 |",
        "| torch | 2.14.1 |",
    ):
        assert row in section, row
    assert "mlflow" not in section  # only what changes the numbers
    assert "macro_recall std 0.021" in section


def test_card_without_a_spread_says_how_to_measure_the_noise(tiny_params):
    card = render_model_card(EVAL, tiny_params, MANIFEST)
    assert "| macro_recall | 0.875 | not computed |" in card
    assert "set `evaluate.seeds`" in card and "| CPU | unknown |" in card
