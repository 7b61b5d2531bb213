"""`reconstruct`: see `vaecommon/commands/reconstruct.py` (installed as `jaxvae-reconstruct`)."""

import sys

from vaecommon.commands.reconstruct import main

if __name__ == "__main__":
    sys.exit(main())
