"""``embed`` on two CPU processes (DDP over gloo) writes the features one process writes."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import load_file

from histoflow.stages.embed import Inputs, Outputs, run


def test_embed_on_two_processes_equals_one(reproduced_project, tiny_params, tmp_path):
    inputs = Inputs(**{k: reproduced_project / v for k, v in vars(Inputs()).items()})
    # Batches of 5: each rank's share of the 48 tiles ends with a partial batch.
    embed = tiny_params.embed.model_copy(
        update={"precision": "32", "accelerator": "cpu", "batch_size": 5, "num_workers": 0}
    )
    two = embed.model_copy(update={"devices": 2, "strategy": "ddp_spawn"})

    run(tiny_params.model_copy(update={"embed": embed}), inputs, Outputs(tmp_path / "one/embed"))
    run(tiny_params.model_copy(update={"embed": two}), inputs, Outputs(tmp_path / "two/embed"))

    one_proc = load_file(tmp_path / "one/embed/features.safetensors")
    two_proc = load_file(tmp_path / "two/embed/features.safetensors")
    for name in ("text_pooled", "text_tokens", "text_mask"):  # computed once, by rank 0
        assert np.array_equal(one_proc[name], two_proc[name]), name
    # Each CPU rank runs one torch thread (Lightning's DDP on CPU), and another reduction order
    # can flip the last float16 bit of a value: nearly all are equal, the rest one ulp apart.
    for name in ("image_pooled", "image_tokens"):
        a, b = one_proc[name].astype(np.float32), two_proc[name].astype(np.float32)
        assert (a == b).mean() > 0.99, name
        np.testing.assert_allclose(a, b, rtol=2**-10, atol=2**-14, err_msg=name)
    assert not list((tmp_path / "two").glob(".embed-shards-*"))  # the shards are cleaned up
