"""``python -m syncd`` runs the CLI."""

import sys

from syncd.cli.main import main

sys.exit(main())
