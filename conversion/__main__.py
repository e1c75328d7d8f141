"""``python -m conversion`` is ``bart-convert``."""

import sys

from conversion.cli import main

sys.exit(main())
