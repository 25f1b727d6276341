"""Files users upload to their knowledge bases: checked, unpacked, and kept on disk.

    <upload_dir>/<kb>/notes.md
    <upload_dir>/<kb>/guide/intro.md      (from a zip: its folders are kept)

A file is written to a temporary name and renamed into place, so a build never reads
half a file. What a build indexes is exactly this folder's files (`pipelines/`).

Checks, before anything is stored: a name is a relative path without `..`, hidden
parts or control characters, of a supported type (`chatapp.rag.documents`); a zip is
unpacked here (its members count as files: one that is not a document, is encrypted or
is itself a zip is rejected with its reason, the others kept); every file, and every
zip member as unpacked (whatever its header claims), is at most `max_file_bytes`
(`PayloadTooLarge` otherwise, naming the limit).
"""

from __future__ import annotations

import io
import os
import shutil
import unicodedata
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from chatapp.errors import PayloadTooLarge
from chatapp.rag.documents import SUPPORTED_SUFFIXES, is_supported

MAX_NAME_CHARS = 255
# folders zip tools add that are not the user's documents
_ZIP_NOISE = ("__MACOSX/",)


@dataclass(frozen=True, slots=True)
class Upload:
    """A file to store: its name in the knowledge base and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """A file left out, and why (shown to the user next to the others)."""

    name: str
    error: str


def mib(n: int) -> str:
    """`n` bytes as the limits are written in messages."""
    return f"{n / (1024 * 1024):.3g} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


def clean_name(name: str, *, keep_folders: bool) -> str | None:
    """`name` as a safe relative path (POSIX), or None when it cannot be one. Direct
    uploads keep only their base name; zip members keep their folders."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/"))
    if any(unicodedata.category(ch)[0] == "C" for ch in name):
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("/", "")]
    if not keep_folders:
        parts = parts[-1:]
    if not parts or any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    cleaned = "/".join(parts)
    return cleaned if len(cleaned) <= MAX_NAME_CHARS else None


def too_large(name: str, max_file_bytes: int) -> PayloadTooLarge:
    """The refusal of a file over the per-file limit."""
    return PayloadTooLarge(
        f"{name}: larger than the {mib(max_file_bytes)} a file may be (RAG_MAX_FILE_BYTES)"
    )


def unpack(
    filename: str, data: bytes, *, max_file_bytes: int
) -> tuple[list[Upload], list[Rejected]]:
    """The documents of one uploaded file: itself, or a zip's members."""
    shown = filename or "(unnamed file)"
    if filename.lower().endswith(".zip"):
        return _unzip(shown, data, max_file_bytes=max_file_bytes)
    if len(data) > max_file_bytes:
        raise too_large(shown, max_file_bytes)
    name = clean_name(filename, keep_folders=False)
    if name is None:
        return [], [Rejected(shown, f"{shown}: not a usable file name")]
    if not is_supported(name):
        return [], [Rejected(name, _unsupported(name))]
    return [Upload(name, data)], []


def _unsupported(name: str) -> str:
    return f"{name}: unsupported file type; use {', '.join(SUPPORTED_SUFFIXES)} or a .zip of them"


def _unzip(
    filename: str, data: bytes, *, max_file_bytes: int
) -> tuple[list[Upload], list[Rejected]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return [], [Rejected(filename, f"{filename}: not a readable zip ({exc})")]
    uploads: list[Upload] = []
    rejected: list[Rejected] = []
    with archive:
        for info in archive.infolist():
            if info.is_dir() or info.filename.startswith(_ZIP_NOISE):
                continue
            shown = f"{filename}/{info.filename}"
            name = clean_name(info.filename, keep_folders=True)
            if name is None:
                rejected.append(Rejected(shown, f"{shown}: not a usable file name"))
            elif name.lower().endswith(".zip"):
                rejected.append(Rejected(name, f"{name}: a zip inside a zip is not unpacked"))
            elif not is_supported(name):
                rejected.append(Rejected(name, _unsupported(name)))
            elif info.flag_bits & 0x1:
                rejected.append(Rejected(name, f"{name}: encrypted; upload it unencrypted"))
            elif info.file_size > max_file_bytes:
                raise too_large(name, max_file_bytes)
            else:
                try:
                    with archive.open(info) as member:
                        body = member.read(max_file_bytes + 1)  # whatever the header says
                except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
                    rejected.append(Rejected(name, f"{name}: cannot be unpacked ({exc})"))
                    continue
                if len(body) > max_file_bytes:
                    raise too_large(name, max_file_bytes)
                uploads.append(Upload(name, body))
    if not uploads and not rejected:
        rejected.append(Rejected(filename, f"{filename}: the zip holds no files"))
    return uploads, rejected


class UploadStore:
    """The upload folders of knowledge bases under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, kb: str) -> Path:
        return self.root / kb

    def write(self, kb: str, upload: Upload) -> None:
        target = self.folder(kb) / upload.name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-{uuid.uuid4().hex}"
        tmp.write_bytes(upload.data)
        os.replace(tmp, target)

    def delete(self, kb: str, name: str) -> None:
        path = self.folder(kb) / name
        path.unlink(missing_ok=True)
        # empty folders a zip brought go with their last file
        parent = path.parent
        while parent != self.folder(kb) and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def delete_all(self, kb: str) -> None:
        shutil.rmtree(self.folder(kb), ignore_errors=True)

    def knowledge_bases(self) -> list[str]:
        """The knowledge bases with an upload folder."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def names(self, kb: str) -> list[str]:
        """The files stored for `kb` (what a build reads), as relative names."""
        folder = self.folder(kb)
        if not folder.is_dir():
            return []
        return sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
