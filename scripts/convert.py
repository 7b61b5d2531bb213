"""`convert`: see `vaecommon/commands/convert.py` (installed as `jaxvae-convert`)."""

import sys

from vaecommon.commands.convert import main

if __name__ == "__main__":
    sys.exit(main())
