"""`compare`: see `vaecommon/commands/compare.py` (installed as `jaxvae-compare`)."""

import sys

from vaecommon.commands.compare import main

if __name__ == "__main__":
    sys.exit(main())
