"""``python -m pipeline.doctor``: see :mod:`pipeline.tools.doctor`."""

import sys

from pipeline.tools.doctor import main

if __name__ == "__main__":
    sys.exit(main())
