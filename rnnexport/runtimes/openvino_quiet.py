"""OpenVINO imported without its telemetry: take `ov` from here, never ``import openvino``.

``import openvino`` sends a telemetry event (``openvino/tools/ovc/__init__.py``) from a thread,
through a process forked from that thread (``openvino_telemetry/backend/backend_ga4.py``). In
the ``--jobs`` fork server, which imports OpenVINO ahead of its workers, that process is a
child the server did not start: it reaps it and warns "forkserver: waitpid returned unexpected
pid" on stderr. Anywhere, it is a fork of a process running torch's threads. OpenVINO sends
nothing in CI (``disable_in_ci``), its only switch short of a per-user consent file
(``opt_in_out --opt_out``); ``CI`` is set for the import only.
"""

from __future__ import annotations

import os

__all__ = ["ov"]

_saved = os.environ.get("CI")
os.environ["CI"] = "true"
try:
    import openvino as ov
finally:
    if _saved is None:
        os.environ.pop("CI", None)
    else:
        os.environ["CI"] = _saved
