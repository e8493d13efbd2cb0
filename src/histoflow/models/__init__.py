"""Models: the timm encoder factory, the fusion network (pure torch), their Lightning training
wiring, and safetensors model folders."""

__all__ = ["checkpoint", "encoder", "fusion", "lightning"]
