"""`python -m callrec` runs the command line."""

import sys

from callrec.cli.main import main

sys.exit(main())
