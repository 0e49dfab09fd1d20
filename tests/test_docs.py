"""The documentation site: the reference pages list every option the commands print."""

import os
import re
import subprocess
import sys

import pytest

from factory import ROOT

COMMANDS = {
    "train.md": ["train.py", "fit"],
    "infer.md": ["infer.py"],
    "sweep.md": ["-m", "pipeline.sweep"],
    "serve.md": ["-m", "pipeline.serve"],
}


@pytest.fixture(scope="module")
def printed() -> dict[str, str]:
    """Each command's --help, the four started at once."""
    env = {**os.environ, "COLUMNS": "120"}
    procs = {
        page: subprocess.Popen(
            [sys.executable, *command, "--help"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for page, command in COMMANDS.items()
    }
    return {page: proc.communicate(timeout=300)[0] for page, proc in procs.items()}


@pytest.mark.parametrize("page", COMMANDS)
def test_the_reference_lists_every_option_the_command_prints(printed, page):
    options = set(re.findall(r"(?<![\w-])--[A-Za-z][\w.-]*", printed[page]))
    assert len(options) > 5
    listed = (ROOT / "docs" / "reference" / page).read_text(encoding="utf-8")
    missing = sorted(o for o in options if not re.search(re.escape(o) + r"(?![\w.-])", listed))
    assert not missing, f"docs/reference/{page} lacks {missing}: run python docs/generate_reference.py"
