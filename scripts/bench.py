"""`bench`: see `vaecommon/commands/bench.py` (installed as `jaxvae-bench`)."""

import sys

from vaecommon.commands.bench import main

if __name__ == "__main__":
    sys.exit(main())
