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


@pytest.mark.parametrize("page, command", COMMANDS.items())
def test_the_reference_lists_every_option_the_command_prints(page, command):
    env = {**os.environ, "COLUMNS": "120"}
    printed = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    options = set(re.findall(r"(?<![\w-])--[A-Za-z][\w.-]*", printed))
    assert len(options) > 5
    listed = (ROOT / "docs" / "reference" / page).read_text(encoding="utf-8")
    missing = sorted(o for o in options if not re.search(re.escape(o) + r"(?![\w.-])", listed))
    assert not missing, f"docs/reference/{page} lacks {missing}: run python docs/generate_reference.py"
