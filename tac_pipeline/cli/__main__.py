"""``python -m tac_pipeline.cli``: see :mod:`tac_pipeline.cli.commands`."""

import sys

from tac_pipeline.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
