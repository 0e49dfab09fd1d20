"""One complaint as a client sends it, checked before it reaches a model worker: JSON (``id``, ``text``,
``attachments``: ``[{name, data}]`` with base64 bytes) or a form (``id`` and ``text`` fields, files if multipart).

Everything a client can get wrong about the request itself is a :class:`BadRequest` with its status and one line.
What is wrong inside an attachment (its type, a decompression bomb, a video over the limits, a name with ``..``) is
not: the record's reading handles it as an archive's, as a warning on the row.
"""

from __future__ import annotations

import base64
import binascii
import json

JSON, FORM, URLENCODED = "application/json", "multipart/form-data", "application/x-www-form-urlencoded"
DEFAULT_ID = "request"


class BadRequest(Exception):
    """A request refused as a whole: its HTTP status and one line saying what was wrong."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def checked(item: object) -> dict:
    """The complaint in its one form ``{"id": str, "text": str, "attachments": [{"name", "data"}]}``, ``data``
    still base64 (checked here, decoded by the worker)."""
    if not isinstance(item, dict):
        raise BadRequest(400, f"expected a JSON object with text and/or attachments, got {type(item).__name__}")
    unknown = sorted(set(item) - {"id", "text", "attachments"})
    if unknown:
        raise BadRequest(400, f"unknown field(s) {unknown}: expected id, text, attachments")
    rid = item.get("id", DEFAULT_ID)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid).strip() == "":
        raise BadRequest(400, f"id: expected a non-empty string or a number, got {rid!r}"[:200])
    text = item.get("text")
    if text is not None and not isinstance(text, str):
        raise BadRequest(400, f"text: expected a string, got {type(text).__name__}")
    attachments = item.get("attachments") or []
    if not isinstance(attachments, list):
        raise BadRequest(400, "attachments: expected a list of {name, data} (data: base64)")
    for i, a in enumerate(attachments):
        if not (isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("data"), str)):
            raise BadRequest(400, f"attachments[{i}]: expected {{name: string, data: base64 string}}")
        try:
            base64.b64decode(a["data"], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(400, f"attachments[{i}] ({a['name'][:100]}): data is not valid base64") from None
    if not (text or "").strip() and not attachments:
        raise BadRequest(400, "no text and no attachments: nothing to analyse")
    return {
        "id": str(rid).strip(),
        "text": text or "",
        "attachments": [{"name": a["name"], "data": a["data"]} for a in attachments],
    }


def from_json(body: bytes) -> dict:
    try:
        item = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(400, f"the body is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    return checked(item)


async def from_form(form) -> dict:
    """A form (starlette's ``FormData``): ``id`` and ``text`` fields, every file an attachment."""
    item: dict = {"attachments": []}
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            item["attachments"].append(
                {"name": value.filename or key, "data": base64.b64encode(await value.read()).decode("ascii")}
            )
        elif key in ("id", "text"):
            item[key] = value
        else:
            raise BadRequest(400, f"unknown form field {key!r}: expected id, text and files")
    return checked(item)
