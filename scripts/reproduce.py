"""`reproduce`: see `vaecommon/commands/reproduce.py` (installed as `jaxvae-reproduce`)."""

import sys

from vaecommon.commands.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
