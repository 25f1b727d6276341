"""Uploaded files (chatapp.rag.uploads): names that could escape the knowledge base's
folder or hide from the build are refused, zips are unpacked member by member, and the
size limit holds for what a zip member really unpacks to, whatever its header says."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from chatapp.errors import PayloadTooLarge
from chatapp.rag.uploads import UploadStore, clean_name, unpack


def zipped(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "folders", "cleaned"),
    [
        ("notes.md", False, "notes.md"),
        ("C:\\Users\\me\\notes.md", False, "notes.md"),  # a browser's full path: its base name
        ("/etc/notes.md", False, "notes.md"),
        ("guide/intro.md", True, "guide/intro.md"),
        ("/abs/intro.md", True, "abs/intro.md"),
        ("../escape.md", True, None),
        ("guide/../../escape.md", True, None),
        (".hidden.md", False, None),  # the build skips hidden files: refused, not lost
        ("guide/.git/x.md", True, None),
        ("bad\x00name.md", False, None),
        ("new\nline.md", False, None),
        ("x" * 300 + ".md", False, None),
        ("", False, None),
    ],
)
def test_names_are_safe_relative_paths(name: str, folders: bool, cleaned: str | None) -> None:
    assert clean_name(name, keep_folders=folders) == cleaned


def test_a_direct_upload_is_one_document_or_a_clear_refusal() -> None:
    assert [u.name for u in unpack("a.md", b"# a", max_file_bytes=10)[0]] == ["a.md"]
    uploads, rejected = unpack("a.exe", b"MZ", max_file_bytes=10)
    assert uploads == [] and "a.exe: unsupported file type" in rejected[0].error
    with pytest.raises(
        PayloadTooLarge,
        match=r"big.md: larger than the 10 bytes a file may be \(RAG_MAX_FILE_BYTES\)",
    ):
        unpack("big.md", b"x" * 11, max_file_bytes=10)


def test_a_zip_is_unpacked_member_by_member() -> None:
    data = zipped(
        ("guide/a.md", b"# a"),
        ("guide/b.txt", b"b"),
        ("../evil.md", b"x"),
        ("guide/tool.exe", b"MZ"),
        ("nested.zip", zipped(("c.md", b"c"))),
        ("__MACOSX/guide/._a.md", b"fork"),
        ("empty-folder/", b""),
    )
    uploads, rejected = unpack("docs.zip", data, max_file_bytes=1000)
    assert [u.name for u in uploads] == ["guide/a.md", "guide/b.txt"]
    assert {r.name: r.error.split(": ", 1)[1] for r in rejected} == {
        "docs.zip/../evil.md": "not a usable file name",
        "guide/tool.exe": "unsupported file type; use .md, .markdown, .txt, .html, .htm, "
        ".pdf or a .zip of them",
        "nested.zip": "a zip inside a zip is not unpacked",
    }
    broken, why = unpack("broken.zip", b"PK not a zip", max_file_bytes=1000)
    assert broken == [] and "broken.zip: not a readable zip" in why[0].error
    assert "holds no files" in unpack("e.zip", zipped(), max_file_bytes=10)[1][0].error


def test_a_zip_member_that_lies_about_its_size_is_refused() -> None:
    """A zip bomb's header may claim a small size: no more than that is unpacked, and
    the member, whose checksum then fails, is refused on its own."""
    data = bytearray(zipped(("bomb.txt", b"a" * 100_000)))
    # rewrite the uncompressed size (local header and central directory) to 10 bytes
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, 10)
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 10)
    uploads, rejected = unpack("bomb.zip", bytes(data), max_file_bytes=1000)
    assert uploads == [] and "bomb.txt: cannot be unpacked (Bad CRC-32" in rejected[0].error
    # told the truth, it is over the limit
    with pytest.raises(PayloadTooLarge, match=r"bomb\.txt: larger than the 1,000 bytes"):
        unpack("bomb.zip", zipped(("bomb.txt", b"a" * 100_000)), max_file_bytes=1000)


def test_the_store_writes_whole_files_and_removes_empty_folders(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    uploads, _ = unpack("z.zip", zipped(("guide/deep/a.md", b"# a")), max_file_bytes=100)
    store.write("kb-0123456789abcdef", uploads[0])
    assert store.names("kb-0123456789abcdef") == ["guide/deep/a.md"]
    store.delete("kb-0123456789abcdef", "guide/deep/a.md")
    assert store.names("kb-0123456789abcdef") == []
    assert list(store.folder("kb-0123456789abcdef").iterdir()) == []
    store.delete_all("kb-0123456789abcdef")
    assert not store.folder("kb-0123456789abcdef").exists()
