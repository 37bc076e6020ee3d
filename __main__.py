"""``python -m numbagrad``: the command line of :mod:`numbagrad.cli`."""

import sys

from .cli import main

sys.exit(main())
