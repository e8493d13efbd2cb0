"""``python -m histoflow``: the ``histoflow`` command."""

import sys

from histoflow.cli import main

sys.exit(main())
