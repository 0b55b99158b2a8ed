"""``python -m sdnet``: the same as the ``sdnet`` command."""

import sys

from sdnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
