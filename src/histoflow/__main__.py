import sys

from histoflow.cli import main

sys.exit(main())
