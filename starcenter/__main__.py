"""``python -m starcenter``: the command line."""

import sys

from starcenter.cli import main

sys.exit(main())
