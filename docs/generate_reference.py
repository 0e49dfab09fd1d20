"""Write the reference pages from the commands' own parsers: ``python docs/generate_reference.py``.

Each command's ``--help`` (LightningCLI's for ``train.py fit``, argparse's for the others) becomes a page of
tables, one per option group; every ``configs/*.yaml`` is shown as it is. ``tests/test_docs.py`` checks that the
pages list every option the commands print, so a new option without a new page fails the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
COMMANDS = {  # page: (title, the command line whose --help it shows)
    "train.md": ("train.py fit", ["train.py", "fit"]),
    "infer.md": ("infer.py", ["infer.py"]),
    "sweep.md": ("python -m pipeline.sweep", ["-m", "pipeline.sweep"]),
    "serve.md": ("python -m pipeline.serve", ["-m", "pipeline.serve"]),
    "weights.md": ("python -m pipeline.weights get", ["-m", "pipeline.weights", "get"]),
}
ENTRY = re.compile(r"^  (\S.*?)(?:\s{2,}(\S.*))?$")  # "  --flag ARG    help" or "  --flag ARG" alone


def help_text(command: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "120", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def groups(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """``--help`` as its option groups: (title, [(flags, help), ...]); a group of ``--model.*`` options is titled
    ``model``, its description after it."""
    out: list[tuple[list[str], list[list[str]]]] = []
    for line in text.split("\n\n", 1)[1].splitlines():  # past the usage lines
        if line and not line.startswith(" "):
            if out and not out[-1][1]:
                out[-1][0].append(line.strip())  # a title wrapped onto the next line
            else:
                out.append(([line.strip()], []))
        elif out and (m := ENTRY.match(line)):
            out[-1][1].append([m.group(1).strip(), m.group(2) or ""])
        elif out and line.strip():
            if out[-1][1]:
                entry = out[-1][1][-1]
                entry[1] = f"{entry[1]} {line.strip()}".strip()
            else:
                out[-1][0].append(line.strip())  # a group's description
    titled = []
    for title, entries in out:
        if not entries:
            continue
        first = entries[-1][0].split()[0].lstrip("-").rstrip(",")
        section = first.rsplit(".", 1)[0] if "." in first else ""
        heading = title[0].rstrip(":")[:100]
        titled.append((f"{section}: {heading}" if section else heading, [(f, h) for f, h in entries]))
    return titled


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def command_page(title: str, command: list[str]) -> str:
    text = help_text(command)
    lines = [f"# `{title}`", "", f"Generated from `{title} --help` by `python docs/generate_reference.py`.", ""]
    for group, entries in groups(text):
        lines += [f"## {cell(group)}", "", "| option | what it does |", "|---|---|"]
        lines += [f"| `{cell(flags)}` | {cell(help_)} |" for flags, help_ in entries]
        lines.append("")
    return "\n".join(lines)


def configs_page() -> str:
    lines = ["# Config files", "", "Every file in `configs/`, as it is (`python docs/generate_reference.py`).", ""]
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        lines += [f"## `{path.relative_to(ROOT)}`", "", "```yaml", path.read_text(encoding="utf-8").rstrip(), "```", ""]
    return "\n".join(lines)


def main() -> None:
    REFERENCE.mkdir(parents=True, exist_ok=True)
    for page, (title, command) in COMMANDS.items():
        (REFERENCE / page).write_text(command_page(title, command), encoding="utf-8")
    (REFERENCE / "configs.md").write_text(configs_page(), encoding="utf-8")
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
