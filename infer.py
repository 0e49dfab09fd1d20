"""Batch inference over complaint archives.

python infer.py --checkpoint runs/demo/<run> --input data/demo/test --output predictions.jsonl
"""

import sys

from pipeline.inference.command import main

if __name__ == "__main__":
    sys.exit(main())
