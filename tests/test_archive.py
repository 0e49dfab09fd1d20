import os
import zipfile

import pytest

from factory import image_bytes, pack, pack_bad, write_manifest
from pipeline.data.archive import ArchiveError, open_archive, safe_member_name
from pipeline.data.limits import Limits
from pipeline.data.manifest import read_records
from pipeline.data.records import Columns


def tree(path):
    return sorted(str(p) for p in path.rglob("*"))


@pytest.mark.parametrize(
    "name,expected",
    [
        ("media/a.jpg", "media/a.jpg"),
        ("./media//a.jpg", "media/a.jpg"),
        ("media\\a.jpg", "media/a.jpg"),
        ("../a.jpg", None),
        ("media/../../a.jpg", None),
        ("/etc/passwd", None),
        ("C:/windows/a.jpg", None),
        ("", None),
    ],
)
def test_safe_member_name(name, expected):
    assert safe_member_name(name) == expected


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz"])
def test_reads_attachments_in_place(tmp_path, kind):
    root = tmp_path / "arch"
    (root / "media").mkdir(parents=True)
    (root / "media" / "a.jpg").write_bytes(image_bytes())
    write_manifest(root, [{"id": "1", "text": "hi", "attachments": ["media/a.jpg"]}])
    path = root if kind == "folder" else pack(root, kind.split(".")[0] if kind == "zip" else "tar")
    before = tree(tmp_path)
    archive = open_archive(path)
    assert archive.read("media/a.jpg") == image_bytes()
    assert [r.id for r in read_records(archive, Columns())] == ["1"]
    assert tree(tmp_path) == before  # nothing extracted


def test_zip_with_single_top_folder(tmp_path):
    root = tmp_path / "inner"
    (root / "media").mkdir(parents=True)
    (root / "media" / "a.jpg").write_bytes(b"x")
    write_manifest(root, [{"id": "1", "text": "t", "attachments": ["media/a.jpg"]}])
    out = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(out, "w") as z:
        for p in root.rglob("*"):
            if p.is_file():
                z.write(p, "inner/" + p.relative_to(root).as_posix())
    archive = open_archive(out)
    assert archive.read("media/a.jpg") == b"x"


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_unsafe_members_are_never_read(bad, kind):
    root, _ = bad
    archive = open_archive(pack_bad(root, kind))
    for path in ["../evil.jpg", "/abs.jpg", "media/link.jpg"]:
        with pytest.raises(Exception) as e:
            archive.read(path)
        assert getattr(e.value, "reason", None) == "outside_archive", path


def test_folder_symlink_out_refused(bad):
    root, _ = bad
    with pytest.raises(Exception) as e:
        open_archive(root).read("media/link.jpg")
    assert e.value.reason == "outside_archive"


def test_file_size_and_compression_ratio_limits(tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    (root / "big.bin").write_bytes(b"\x00" * (2 * 1024 * 1024))
    write_manifest(root, [{"id": "1", "text": "t"}])
    with pytest.raises(Exception) as e:
        open_archive(root, Limits(max_file_mb=1)).read("big.bin")
    assert e.value.reason == "too_large"
    z = pack(root, "zip")
    with pytest.raises(Exception) as e:
        open_archive(z).read("big.bin")
    assert e.value.reason == "too_large" and "compression ratio" in e.value.detail
    assert len(open_archive(z, Limits(max_compression_ratio=1e6)).read("big.bin")) == 2 * 1024 * 1024


def test_archive_level_errors(tmp_path):
    with pytest.raises(ArchiveError, match="not found"):
        open_archive(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArchiveError, match="no manifest"):
        open_archive(tmp_path / "empty")
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ArchiveError):
        open_archive(tmp_path / "junk.zip")
    both = tmp_path / "both"
    write_manifest(both, [{"id": "1", "text": "t"}], "jsonl")
    write_manifest(both, [{"id": "1", "text": "t"}], "csv")
    with pytest.raises(ArchiveError, match="several manifests"):
        open_archive(both)


def test_archive_pickles_for_workers(tmp_path):
    import pickle

    root = tmp_path / "a"
    root.mkdir()
    (root / "x.bin").write_bytes(b"data")
    write_manifest(root, [{"id": "1", "text": "t"}])
    archive = open_archive(pack(root, "zip"))
    clone = pickle.loads(pickle.dumps(archive))
    assert clone.read("x.bin") == b"data"
    assert os.path.exists(archive.path)
