"""``python -m pipeline.compare``: see :mod:`pipeline.tools.compare`."""

import sys

from pipeline.tools.compare import main

if __name__ == "__main__":
    sys.exit(main())
