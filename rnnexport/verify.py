"""Artifact files checked as files: each one a regular file (not a link, FIFO or folder), its
sha256 and size (`file_entry`, the manifest's ``files`` entries), and the private copy that
`open_artifact` hashes every listed file into and that everything is loaded from
(`verified_copy`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from rnnexport.errors import ArtifactError, UsageError

__all__ = ["file_entry", "regular_file", "sha256_file", "verified_copy"]


def regular_file(path: Path, what: str) -> os.stat_result:
    """`path`'s stat when it is a regular file (not a link, FIFO, device or folder).

    Checked before anything is opened: reading a FIFO would block forever, and a link could
    lead outside the artifact folder.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing ({what}); re-export the artifact") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({what}): {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a symbolic link" if stat.S_ISLNK(info.st_mode) else "a folder" if stat.S_ISDIR(info.st_mode)
                else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file")
        raise ArtifactError(f"{path}: {what} is {kind}; artifact files must be regular files in the artifact folder")
    return info


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest entry of one file: sha256 and size."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def verified_copy(path: Path, files: dict[str, dict[str, Any]]) -> Path:
    """A private copy of the listed files, each hashed as it is copied (one read) and compared
    with the manifest. Everything is loaded from this copy, never from `path` again: a file
    replaced in the artifact folder after the check cannot be what a runtime loads. The copy
    is removed with its `Artifact` (or when this process exits).

    Raises:
        ArtifactError: a file differs from its sha256 (or cannot be read).
        UsageError: the copy cannot be written (no space left in the temporary folder).
    """
    try:
        copy = Path(tempfile.mkdtemp(prefix="rnnexport-verified-"))
    except OSError as exc:
        raise UsageError(f"cannot create a private copy of {path} in {tempfile.gettempdir()}: "
                         f"{exc.strerror or exc} (set TMPDIR)") from None
    try:
        _copy_verified(path, files, copy)
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy


def _copy_verified(path: Path, files: dict[str, dict[str, Any]], copy: Path) -> None:
    for name, entry in sorted(files.items()):
        file = path / name
        digest = hashlib.sha256()
        try:
            source = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise ArtifactError(f"{file}: cannot read: {exc.strerror or exc}") from None
        with open(source, "rb") as reader:
            try:
                with open(copy / name, "xb") as writer:
                    for block in iter(lambda: reader.read(1 << 20), b""):
                        digest.update(block)
                        writer.write(block)
            except OSError as exc:
                raise UsageError(f"cannot write a private copy of {file} into {copy}: {exc.strerror or exc} "
                                 "(set TMPDIR to a folder with space)") from None
        if digest.hexdigest() != entry["sha256"]:
            raise ArtifactError(
                f"{file}: sha256 {digest.hexdigest()[:16]}... differs from the manifest's {entry['sha256'][:16]}...: "
                "the file was modified, truncated or replaced; re-export the artifact"
            )
