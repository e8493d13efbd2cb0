"""Inferred cases: which tiles probably come from one slide, when the data names no patient.

Tiles cut from one slide share its stain (H&E optical density, mean colour, saturation) and,
once an encoder exists, sit close together in embedding space; re-encoded copies of a tile share
its perceptual hash. :func:`infer_cases` joins each tile to its nearest neighbours in those
measurements (faiss, exact L2 search; a symmetric k-nearest-neighbour graph),
adds a heavy edge for every near-duplicate pHash pair (a copy of a tile is from its slide), and
splits the graph into communities with Louvain modularity (scikit-network, seeded). Each
community is one inferred case; a tile's ``case_confidence`` is the
share of its neighbours that fall in its own case (1 = every neighbour agrees).

Memory grows by a few hundred bytes per tile, not kilobytes: blocks wider than
:data:`MAX_BLOCK_DIMS` (a 512-wide embedding) are projected on their leading principal
components (fitted on a seeded sample) before the search, everything is float32, and the
graph is a sparse matrix (networkx's dict-of-dicts graph, which Louvain copies, took 1.1 GB
more at 100,000 tiles than at 7,680).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from histoflow.data.quality.hashing import near_duplicate_pairs

__all__ = [
    "CASE_COLOUR_FEATURES",
    "MAX_BLOCK_DIMS",
    "case_groups",
    "colour_block",
    "has_patient_ids",
    "infer_cases",
    "read_cases",
]

# What one slide's tiles share: its stain and scanner colour, not the tissue in each tile.
CASE_COLOUR_FEATURES = (
    "mean_r",
    "mean_g",
    "mean_b",
    "od_hematoxylin",
    "od_eosin",
    "saturation",
    "brightness",
    "contrast",
)

# Wider blocks are projected to this many principal components before the neighbour search.
MAX_BLOCK_DIMS = 64
_PCA_SAMPLE = 10_000  # rows the projection is fitted on (64 components: plenty)
_CHUNK = 8192  # rows projected at a time


def colour_block(table: pd.DataFrame, columns: Sequence[str] = CASE_COLOUR_FEATURES) -> np.ndarray:
    """(N, F) robustly standardised colour statistics (median 0, IQR 1); NaN -> 0.

    Columns missing from ``table`` (an older manifest) or constant are left out.
    """
    # Greyscale images have no stain: their optical-density columns are all NaN.
    present = [c for c in columns if c in table and table[c].notna().any()]
    values = table[present].to_numpy(dtype=np.float64) if present else np.zeros((len(table), 0))
    median = np.nanmedian(values, axis=0) if len(values) else np.zeros(values.shape[1])
    q75, q25 = (np.nanpercentile(values, q, axis=0) for q in (75, 25))
    spread = np.where(q75 - q25 > 0, q75 - q25, np.nanstd(values, axis=0))
    keep = np.isfinite(spread) & (spread > 0)
    scaled = (values[:, keep] - median[keep]) / spread[keep]
    return np.nan_to_num(scaled, nan=0.0)


def infer_cases(
    blocks: Sequence[np.ndarray],
    *,
    phash: Sequence[str] | None = None,
    phash_distance: int = 4,
    neighbours: int = 10,
    resolution: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Group tiles into inferred cases.

    Args:
        blocks: (N, D_b) feature blocks (e.g. :func:`colour_block`, pooled embeddings, as arrays
            or rows read on use: :class:`~histoflow.embeddings.store.TensorRows`); each is
            scaled to unit mean row norm, then divided by sqrt(number of blocks), so every block
            weighs the same whatever its width.
        phash: 16-hex-digit perceptual hashes; tiles within ``phash_distance`` bits end in one
            case.
        phash_distance: largest Hamming distance of a near-duplicate pair.
        neighbours: k of the k-nearest-neighbour graph (fewer when N is small).
        resolution: Louvain resolution; above 1 gives more, smaller cases.
        seed: Louvain's random order.

    Returns:
        ``case_id`` (``C0000`` ... numbered by first appearance, so stable for a fixed input)
        and ``case_confidence`` in [0, 1], one row per tile in input order.
    """
    import faiss
    from scipy import sparse
    from sknetwork.clustering import Louvain

    n = len(blocks[0])
    x = np.hstack([_unit_scale(_narrow(b, seed)) for b in blocks]) / np.float32(
        np.sqrt(len(blocks))
    )
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(neighbours, n - 1))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, idx = index.search(x, k + 1)  # (N, k + 1): each tile finds itself first
    del index, x
    idx = _drop_self(idx, k)

    rows = np.repeat(np.arange(n), k)
    cols = idx.reshape(-1)
    keep = (cols >= 0) & (cols != rows)
    knn = sparse.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=(n, n)
    )
    graph = knn.maximum(knn.T)  # symmetric: an edge whichever tile found the other
    del rows, cols, keep, knn
    if phash is not None:
        # A near-duplicate is a copy of one tile: an edge as strong as all its neighbours
        # together pulls both into one case, without chaining whole communities together.
        pairs = near_duplicate_pairs(list(phash), phash_distance)
        i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
        copies = sparse.csr_matrix((np.full(len(i), 2.0 * k, np.float32), (i, j)), shape=(n, n))
        graph = graph.maximum(copies).maximum(copies.T)
    louvain = Louvain(
        resolution=resolution,
        modularity="newman",
        shuffle_nodes=True,
        random_state=seed,
        return_probs=False,
        return_aggregate=False,
    )
    labels = np.asarray(louvain.fit_predict(graph.tocsr()), dtype=np.int64)
    # Number cases by their first tile, so the ids do not depend on Louvain's set order.
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    labels = rank[np.searchsorted(np.unique(labels), labels)]
    agree = (labels[idx] == labels[:, None]).mean(1) if k else np.ones(n)
    return pd.DataFrame(
        {"case_id": [f"C{c:04d}" for c in labels], "case_confidence": agree.round(4)}
    )


def _unit_scale(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block, dtype=np.float32)
    block = block - block.mean(0, dtype=np.float64).astype(np.float32)
    norm = np.linalg.norm(block, axis=1).mean()
    return block / np.float32(norm) if norm > 0 else block


def _narrow(block: np.ndarray, seed: int) -> np.ndarray:
    """``block`` as float32; wider than :data:`MAX_BLOCK_DIMS`, its leading principal components.

    The projection is fitted on a seeded sample of rows and applied chunk by chunk, so a
    float16 block of any length is never copied whole at a wider type.
    """
    if block.shape[1] <= MAX_BLOCK_DIMS or len(block) <= MAX_BLOCK_DIMS:
        return np.asarray(block[: len(block)], dtype=np.float32)  # rows read from disk too
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(block), min(len(block), _PCA_SAMPLE), replace=False))
    pca = PCA(n_components=MAX_BLOCK_DIMS, svd_solver="randomized", random_state=seed)
    pca.fit(np.asarray(block[sample], dtype=np.float32))
    return np.concatenate(
        [
            pca.transform(np.asarray(block[s : s + _CHUNK], dtype=np.float32)).astype(np.float32)
            for s in range(0, len(block), _CHUNK)
        ]
    )


def _drop_self(idx: np.ndarray, k: int) -> np.ndarray:
    """(N, k) neighbours without the query itself (a duplicate may come first instead)."""
    rows = np.arange(len(idx))[:, None]
    not_self = idx != rows
    order = np.argsort(~not_self, axis=1, kind="stable")  # the non-self entries first, in order
    return np.take_along_axis(idx, order, axis=1)[:, :k]


def read_cases(path) -> pd.DataFrame:
    """The inferred cases stage ``audit`` wrote (``path``, ``split``, ``case_id``, ``case_confidence``).

    Raises:
        FileNotFoundError: the table does not exist (stage ``audit`` has not run).
    """
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} not found: run `histoflow stage audit` (or `dvc repro`) first"
        )
    return pd.read_csv(
        path, dtype={"path": str, "split": str, "case_id": str}, keep_default_na=False
    )


def case_groups(index: pd.DataFrame, cases: pd.DataFrame | None) -> tuple[np.ndarray, str]:
    """(N,) group of each ``index`` row, and where it came from.

    ``patient_id`` when the data named patients (:func:`has_patient_ids`), else the inferred
    ``case_id`` (matched by path).

    Raises:
        ValueError: no patient ids and no inferred case for some row.
    """
    if "patient_id" in index and has_patient_ids(index):
        return index["patient_id"].astype(str).to_numpy(), "patient_id"
    found = None if cases is None else index["path"].map(cases.set_index("path")["case_id"])
    if found is None or found.isna().any():
        raise ValueError(
            "the data has no patient_id for every tile and no inferred case for every path: "
            "run stage audit on these features first"
        )
    return found.to_numpy(), "inferred"


def has_patient_ids(table: pd.DataFrame) -> bool:
    """Whether the data named patients (the importers fill a missing ``patient_id`` with the path)."""
    ids = table["patient_id"].astype(str)
    return bool((ids != "").all() and (ids != table["path"].astype(str)).any())
