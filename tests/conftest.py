import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

from factory import bad_archive  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Fitted vocabularies are cached by fingerprint; keep the tests' cache out of ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def bad(tmp_path_factory):
    """The archive with every bad-attachment case: (folder, {id: expected reason})."""
    return bad_archive(tmp_path_factory.mktemp("badcase"))
