"""`evaluate`: see `vaecommon/commands/evaluate.py` (installed as `jaxvae-evaluate`)."""

import sys

from vaecommon.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
