"""`to_records`: see `vaecommon/commands/to_records.py` (installed as `jaxvae-to-records`)."""

import sys

from vaecommon.commands.to_records import main

if __name__ == "__main__":
    sys.exit(main())
