"""``python -m gofast``: the ``gofast`` command (see gofast.cli)."""

import sys

from .cli import main

sys.exit(main())
