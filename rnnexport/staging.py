"""Writing an artifact folder safely: the staging folder an export writes into and its atomic
replacement of the old folder (`staged_folder`), the per-name export lock (`export_lock`),
what may be replaced (`check_replaceable`, `resolve_output`, `is_artifact_folder`), the
copy of a rejected artifact (`keep_rejected`), and the file mode (`umask`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rnnexport.errors import UsageError
from rnnexport.manifest import MANIFEST, MAX_MANIFEST_BYTES

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "check_replaceable",
    "export_lock",
    "is_artifact_folder",
    "keep_rejected",
    "resolve_output",
    "staged_folder",
    "umask",
]


def umask() -> int:
    """This process's file mode creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


DEFAULT_LOCK_TIMEOUT = 600.0  # seconds an export waits for another export of the same name


def _backup_name(final: Path) -> Path:
    return final.parent / f".{final.name}.previous"


def _staging_re(final: Path) -> re.Pattern[str]:
    # Exactly the names tempfile.mkdtemp(prefix=".<name>.staging-") makes: 8 characters of its
    # alphabet. `.a.staging-x.previous` belongs to the artifact named `a.staging-x`, not to `a`.
    return re.compile(rf"\.{re.escape(final.name)}\.staging-[a-z0-9_]{{8}}")


def _remove(path: Path) -> None:
    """Remove a folder, or a link or file where a folder was expected."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _recover(final: Path) -> None:
    """Undo a replacement interrupted between its two renames; drop stale staging folders.

    Called with the export lock of `final` held, so no staging folder of this name is live.
    Only what rnnexport made is moved or removed: a backup that is an artifact, a staging
    folder holding nothing but artifact files (`_owned`).
    """
    backup = _backup_name(final)
    if (backup.exists() or backup.is_symlink()) and _owned(backup):
        if final.exists():
            _remove(backup)
        else:
            os.rename(backup, final)
    pattern = _staging_re(final)
    for stale in final.parent.iterdir():
        if pattern.fullmatch(stale.name) and _owned(stale, staging=True):
            shutil.rmtree(stale, ignore_errors=True)


# Every name an export writes into its staging folder.
_ARTIFACT_FILES = frozenset({MANIFEST, "model.onnx", "model.pt", "model.pt2", "weights.pt", "weights.safetensors",
                             "golden.npz"})


def is_artifact_folder(path: Path) -> bool:
    """Whether `path` is a folder rnnexport made and nothing else: it holds a ``manifest.json``
    (a regular file) that reads as an rnnexport manifest (a JSON object with ``schema_version``
    and ``files``), and no entry but the manifest and regular files it lists (a file of yours
    put in an artifact folder keeps it from being replaced)."""
    manifest = path / MANIFEST
    try:
        info = os.lstat(manifest)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES or not path.is_dir():
            return False
        with open(os.open(manifest, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), encoding="utf-8") as f:
            data = json.load(f)
        entries = list(os.scandir(path))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    if not (isinstance(data, dict) and type(data.get("schema_version")) is int and isinstance(data.get("files"), dict)):
        return False
    return all(e.name == MANIFEST or (e.name in data["files"] and e.is_file(follow_symlinks=False)) for e in entries)


def _owned(path: Path, *, staging: bool = False) -> bool:
    """Whether rnnexport may remove or replace `path`: an empty folder, an artifact folder, or
    (`staging`) a folder of regular files that an export writes (its staging folder, left by a
    killed export before it wrote the manifest). Never a link, a file, or anything else."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    if not entries or is_artifact_folder(path):
        return True
    return staging and all(e.name in _ARTIFACT_FILES and e.is_file(follow_symlinks=False) for e in entries)


def keep_rejected(stage: Path, target: Path) -> Path | None:
    """Copy a staged artifact that failed validation to ``.<name>.rejected`` beside `target`,
    replacing an earlier rejected copy; None (nothing copied) where that name holds anything
    rnnexport did not make, or the copy cannot be written."""
    rejected = target.parent / f".{target.name}.rejected"
    if (rejected.exists() or rejected.is_symlink()) and not _owned(rejected):
        return None
    shutil.rmtree(rejected, ignore_errors=True)
    try:
        shutil.copytree(stage, rejected)
    except OSError:
        return None
    return rejected


def check_replaceable(final: Path) -> None:
    """Refuse to export into `final` unless it is absent, an empty folder or an rnnexport
    artifact: anything else there is the user's (a source package of the same name, notes)
    and is never touched.

    Raises:
        UsageError: naming the folder and what to do.
    """
    if final.exists() and final.is_dir() and not _owned(final):
        raise UsageError(f"{final} exists and is not an rnnexport artifact (a readable {MANIFEST} and only the files "
                         "it lists); rnnexport replaces only its own artifact folders: move it (or the files you put "
                         "in it) away, or choose another --out")
    backup = _backup_name(final)
    if final.exists() and (backup.exists() or backup.is_symlink()) and not _owned(backup):
        raise UsageError(f"{backup} is in the way: replacing {final.name} moves the old artifact there first, and "
                         "it is not rnnexport's: move it away")


def resolve_output(final: Path) -> Path:
    """The folder an export of `final` really replaces.

    A link ``DIR/<name> -> elsewhere/<folder>`` is followed: the target folder is replaced
    atomically (staged beside it) and the link keeps pointing at it. A dangling link, a link or
    path to something that is not a folder, or a folder that is not an rnnexport artifact
    (`check_replaceable`), is refused.

    Raises:
        UsageError: as above.
    """
    if final.is_symlink():
        target = Path(os.path.realpath(final))
        if not target.exists():
            raise UsageError(f"{final} is a symbolic link to {target}, which does not exist; "
                             "create that folder or remove the link")
        if not target.is_dir():
            raise UsageError(f"{final} is a symbolic link to {target}, which is not a folder")
        check_replaceable(target)
        return target
    if final.exists() and not final.is_dir():
        raise UsageError(f"{final} exists and is not a folder; remove it or choose another --out")
    check_replaceable(final)
    return final


@contextlib.contextmanager
def export_lock(final: Path, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``DIR/.<name>.lock`` (a `filelock.FileLock`): one export of a name in a folder at a
    time. A second export waits up to `timeout` seconds.

    Raises:
        UsageError: the lock is still held after `timeout`, naming the process that holds it.
    """
    import filelock

    lock_path = final.parent / f".{final.name}.lock"
    lock = filelock.FileLock(str(lock_path), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = _read_holder(lock_path)
        raise UsageError(f"another export of {final.name!r} into {str(final.parent)!r} is running ({holder}); "
                         f"gave up after waiting {timeout:g} s (--lock-timeout)") from None
    except OSError as exc:
        raise UsageError(f"cannot lock {str(lock_path)!r}: {exc.strerror or exc}") from None
    try:
        with contextlib.suppress(OSError):
            with open(lock_path, "w", encoding="utf-8") as f:
                f.write(f"pid {os.getpid()}\n")
        yield
    finally:
        lock.release()


def _read_holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="utf-8", errors="replace").strip()[:40]
    except OSError:
        text = ""
    return f"held by {text}" if text.startswith("pid ") else "held by another process"


@contextlib.contextmanager
def staged_folder(final: Path, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on success it replaces `final`.

    If the block raises (or the process dies), `final` is left exactly as it was. The
    replacement is two renames (old folder aside, new folder in); a death between them is
    undone by the next export of the same name (`_recover`). Exports of one name in one folder
    are serialized by `export_lock`; a link at `final` is followed (`resolve_output`).

    Raises:
        UsageError: the output folder cannot be created or written, `final` is not a folder,
            or another export of the name holds the lock past `lock_timeout`.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"output folder {str(final.parent)!r} cannot be written: {exc.strerror or exc}") from None
    final = resolve_output(final)
    with export_lock(final, lock_timeout):
        try:
            _recover(final)
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
            os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes it 0700; artifacts are shared
        except OSError as exc:
            raise UsageError(f"output folder {str(final.parent)!r} cannot be written: {exc.strerror or exc}") from None
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        backup = _backup_name(final)
        try:
            check_replaceable(final)  # again: the export took a while, and the lock binds only rnnexport
        except UsageError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            if final.exists():
                os.rename(final, backup)
            os.rename(staging, final)
        except OSError as exc:
            if backup.exists() and not final.exists():
                os.rename(backup, final)
            shutil.rmtree(staging, ignore_errors=True)
            raise UsageError(f"cannot replace {str(final)!r}: {exc.strerror or exc}") from None
        if _owned(backup):
            shutil.rmtree(backup, ignore_errors=True)
