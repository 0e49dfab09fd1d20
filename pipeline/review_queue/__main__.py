"""Send the rows that need review to Label Studio, and bring the reviewers' labels back as a training archive.

    python -m pipeline.review_queue export PREDICTIONS --input ARCHIVE --output DIR
        [--all | --least-confident N] [--label-studio URL --api-key KEY [--project TITLE]]
    python -m pipeline.review_queue import EXPORT.json|http://HOST/projects/ID --output ARCHIVE

``export`` writes ``DIR/tasks.json`` (Label Studio's task import format, the model's labels as
pre-annotations) and ``DIR/config.xml`` (the labelling config: one group of choices per task). With
``--label-studio`` it also creates (or reuses) the project and imports the tasks. ``import`` turns Label
Studio's JSON export, or the project itself, into a labelled archive (``complaints.jsonl`` and the
attachments) that ``train.py`` reads with ``--data.reviewed``.

Exit status: 0 done, 2 the command could not run (one line saying why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.review_queue.errors import ReviewError

PROJECT_TITLE = "complaint review"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.review_queue", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    e = commands.add_parser("export", help="prediction rows to Label Studio tasks")
    e.add_argument("predictions", type=Path, help="a prediction file of infer.py (JSONL, CSV or Parquet)")
    e.add_argument("--input", nargs="+", help="the archive(s) predicted (default: those infer.py recorded)")
    e.add_argument("--output", type=Path, required=True, help="folder for tasks.json and config.xml")
    e.add_argument("--run", help="the run that predicted (default: the checkpoint infer.py recorded)")
    which = e.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every row with a prediction, not only needs_review")
    which.add_argument("--least-confident", type=int, metavar="N", help="the N rows of lowest confidence")
    e.add_argument(
        "--label-studio",
        metavar="URL",
        help="also import the tasks into this Label Studio (default: $LABEL_STUDIO_URL when --api-key is given)",
    )
    e.add_argument("--api-key", help="Label Studio access token (default: $LABEL_STUDIO_API_KEY)")
    e.add_argument("--project", default=PROJECT_TITLE, help=f"Label Studio project title (default: {PROJECT_TITLE!r})")
    i = commands.add_parser("import", help="Label Studio's annotations to a labelled archive")
    i.add_argument("source", help="Label Studio JSON export file, or a project's address http://HOST/projects/ID")
    i.add_argument("--output", type=Path, required=True, help="the archive folder to write")
    i.add_argument("--run", help="the run whose tasks and classes the labels belong to (default: the tasks' run)")
    i.add_argument("--input", help="read the attachments from this archive (default: the one each task names)")
    i.add_argument(
        "--api-key", help="Label Studio access token, for a project's address (default: $LABEL_STUDIO_API_KEY)"
    )
    i.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    args = p.parse_args(argv)
    if args.command == "export" and args.least_confident is not None and args.least_confident < 1:
        p.error("--least-confident must be at least 1")
    return args


def export(args: argparse.Namespace) -> None:
    from pipeline.review_queue.export import CONFIG_XML, TASKS_FILE, export_queue

    done = export_queue(args.predictions, args.input, args.output, args.run, args.all, args.least_confident)
    chosen = (
        "all rows"
        if args.all
        else f"the {args.least_confident} least confident"
        if args.least_confident
        else "rows that need review"
    )
    print(
        f"{len(done.queue)} tasks ({chosen}; {done.rows} rows, {done.without_prediction} without a prediction) "
        f"-> {args.output / TASKS_FILE}, labelling config {args.output / CONFIG_XML}; "
        f"{done.photos} photos inline, {done.notes} tasks with notes"
    )
    if done.not_in_archive:
        shown = ", ".join(done.not_in_archive[:5]) + (", ..." if len(done.not_in_archive) > 5 else "")
        print(f"{len(done.not_in_archive)} row(s) not found in the archive, left out: ids {shown}", file=sys.stderr)
    if (args.label_studio or args.api_key) and not done.queue:
        print("nothing to send to Label Studio")
    elif args.label_studio or args.api_key:
        from pipeline.review_queue.label_studio import answering, client, push

        ls, url = client(args.label_studio, args.api_key)
        with answering(url):
            project = push(ls, args.project, done.config, done.queue)
        print(
            f"{len(done.queue)} tasks imported into Label Studio project {args.project!r}: "
            f"open {url}/projects/{project}"
        )


def import_(args: argparse.Namespace) -> None:
    from pipeline.core.run_files import LABELS_FILE
    from pipeline.review_queue.corrections import MANIFEST, import_corrections, read_export
    from pipeline.review_queue.export import reviewed_run

    if args.source.startswith(("http://", "https://")):
        from pipeline.review_queue.label_studio import pull

        tasks = pull(args.source, args.api_key)
    else:
        tasks = read_export(Path(args.source))
    run = args.run or next((t["data"]["run"] for t in tasks if (t.get("data") or {}).get("run")), None)
    if not run:
        raise ReviewError(f"no run named in the tasks: give --run RUN_FOLDER (its {LABELS_FILE} has the tasks)")
    labels = reviewed_run(run, {}).labels
    done = import_corrections(tasks, labels, args.output, args.input, args.overwrite)
    print(
        f"{done.records} reviewed records -> {args.output / MANIFEST} ({done.attachments} attachments copied); "
        f"left out: {done.skipped} skipped by the reviewer, {done.unfinished} not finished"
    )
    if done.missing_attachments:
        print(
            f"{len(done.missing_attachments)} attachment(s) not copied (the record kept without them): "
            + "; ".join(done.missing_attachments[:3]),
            file=sys.stderr,
        )
    for (task, label), n in sorted(done.unknown_labels.items()):
        print(
            f"task {task!r}: label {label!r} ({n} record(s)) is not one of the run's classes "
            f"{labels.classes[task]}; kept as the reviewer chose it",
            file=sys.stderr,
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "export":
            export(args)
        else:
            import_(args)
    except ReviewError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
