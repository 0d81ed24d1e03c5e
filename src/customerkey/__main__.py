"""``python -m customerkey``: the ``customerkey`` command (``customerkey.cli.main``)."""

import sys

from customerkey.cli.main import main

sys.exit(main())
