"""``python -m cello``: the ``cello`` command."""

import sys

from .cli import main

sys.exit(main())
