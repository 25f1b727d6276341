"""Where documents come from: a local file or folder, or any pyarrow / fsspec URI
(s3://, gs://, hdfs://, memory://, ...). Only .md, .txt, .html and .pdf files count."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatapp.errors import InvalidRequest
from chatapp.rag.documents import SUPPORTED_SUFFIXES, content_hash, is_supported


@dataclass(frozen=True, slots=True)
class SourceFiles:
    """The documents under one SOURCE: a filesystem, the paths to read in it, and the
    names they are known by (relative names for local sources given relatively)."""

    source: str
    filesystem: Any  # pyarrow.fs.FileSystem
    paths: list[str]
    names: dict[str, str]  # path in the filesystem -> document name


def filesystem_for(source: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI."""
    import pyarrow.fs as pafs

    if "://" not in source:
        return pafs.LocalFileSystem(), os.path.abspath(source)
    try:
        fs, path = pafs.FileSystem.from_uri(source)
        return fs, str(path)
    except (ValueError, OSError):  # unknown to pyarrow: try fsspec
        import fsspec

        fs, path = fsspec.core.url_to_fs(source)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def list_source_files(source: str, *, relative: bool = False) -> SourceFiles:
    """Every supported document under `source`; `InvalidRequest` when there is none.
    With `relative`, documents are named by their path under `source` (a folder)."""
    import pyarrow.fs as pafs

    fs, root = filesystem_for(source)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InvalidRequest(f"{source}: no such file or folder")
    if info.type == pafs.FileType.File:
        infos = [info]
    else:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    paths = sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and is_supported(i.path)
        and not any(part.startswith(".") for part in Path(i.path).parts[-8:])
    )
    if not paths:
        raise InvalidRequest(
            f"{source}: no documents to index (looked for {', '.join(SUPPORTED_SUFFIXES)})"
        )
    names = (
        {p: os.path.relpath(p, root) for p in paths}
        if relative and info.type != pafs.FileType.File
        else _names(source, root, paths)
    )
    return SourceFiles(source=source, filesystem=fs, paths=paths, names=names)


def _names(source: str, root: str, paths: list[str]) -> dict[str, str]:
    local_relative = "://" not in source and not os.path.isabs(source)
    names = {}
    for path in paths:
        if local_relative:
            names[path] = os.path.relpath(path)
        elif "://" in source:
            scheme = source.split("://", 1)[0]
            names[path] = path if "://" in path else f"{scheme}://{path}"
        else:
            names[path] = path
    return names


def content_hashes(files: SourceFiles) -> dict[str, str]:
    """Document name -> sha256 of its bytes (read here, in this process)."""
    hashes = {}
    for path in files.paths:
        with files.filesystem.open_input_stream(path) as f:
            hashes[files.names[path]] = content_hash(f.read())
    return hashes
