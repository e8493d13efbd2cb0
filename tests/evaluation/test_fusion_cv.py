import numpy as np
import pandas as pd
import pytest

from histoflow.data.quality.cases import case_groups
from histoflow.embeddings.store import FeatureStore
from histoflow.evaluation.fusion_cv import fusion_grouped_cv
from histoflow.models.fusion import FusionConfig


def test_fusion_head_cross_validated_by_patient(reproduced_project, tiny_params):
    tensors = FeatureStore(reproduced_project / "outputs/embed")
    index = tensors.index
    classes = sorted(index["label"].unique())
    groups, source = case_groups(index, None)
    assert source == "patient_id"
    net_cfg = FusionConfig.from_params(
        tiny_params.train_fusion, num_classes=len(classes), **tensors.dims()
    )
    p = tiny_params.train_fusion.model_copy(update={"epochs": 2, "patience": 1})
    cv = fusion_grouped_cv(tensors, index, classes, net_cfg, p, groups, folds=3)
    assert cv["folds"] == 3 and cv["groups"] == len(set(groups))
    values = cv["macro_recall"]["values"]
    assert len(values) == 3 and all(0 <= v <= 1 for v in values)
    assert cv["macro_recall"]["mean"] == pytest.approx(np.mean(values))


def test_case_groups_fall_back_to_inferred_cases():
    cases = pd.DataFrame({"path": ["a", "b"], "case_id": ["C0000", "C0001"]})
    # The importers fill a missing patient_id with the path: that names no patient.
    for ids in (["", "p1"], ["a", "b"]):
        index = pd.DataFrame({"path": ["a", "b"], "patient_id": ids})
        groups, source = case_groups(index, cases)
        assert source == "inferred" and list(groups) == ["C0000", "C0001"]
    with pytest.raises(ValueError, match="run stage audit"):
        case_groups(index, None)
