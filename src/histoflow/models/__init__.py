"""Pure torch networks and their factories.

Image encoders (timm, foundation models, hybrids), the cross-attention fusion network and its
ablations, and safetensors model folders.

Training them is :mod:`histoflow.training`'s job. Import the submodule you need.
"""

__all__ = ["ablations", "checkpoint", "encoder", "foundation", "fusion", "hybrid"]
