"""`figures`: see `vaecommon/commands/figures.py` (installed as `jaxvae-figures`)."""

import sys

from vaecommon.commands.figures import main

if __name__ == "__main__":
    sys.exit(main())
