"""``python -m runstash``: the runstash command."""

import sys

from .cli import main

sys.exit(main())
