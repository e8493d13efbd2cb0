"""The feature store read in parts: a tensor's rows on indexing, and only the index columns asked for."""

import numpy as np
import pandas as pd
import pytest
import torch


def test_tensor_rows_read_slices_row_numbers_and_masks(tmp_path, feature_store):
    values = torch.arange(40, dtype=torch.float16).reshape(20, 2)
    with feature_store(tmp_path / "s", {"image_pooled": values}) as store:
        rows = store.tensor("image_pooled")
        assert len(rows) == 20 and rows.shape == (20, 2)
        np.testing.assert_array_equal(rows[3:6], values[3:6].numpy())
        np.testing.assert_array_equal(rows[[7, 1, 7]], values[[7, 1, 7]].numpy())
        mask = np.arange(20) % 4 == 0
        np.testing.assert_array_equal(rows[mask], values.numpy()[mask])
        with pytest.raises(IndexError, match="rows outside"):
            rows[[20]]


def test_store_reads_only_the_index_columns_asked_for(tmp_path, feature_store):
    from histoflow.embeddings.store import FeatureStore

    index = pd.DataFrame({"path": ["a.png", "b.png"], "label": "x", "caption": ["long", "text"]})
    feature_store(tmp_path / "s", {"image_pooled": torch.zeros(2, 2)}, index).close()
    with FeatureStore(tmp_path / "s", columns=("path", "label", "not_there")) as store:
        assert list(store.index.columns) == ["path", "label"]
        assert len(store) == 2
