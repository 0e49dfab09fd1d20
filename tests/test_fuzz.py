"""Property-based fuzzing of what reads untrusted bytes: manifests, attachment decoders, archive member names.

Properties: only the project's typed errors escape; no record is lost (one per
manifest line or row); every case ends within a time limit; nothing outside
the archive is read or written. ``FUZZ_EXAMPLES`` (default 40) sets the
examples per property: raise it for a longer hunt, e.g. ``FUZZ_EXAMPLES=2000``.
"""

import csv
import io
import json
import os
import signal
import tarfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from factory import image_bytes, video_bytes
from pipeline.data.archive import ArchiveError, open_archive
from pipeline.data.featurizer import Featurizer
from pipeline.data.limits import Limits
from pipeline.data.manifest import read_records
from pipeline.data.media import MediaSpec, decode_attachment
from pipeline.data.records import OUTSIDE_ARCHIVE, AttachmentError, Columns
from pipeline.data.text import train_tokenizer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
CASE_SECONDS = 10  # a case that takes longer is a hang
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
SPEC = MediaSpec(image_size=32, video_frames=2)
SECRET = b"secret bytes outside the archive"


@contextmanager
def time_limit(seconds: float = CASE_SECONDS):
    def expired(signum, frame):
        raise TimeoutError(f"case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def records_of(manifest: Path, columns: Columns = Columns()) -> list:
    """Every record of a one-manifest archive; only ArchiveError may escape."""
    with time_limit():
        archive = open_archive(manifest, Limits())
        try:
            return list(read_records(archive, columns))
        finally:
            archive.close()


def text_lines(data: bytes) -> list[str]:
    """The manifest's lines as a reader meets them: universal newlines."""
    return list(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=None))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
line_contents = st.one_of(
    st.binary(max_size=200),  # anything, invalid UTF-8 included
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=10) | st.integers() | st.none(),
            "text": st.text() | json_values,
            "attachments": st.lists(st.text(max_size=20), max_size=3) | st.text(max_size=30),
        },
        optional={"category": json_values},
    ).map(lambda d: json.dumps(d).encode()),
)


@FUZZ
@given(lines=st.lists(line_contents, max_size=20), newline=st.sampled_from([b"\n", b"\r\n"]))
def test_jsonl_manifest_gives_a_record_per_line(tmp_path_factory, lines, newline):
    folder = tmp_path_factory.mktemp("jsonl")
    data = newline.join(lines)
    (folder / "complaints.jsonl").write_bytes(data)
    try:
        records = records_of(folder / "complaints.jsonl", Columns(labels=("category",)))
    except ArchiveError:
        return  # e.g. the first object lacks the text column: the whole archive is refused, in one line
    assert len(records) == sum(1 for line in text_lines(data) if line.strip())
    for record in records:
        assert record.error or isinstance(record.text, str) and "\udcff" not in record.text


csv_fields = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ['"', '""', ",", "\n", "\r\n", "a\nb", " "]
)


@FUZZ
@given(
    rows=st.lists(st.tuples(csv_fields, csv_fields), max_size=15),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    huge=st.sampled_from([0, 0, 0, 3_000_000]),
)
def test_csv_manifest_keeps_every_row_through_quoting_and_newlines(tmp_path_factory, rows, quoting, huge):
    folder = tmp_path_factory.mktemp("csv")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, quoting=quoting)
    writer.writerow(["id", "text", "notes"])
    for n, (text, notes) in enumerate(rows):
        writer.writerow([f"r{n}", text + "x" * (huge if n == 0 else 0), notes])
    (folder / "complaints.csv").write_text(buf.getvalue(), encoding="utf-8", newline="")
    records = records_of(folder / "complaints.csv", Columns(attachments=None))
    assert [r.id for r in records] == [f"r{n}" for n in range(len(rows))]
    for record, (text, _) in zip(records, rows):
        assert record.error is None and record.text == (text + "x" * (huge if record.id == "r0" else 0)).strip()


@FUZZ
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_manifest_of_random_bytes_fails_only_in_the_typed_way(tmp_path_factory, data, suffix):
    folder = tmp_path_factory.mktemp("raw")
    (folder / f"complaints{suffix}").write_bytes(data)
    try:
        records = records_of(folder / f"complaints{suffix}")
    except ArchiveError:
        return
    if suffix == ".jsonl":
        assert len(records) == sum(1 for line in text_lines(data) if line.strip())


def valid_attachments() -> list[bytes]:
    return [
        image_bytes("JPEG", size=(48, 32)),
        image_bytes("PNG", size=(20, 30)),
        image_bytes("WEBP", size=(24, 24)),
        image_bytes("GIF", size=(16, 16)),
        image_bytes("BMP", size=(8, 8)),
        video_bytes(frames=6, size=32),
    ]


VALID = valid_attachments()
MAGIC = [
    b"\xff\xd8\xff\xe0",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"\x00\x00\x00\x18ftypisom",
    b"\x1a\x45\xdf\xa3",
    b"RIFF\x00\x00\x00\x00AVI ",
    b"BM",
    b"II*\x00",
]


def decodes_or_says_why(data: bytes) -> None:
    with time_limit():
        try:
            kind, tensor = decode_attachment(data, SPEC)
        except AttachmentError:
            return
    assert kind in ("image", "video") and tensor.dtype == np.uint8


@FUZZ
@given(data=st.binary(max_size=4000))
def test_random_bytes_never_crash_the_decoders(data):
    decodes_or_says_why(data)


@FUZZ
@given(which=st.integers(0, len(VALID) - 1), cut=st.floats(0, 1))
def test_truncated_files_never_crash_the_decoders(which, cut):
    data = VALID[which]
    decodes_or_says_why(data[: int(len(data) * cut)])


@FUZZ
@given(
    magic=st.sampled_from(MAGIC),
    rest=st.binary(max_size=3000),
    which=st.integers(0, len(VALID) - 1),
    keep=st.booleans(),
)
def test_valid_headers_with_random_bodies_never_crash_the_decoders(magic, rest, which, keep):
    body = VALID[which][len(magic) : len(magic) + len(rest)] if keep else rest
    decodes_or_says_why(magic + bytes(a ^ b for a, b in zip(body, rest)))


member_names = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(
        [
            "../secret.bin",
            "../../secret.bin",
            "/etc/passwd",
            "/tmp/secret.bin",
            "a/../../secret.bin",
            "media/../../secret.bin",
            "C:/secret.bin",
            "..\\secret.bin",
            "media/\x00.jpg",
            "./media/ok.jpg",
        ]
    ),
    st.text(st.characters(codec="utf-8"), min_size=200, max_size=300),
    st.lists(st.sampled_from(["..", ".", "media", "快递", "a b", ""]), min_size=1, max_size=6).map("/".join),
)


@FUZZ
@given(names=st.lists(member_names, min_size=1, max_size=6, unique=True), kind=st.sampled_from(["zip", "tar"]))
def test_member_names_never_reach_outside_the_archive(tmp_path_factory, names, kind):
    root = tmp_path_factory.mktemp("names")
    (root / "secret.bin").write_bytes(SECRET)
    photo = image_bytes(size=(8, 8))
    manifest = "".join(
        json.dumps({"id": f"c{n}", "text": "x", "attachments": [name]}) + "\n" for n, name in enumerate(names)
    )
    path = root / f"archive.{kind}"
    try:
        if kind == "zip":
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("complaints.jsonl", manifest)
                for name in names:
                    z.writestr(name, photo)
        else:
            with tarfile.open(path, "w") as t:
                for name, data in [("complaints.jsonl", manifest.encode()), *[(n, photo) for n in names]]:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
    except Exception:  # zipfile and tarfile refuse some names (empty, NUL, ...) in many ways
        assume(False)  # a name the archive format itself cannot hold
    before = sorted(p.name for p in root.iterdir())
    featurizer = Featurizer(train_tokenizer(["x"], vocab_size=50), SPEC)
    with time_limit():
        try:
            archive = open_archive(path, Limits())
        except ArchiveError:
            return
        try:
            records = list(read_records(archive, Columns()))
            samples = [featurizer(record, archive) for record in records]
        finally:
            archive.close()
    assert [r.id for r in records] == [f"c{n}" for n in range(len(names))]
    for name, sample in zip(names, samples):
        read = sample["images"]
        problems = sample["warnings"]
        assert len(read) + len(problems) == (1 if name.strip() else 0), (name, problems)  # the photo, or why not
        if problems and ".." in name.replace("\\", "/").split("/"):
            assert problems[0].startswith(OUTSIDE_ARCHIVE)
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written beside the archive
