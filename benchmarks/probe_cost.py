"""Time of ``evaluate``'s encoder probes at their row cap (``evaluate.probes.max_rows``).

Runs :func:`histoflow.evaluation.probes.run_probes` with the defaults of ``evaluate.probes``
(5 seeds, kNN k = 20, few-shot 1/5/10 shots x 100 episodes) on 10,000 fit and 10,000 test
embeddings of 6 classes (Gaussian clusters, seeded), at 512 dimensions (resnet18) and 1,280
(EfficientNet-Lite0, the default encoder): what the probes add to ``evaluate`` at any dataset
size, since larger sets are drawn down to the cap. ``--quick``: 500 + 500 rows, 64 dimensions,
2 seeds, 5 episodes.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _harness import main  # benchmarks/ is on sys.path

from histoflow.config import ProbesConfig
from histoflow.evaluation.probes import run_probes


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """One figure per width: the probes' wall time, ``repeats`` times."""
    p = ProbesConfig()
    rows = 500 if quick else p.max_rows
    widths = (64,) if quick else (512, 1280)
    seeds, episodes = (2, 5) if quick else (p.seeds, p.episodes)
    figures = []
    for d in widths:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 6, 2 * rows)
        x = (rng.normal(size=(2 * rows, d)) + 2 * np.eye(6, d)[y]).astype(np.float32)
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            run_probes(
                x[:rows],
                y[:rows],
                x[rows:],
                y[rows:],
                seeds=range(seeds),
                k=p.k,
                shots=p.shots,
                episodes=episodes,
            )
            samples.append(time.perf_counter() - started)
        figures.append(
            {
                "figure": f"probes at the cap: {rows:,} + {rows:,} rows x {d} dims",
                "unit": "s",
                "samples": samples,
            }
        )
    return figures


if __name__ == "__main__":
    sys.exit(main(__doc__))
