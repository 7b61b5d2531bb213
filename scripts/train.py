"""`train`: see `vaecommon/commands/train.py` (installed as `jaxvae-train`)."""

import sys

from vaecommon.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
