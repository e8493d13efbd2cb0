"""histoflow: reproducible, orchestrated, monitored medical image classification.

Packages: ``data``, ``captions``, ``models``, ``evaluation``, ``monitoring``, ``registry`` and
``stages`` (one module per ``dvc.yaml`` stage); ``cli`` is the ``histoflow`` command.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
