"""Complaint archives read in place: a folder, a .zip or a .tar(.gz).

Every attachment path goes through one gate, :meth:`Archive.read`, which
refuses anything that would resolve outside the archive root (absolute
paths, ``..``, links leaving the root, unsafe zip/tar member names) and
anything beyond the configured :class:`Limits`. Nothing is ever extracted.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import IO

from pipeline.data.limits import Limits
from pipeline.data.records import (
    MISSING,
    OUTSIDE_ARCHIVE,
    TOO_LARGE,
    UNREADABLE,
    UNSUPPORTED,
    AttachmentError,
)

MANIFEST_NAMES = ("complaints.jsonl", "complaints.csv", "complaints.parquet")
MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")
# Below this size a high compression ratio is harmless (a flat BMP, a text file).
RATIO_CHECK_MIN_BYTES = 1024 * 1024


class ArchiveError(Exception):
    """The archive as a whole cannot be read (one clear line for the user)."""


def safe_member_name(name: str) -> str | None:
    """Normalise a relative path; None if it is absolute or climbs with ``..``."""
    name = name.replace("\\", "/")
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


class Archive:
    """Base class: a manifest plus attachment files under one root."""

    def __init__(self, path: Path, limits: Limits):
        self.path = path
        self.limits = limits
        self.manifest_name = ""

    @property
    def display_name(self) -> str:
        """How records name their archive in ``source`` fields."""
        return self.path.name

    @property
    def manifest_suffix(self) -> str:
        return Path(self.manifest_name).suffix.lower()

    def open_manifest(self) -> IO[bytes]:
        raise NotImplementedError

    def read(self, relpath: str) -> bytes:
        """Bytes of one attachment, or AttachmentError naming why not."""
        name = safe_member_name(relpath)
        if name is None:
            raise AttachmentError(OUTSIDE_ARCHIVE, "absolute path or '..'")
        return self._read(name)

    def _read(self, name: str) -> bytes:
        raise NotImplementedError

    def _check_size(self, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise AttachmentError(TOO_LARGE, f"{size} bytes > limit {self.limits.max_file_bytes}")

    def close(self) -> None:
        pass

    def __getstate__(self):
        # Archives travel to DataLoader workers; file handles are reopened there.
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def _pick_manifest(self, names: list[str], where: str) -> str:
        found = [n for n in MANIFEST_NAMES if n in names]
        if not found:
            raise ArchiveError(f"no manifest in {where}: expected one of {', '.join(MANIFEST_NAMES)} at its root")
        if len(found) > 1:
            raise ArchiveError(f"several manifests in {where} ({', '.join(found)}): keep one")
        return found[0]


class FolderArchive(Archive):
    def __init__(self, path: Path, limits: Limits, manifest: Path | None = None):
        super().__init__(path, limits)
        self.root = os.path.realpath(path)
        self.manifest_given = manifest is not None
        if manifest is not None:
            self.manifest_name = manifest.name
        else:
            self.manifest_name = self._pick_manifest(os.listdir(path), str(path))

    @classmethod
    def attachments_only(cls, path: str | os.PathLike, limits: Limits) -> FolderArchive:
        """A folder that only serves attachments, for records that come from elsewhere (the Python API)."""
        archive = cls.__new__(cls)
        Archive.__init__(archive, Path(path), limits)
        archive.root = os.path.realpath(path)
        archive.manifest_given = False
        return archive

    @property
    def display_name(self) -> str:
        return self.manifest_name if self.manifest_given else self.path.name

    def open_manifest(self) -> IO[bytes]:
        return open(os.path.join(self.root, self.manifest_name), "rb")

    def _read(self, name: str) -> bytes:
        full = os.path.realpath(os.path.join(self.root, name))
        if not full.startswith(self.root + os.sep):
            raise AttachmentError(OUTSIDE_ARCHIVE, "link leads outside the archive")
        try:
            st = os.stat(full)
        except FileNotFoundError:
            raise AttachmentError(MISSING) from None
        except OSError as e:
            raise AttachmentError(UNREADABLE, e.strerror or str(e)) from None
        if not stat.S_ISREG(st.st_mode):
            raise AttachmentError(UNSUPPORTED, "not a regular file")
        self._check_size(st.st_size)
        try:
            with open(full, "rb") as f:
                return f.read()
        except OSError as e:
            raise AttachmentError(UNREADABLE, e.strerror or str(e)) from None


class _MemberArchive(Archive):
    """Shared logic of zip and tar: an index of safe member names under a root prefix."""

    def __init__(self, path: Path, limits: Limits):
        super().__init__(path, limits)
        self._handle = None
        self._pid = None
        self.members: dict[str, object] = {}  # safe name -> zip/tar info
        self.unsafe: set[str] = set()  # member names refused outright
        self.prefix = ""
        self._index()

    def _handle_here(self):
        # Reopen after fork: zip/tar handles must not be shared between processes.
        if self._handle is None or self._pid != os.getpid():
            self._handle = self._open_handle()
            self._pid = os.getpid()
        return self._handle

    def _set_root(self) -> None:
        """Find the manifest at the root, or inside a single top-level folder."""
        names = list(self.members)
        top = [n for n in names if "/" not in n]
        if any(n in MANIFEST_NAMES for n in top):
            self.manifest_name = self._pick_manifest(top, str(self.path))
            return
        firsts = {n.split("/", 1)[0] for n in names}
        if len(firsts) == 1:
            self.prefix = firsts.pop() + "/"
            inner = [n[len(self.prefix) :] for n in names if n.startswith(self.prefix)]
            self.manifest_name = self._pick_manifest(inner, str(self.path))
            return
        self._pick_manifest(top, str(self.path))  # raises the clear error

    def open_manifest(self) -> IO[bytes]:
        return self._open_member(self.members[self.prefix + self.manifest_name])

    def _lookup(self, name: str):
        full = self.prefix + name
        if full in self.unsafe:
            raise AttachmentError(OUTSIDE_ARCHIVE, "unsafe member (link or escaping name)")
        info = self.members.get(full)
        if info is None:
            raise AttachmentError(MISSING)
        return info

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ZipArchive(_MemberArchive):
    def _open_handle(self):
        return zipfile.ZipFile(self.path)

    def _index(self) -> None:
        try:
            zf = self._handle_here()
            infos = zf.infolist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ArchiveError(f"cannot read zip {self.path}: {e}") from None
        for info in infos:
            if info.is_dir():
                continue
            name = safe_member_name(info.filename)
            is_link = stat.S_ISLNK(info.external_attr >> 16)
            if name is None or is_link:
                self.unsafe.add(name or info.filename)
                continue
            self.members[name] = info
        self._set_root()

    def _open_member(self, info) -> IO[bytes]:
        return self._handle_here().open(info)

    def _read(self, name: str) -> bytes:
        info = self._lookup(name)
        self._check_size(info.file_size)
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_CHECK_MIN_BYTES and ratio > self.limits.max_compression_ratio:
            raise AttachmentError(
                TOO_LARGE, f"compression ratio {ratio:.0f} > limit {self.limits.max_compression_ratio:g}"
            )
        try:
            with self._handle_here().open(info) as f:
                # Read one byte past the limit: a header that lies about the size is caught too.
                data = f.read(self.limits.max_file_bytes + 1)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as e:
            raise AttachmentError(UNREADABLE, str(e)) from None
        self._check_size(len(data))
        return data


class TarArchive(_MemberArchive):
    def _open_handle(self):
        return tarfile.open(self.path, mode="r:*")

    def _index(self) -> None:
        try:
            tf = self._handle_here()
            infos = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ArchiveError(f"cannot read tar {self.path}: {e}") from None
        for info in infos:
            if info.isdir():
                continue
            name = safe_member_name(info.name)
            if name is None or info.issym() or info.islnk():
                self.unsafe.add(name or info.name)
                continue
            if info.isfile():
                self.members[name] = info
        self._set_root()

    def _open_member(self, info) -> IO[bytes]:
        f = self._handle_here().extractfile(info)
        if f is None:
            raise ArchiveError(f"{info.name} in {self.path} is not a regular file")
        return f

    def _read(self, name: str) -> bytes:
        info = self._lookup(name)
        self._check_size(info.size)
        try:
            return self._open_member(info).read()
        except (tarfile.TarError, OSError, EOFError, ArchiveError) as e:
            raise AttachmentError(UNREADABLE, str(e)) from None


def open_archive(path: str | os.PathLike, limits: Limits | None = None) -> Archive:
    """Open a folder, .zip, .tar/.tar.gz/.tgz, or a manifest file given directly."""
    limits = limits or Limits()
    p = Path(path)
    if not p.exists():
        raise ArchiveError(f"archive not found: {p}")
    if p.is_dir():
        return FolderArchive(p, limits)
    name = p.name.lower()
    if name.endswith(MANIFEST_SUFFIXES):
        return FolderArchive(p.parent, limits, manifest=p)
    if zipfile.is_zipfile(p):
        return ZipArchive(p, limits)
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")) or tarfile.is_tarfile(p):
        return TarArchive(p, limits)
    raise ArchiveError(
        f"cannot open {p}: expected a folder, .zip, .tar(.gz) or a manifest file ({', '.join(MANIFEST_SUFFIXES)})"
    )
