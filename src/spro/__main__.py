"""`python -m spro ...` (and `accelerate launch -m spro train ...`)."""

import sys

from spro.cli import main

if __name__ == "__main__":
    sys.exit(main())
