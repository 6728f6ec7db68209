"""The ``.pt2`` (torch.export archive) allowlist: `check_program_archive` refuses an archive
whose loading would unpickle anything but tensors, and `weights_only_loading` forces every
``torch.load`` to ``weights_only``. Free of torch at import.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from rnnexport.errors import ArtifactError

__all__ = ["check_program_archive", "weights_only_loading"]


@contextlib.contextmanager
def weights_only_loading() -> Iterator[None]:
    """Within the block every ``torch.load`` is restricted to weights (tensors and plain
    containers), even where a caller asks for ``weights_only=False``.

    ``torch.export.load`` loads an archive's example inputs with ``torch.load`` and, when that
    fails, retries with ``weights_only=False`` (``torch/_export/serde/serialize.py``,
    ``deserialize_torch_artifact``): a crafted ``.pt2`` runs its pickle payload there
    (upstream: https://github.com/pytorch/pytorch/issues/153410, no ``weights_only`` for
    ``torch.export.load`` in torch 2.13).
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (read by ``torch.load`` on every call) closes that path.
    """
    saved = {key: os.environ.get(key) for key in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# Members of a torch.export archive (torch/export/pt2_archive/constants.py) that hold data only;
# weights and constants must be raw tensor bytes ("use_pickle": false).
_PT2_MEMBERS = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|data/weights/weight_\d+|data/weights/[\w.-]+_weights_config\.json"
    r"|data/constants/tensor_\d+|data/constants/[\w.-]+_constants_config\.json"
    r"|models/[\w.-]+\.json|data/sample_inputs/[\w.-]+\.pt|extra/module_info\.json)"
)


def check_program_archive(path: Path) -> None:
    """Refuse a ``.pt2`` whose loading would unpickle anything but tensors.

    ``torch.export.load`` unpickles pickled weights and constants (``use_pickle``), custom and
    opaque objects, legacy weight files, and retries example inputs with ``weights_only=False``
    when the safe load fails. rnnexport writes none of these; an archive holding any of them
    (or any member outside the known data layout) is refused before torch reads it.

    A file already checked is not read again while its inode, size, mtime and ctime are unchanged
    (opening an artifact checks it, and so does the runner that loads it).

    Raises:
        ArtifactError: naming the member that would need unrestricted unpickling.
    """
    try:
        info = os.stat(path)
        identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    except OSError:
        identity = None
    if identity is not None and _CHECKED_ARCHIVES.get(str(Path(path).resolve())) == identity:
        return
    _check_program_archive(path)
    if identity is not None:
        _CHECKED_ARCHIVES[str(Path(path).resolve())] = identity


_CHECKED_ARCHIVES: dict[str, tuple[int, ...]] = {}


def _check_program_archive(path: Path) -> None:
    def refuse(why: str) -> ArtifactError:
        return ArtifactError(f"{path}: refused: {why}; loading it would need unrestricted unpickling, "
                             "which rnnexport never does (re-export the artifact with rnnexport)")

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            roots = {name.split("/", 1)[0] for name in names}
            if len(roots) != 1 or any("/" not in name for name in names):
                raise refuse(f"not a single-folder torch.export archive (top level: {sorted(roots)[:3]})")
            root = roots.pop()
            for name in names:
                member = name[len(root) + 1:]
                if not _PT2_MEMBERS.fullmatch(member):
                    raise refuse(f"member {member!r} is not part of the data layout of a torch.export archive")
                if member.endswith(("_weights_config.json", "_constants_config.json")):
                    config = json.loads(archive.read(name)).get("config", {})
                    for key, entry in config.items():
                        if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
                            raise refuse(f"{member} stores {key!r} as a pickle or a custom object")
                if member.startswith("data/sample_inputs/"):
                    import torch  # only here: opening artifacts stays free of torch

                    try:
                        with weights_only_loading():
                            torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                    except Exception as exc:
                        raise refuse(f"{member} is not plain tensors ({type(exc).__name__}: {str(exc)[:120]})") from None
    except ArtifactError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, AttributeError, KeyError) as exc:
        raise ArtifactError(f"{path}: not a readable torch.export archive ({type(exc).__name__}: {exc})") from None
