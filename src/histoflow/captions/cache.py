"""Caption cache: one SQLite file of captions keyed by image content and by what captioned it.

A caption is stored under ``(image sha256, backend, model id, model revision, prompt hash)``,
so renaming or moving an image keeps its caption, while changing the backend, the model, its
revision or the prompt misses and captions again. Each :meth:`CaptionCache.put_many` call is
one transaction: a process killed mid-run loses at most the batch it was writing, and the next
run resumes from the rest. The file is in WAL mode, so a reader (a progress monitor, a test)
can look at it while a run writes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import astuple, dataclass
from pathlib import Path
from types import TracebackType

from histoflow.config import CaptionsConfig

__all__ = ["MORPHOLOGY_REVISION", "CacheKey", "CaptionCache", "key_for", "prompt_hash"]

# Modules whose code decides the morphology captioner's wording: the captioner and the
# colour/stain maps it measures with.
_MORPHOLOGY_SOURCES = ("histoflow.captions.morphology", "histoflow.data.quality.features")
# SQLite allows 32,766 host parameters per statement since 3.32; stay far below older limits.
_CHUNK = 900
_BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    sha256 TEXT NOT NULL,
    backend TEXT NOT NULL,
    model_id TEXT NOT NULL,
    revision TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    caption TEXT NOT NULL,
    created REAL NOT NULL,  -- unix time
    PRIMARY KEY (backend, model_id, revision, prompt_hash, sha256)
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class CacheKey:
    """What produced a caption; captions made under another key are never returned."""

    backend: str
    model_id: str
    revision: str
    prompt_hash: str


def prompt_hash(prompt: str) -> str:
    """First 16 hex digits of the sha256 of the prompt's UTF-8 text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def _source_hash(modules: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)  # finds the file without importing scipy & co.
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:16]


# The morphology captioner has no model version: its "revision" is a hash of its source, so
# any edit to the code that words captions recaptions everything (cheap: hundreds per second),
# and nobody has to remember to bump a constant.
MORPHOLOGY_REVISION = _source_hash(_MORPHOLOGY_SOURCES)


def key_for(captions: CaptionsConfig) -> CacheKey:
    """The cache key of the captioner that ``captions`` (the params section) describes.

    The morphology backend has no model or prompt: model id ``morphology``, revision
    :data:`MORPHOLOGY_REVISION` and the hash of the empty prompt. A vlm is keyed by its model
    id, by :func:`histoflow.captions.vlm.model_revision` (the sha256 of a local folder's files,
    or the commit a hub revision resolves to in the local cache; found without loading the
    model) and by its prompt together with the generation settings that change the text
    (``max_new_tokens``, ``seed``).
    """
    if captions.backend == "morphology":
        return CacheKey("morphology", "morphology", MORPHOLOGY_REVISION, prompt_hash(""))
    from histoflow.captions.vlm import model_revision  # imports torch: only for this backend

    return CacheKey(
        captions.backend,
        captions.model,
        model_revision(captions.model, captions.revision),
        prompt_hash(f"{captions.prompt}\n{captions.max_new_tokens}\n{captions.seed}"),
    )


class CaptionCache:
    """Captions on disk, keyed by image sha256 and :class:`CacheKey`.

    Example:
        >>> with CaptionCache(Path("outputs/captions/.caption_cache.sqlite")) as cache:
        ...     cache.put_many({"ab12...": "densely cellular tissue; ..."}, key)
        ...     cache.get_many(["ab12...", "cd34..."], key)  # doctest: +SKIP
        {'ab12...': 'densely cellular tissue; ...'}
    """

    def __init__(self, path: Path):
        """Open (or create) the cache file at ``path``, creating its folder if needed."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly in put_many, nowhere else.
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL loses no committed transaction when the process dies, only
        # possibly the last ones on power loss, which costs a recaption, not a wrong caption.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute(_SCHEMA)

    def get_many(self, shas: Iterable[str], key: CacheKey) -> dict[str, str]:
        """Cached captions of ``shas`` under ``key``: ``{sha256: caption}``, hits only."""
        return dict(self._select("sha256, caption", shas, key))

    def cached(self, shas: Iterable[str], key: CacheKey) -> set[str]:
        """Those of ``shas`` with a caption under ``key`` (the captions are not read)."""
        return {sha for (sha,) in self._select("sha256", shas, key)}

    def count(self, shas: Iterable[str], key: CacheKey) -> int:
        """How many of the distinct ``shas`` have a caption under ``key``."""
        return sum(n for (n,) in self._select("COUNT(*)", shas, key))

    def _select(self, columns: str, shas: Iterable[str], key: CacheKey) -> Iterator[tuple]:
        shas = list(dict.fromkeys(shas))
        for start in range(0, len(shas), _CHUNK):
            chunk = shas[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from self._conn.execute(
                f"SELECT {columns} FROM captions WHERE backend = ? AND model_id = ? "
                f"AND revision = ? AND prompt_hash = ? AND sha256 IN ({marks})",
                (*astuple(key), *chunk),
            )

    def put_many(self, items: Mapping[str, str], key: CacheKey) -> None:
        """Store ``{sha256: caption}`` under ``key`` in one transaction: all of it or none.

        An existing caption for the same sha256 and key is replaced.
        """
        now = time.time()
        rows = ((sha, *astuple(key), caption, now) for sha, caption in items.items())
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT OR REPLACE INTO captions "
                "(sha256, backend, model_id, revision, prompt_hash, caption, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        except BaseException:  # KeyboardInterrupt too: never commit half a batch
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def __len__(self) -> int:
        """Number of stored captions, under every key."""
        return self._conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0]

    def close(self) -> None:
        """Close the file; the cache cannot be used afterwards."""
        self._conn.close()

    def __enter__(self) -> CaptionCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
