"""``python -m syncd`` runs the CLI."""

import sys

from syncd.cli import main

sys.exit(main())
