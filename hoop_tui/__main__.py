"""`python3 -m hoop_tui ...` is `hoop-tui ...`, for machines where the script is not on PATH."""

import sys

from hoop_tui.cli import main

sys.exit(main())
