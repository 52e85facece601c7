"""`python -m renderers render ...` / `python -m renderers render-batch ...`."""

import sys

from renderers.cli import main

sys.exit(main())
