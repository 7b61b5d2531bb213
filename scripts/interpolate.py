"""`interpolate`: see `vaecommon/commands/interpolate.py` (installed as `jaxvae-interpolate`)."""

import sys

from vaecommon.commands.interpolate import main

if __name__ == "__main__":
    sys.exit(main())
