"""A running Label Studio, through ``label-studio-sdk`` (the ``review`` extra): a project made or found by its
title, tasks imported into it, and its annotations exported back."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator

from pipeline.review_queue.errors import ReviewError

URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
PROJECT_URL = re.compile(r"^(https?://.+?)/projects/(\d+)")


def client(url: str | None, api_key: str | None):
    """``(an SDK client, its URL)`` for ``url`` (default ``$LABEL_STUDIO_URL``) with ``api_key`` (default
    ``$LABEL_STUDIO_API_KEY``: a personal access token or a legacy token, from Label Studio's account page)."""
    url, api_key = url or os.environ.get(URL_ENV), api_key or os.environ.get(KEY_ENV)
    if not url or not api_key:
        raise ReviewError(f"give --label-studio URL and --api-key KEY (or set {URL_ENV} and {KEY_ENV})")
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise ReviewError("label-studio-sdk is not installed: pip install -e '.[review]'") from None
    url = url.rstrip("/")
    return LabelStudio(base_url=url, api_key=api_key), url


@contextlib.contextmanager
def answering(url: str) -> Iterator[None]:
    """The server's refusals and silences as one line each."""
    from httpx import HTTPError
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as e:
        detail = e.body.get("detail") if isinstance(e.body, dict) else e.body
        raise ReviewError(f"Label Studio at {url} refused: HTTP {e.status_code}: {detail}") from None
    except (HTTPError, OSError) as e:
        raise ReviewError(f"Label Studio at {url} does not answer: {e}") from None


def push(ls, title: str, config: str, tasks: list[dict]) -> int:
    """Import ``tasks`` into the project called ``title`` (made with ``config`` if there is none; an existing
    one must have the same config). Returns the project's id."""
    project = next((p for p in ls.projects.list(title=title) if p.title == title), None)
    if project is None:
        project = ls.projects.create(title=title, label_config=config)
    elif ls.projects.get(id=project.id).label_config.strip() != config.strip():
        raise ReviewError(
            f"Label Studio project {title!r} (id {project.id}) has another labelling config: "
            "give another --project title"
        )
    ls.projects.import_tasks(id=project.id, request=tasks)
    return project.id


def pull(source: str, api_key: str | None) -> list[dict]:
    """Every task of the project at ``source`` (``http(s)://HOST/projects/ID/...``) with its annotations,
    as Label Studio's JSON export gives them, each annotator named by e-mail."""
    found = PROJECT_URL.match(source)
    if not found:
        raise ReviewError(f"{source}: a project's address looks like http://HOST:PORT/projects/ID")
    ls, url = client(found.group(1), api_key)
    with answering(url):
        tasks = json.loads(
            b"".join(
                ls.projects.exports.download_sync(int(found.group(2)), export_type="JSON", download_all_tasks=True)
            )
        )
        emails = {user.id: user.email for user in ls.users.list()}
    for task in tasks:  # the export names annotators by user id
        for annotation in task.get("annotations") or []:
            who = annotation.get("completed_by")
            if isinstance(who, int) and who in emails:
                annotation["completed_by"] = {"id": who, "email": emails[who]}
    return tasks
