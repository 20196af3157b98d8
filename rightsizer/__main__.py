"""``python -m rightsizer``: see rightsizer/cli.py."""

import sys

from rightsizer.cli import main

sys.exit(main())
