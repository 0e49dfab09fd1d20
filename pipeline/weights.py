"""``python -m pipeline.weights``: see :mod:`pipeline.tools.weights`."""

import sys

from pipeline.tools.weights import main

if __name__ == "__main__":
    sys.exit(main())
