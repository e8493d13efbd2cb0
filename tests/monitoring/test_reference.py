"""The reference's PCA is fitted over chunks of rows: exact, whatever the chunking."""

from __future__ import annotations

import numpy as np

from histoflow.monitoring.reference import fit_pca_chunks


def test_chunked_pca_equals_an_svd_of_all_rows():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(60, 6)) * [5, 3, 2, 1, 0.5, 0.1] + 7).astype(np.float32)
    centred = x.astype(np.float64) - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)

    mean, axes, explained = fit_pca_chunks([x[:7], x[7:40], x[40:]], 3)

    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(explained, s[:3] ** 2 / (s**2).sum(), rtol=1e-6)
    for axis, reference in zip(axes, vt[:3], strict=True):  # equal up to the sign
        np.testing.assert_allclose(abs(axis @ reference), 1.0, rtol=1e-5)
    assert axes.flags.c_contiguous  # saved with safetensors as its buffer lies
    whole = fit_pca_chunks([x], 3)[1]
    np.testing.assert_allclose(axes, whole, atol=1e-5)  # the signs are fixed, not chunk-made
