"""`study`: see `vaecommon/commands/study.py` (installed as `jaxvae-study`)."""

import sys

from vaecommon.commands.study import main

if __name__ == "__main__":
    sys.exit(main())
