"""`parity`: see `parity_tests/cli.py` (installed as `jaxvae-parity`)."""

import sys

from parity_tests.cli import main

if __name__ == "__main__":
    sys.exit(main())
