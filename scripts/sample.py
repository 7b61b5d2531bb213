"""`sample`: see `vaecommon/commands/sample.py` (installed as `jaxvae-sample`)."""

import sys

from vaecommon.commands.sample import main

if __name__ == "__main__":
    sys.exit(main())
