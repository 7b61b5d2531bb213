"""`latent_map`: see `vaecommon/commands/latent_map.py` (installed as `jaxvae-latent-map`)."""

import sys

from vaecommon.commands.latent_map import main

if __name__ == "__main__":
    sys.exit(main())
