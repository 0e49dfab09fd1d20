"""``python -m pipeline.export RUN_DIR [--int8] [--output DIR]``: export a trained run to ONNX.

Writes ``RUN_DIR/export/model.onnx`` (and ``model.int8.onnx`` with ``--int8``, when it is close enough to the
eager model) and ``export.json`` (see :mod:`pipeline.export.folder`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.core.run_files import CheckpointError
from pipeline.export.export_files import INFO_FILE, ExportError, export_folder
from pipeline.export.folder import export_run
from pipeline.export.int8 import INT8_TOLERANCE
from pipeline.models.trained_run import load_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.export", description="Export a trained run to ONNX.")
    p.add_argument("run", help="run folder printed by train.py, or a .ckpt file in it")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic INT8 quantisation)")
    p.add_argument(
        "--int8-tolerance",
        type=float,
        default=INT8_TOLERANCE,
        help="largest difference from the eager model's probabilities at which the INT8 graph is kept "
        "(default %(default)s)",
    )
    p.add_argument("--output", help="folder to write (default: RUN/export)")
    args = p.parse_args(argv)
    try:
        run = load_run(args.run)
        dest = export_run(
            run,
            Path(args.output) if args.output else export_folder(run.run_dir, run.checkpoint_sha256),
            args.int8,
            args.int8_tolerance,
        )
    except (CheckpointError, ExportError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    info = json.loads((dest / INFO_FILE).read_text())
    for graph in info["graphs"].values():
        size = f"{(dest / graph['file']).stat().st_size / 2**20:.1f} MiB, " if graph["kept"] else "not kept: "
        print(f"{dest / graph['file']}  ({size}{graph['max_difference_from_eager']:.2g} from eager: {graph['why']})")
    print(f"{dest / INFO_FILE}: inputs {', '.join(i['name'] for i in info['inputs'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
