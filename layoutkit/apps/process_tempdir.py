"""A private temporary folder for one server process, so that no copy of an uploaded document outlives it.

The service reads uploads in memory (PIL and PDFium decode bytes), but some libraries still write temporary files
(pytesseract hands each page to tesseract as a file; the multipart parser spools large uploads). While the folder
is active, Python's `tempfile` and subprocesses (TMPDIR) write into it: `layoutkit-serve-<pid>-<random>` in the
system temporary directory, created by `tempfile.mkdtemp` (mode 0700, a name no other user can take first). It is removed when the process ends normally, by an exception or by SIGTERM/SIGINT
(the `with` block exits); after a SIGKILL or a crash, the next server started with the same temporary directory
removes the folders whose process is gone (`sweep_stale`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "layoutkit-serve-"
# Our folders (`layoutkit-serve-<pid>-<random>`) and those of versions before them, which wrote each upload to
# tempfile.TemporaryDirectory(prefix="layoutkit-serve-"): 8 random characters and no process id.
_OURS = re.compile(re.escape(PREFIX) + r"(?P<pid>\d+)-[a-z0-9_]+")
_LEGACY = re.compile(re.escape(PREFIX) + r"[a-z0-9_]{8}")

logger = logging.getLogger("layoutkit.apps.serve")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_stale(parent: Path) -> list[Path]:
    """Remove the service folders in `parent` left by processes that are gone (killed, crashed): those named with
    a dead process id, and the per-upload folders of earlier versions. Only folders owned by this user."""
    removed = []
    for folder in parent.glob(PREFIX + "*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        ours = _OURS.fullmatch(folder.name)
        stale = (not process_alive(int(ours["pid"]))) if ours else bool(_LEGACY.fullmatch(folder.name))
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class ProcessTempDir:
    """`with ProcessTempDir() as folder:` sweeps stale folders, creates this process's private folder and makes
    it the temporary directory of `tempfile` and of subprocesses; on exit removes it and restores both."""

    def __init__(self, parent: str | Path | None = None):
        self.parent = Path(parent or tempfile.gettempdir())
        self.path: Path | None = None

    def __enter__(self) -> Path:
        removed = sweep_stale(self.parent)
        if removed:
            logger.warning("removed %d temporary folder(s) of server processes that are gone: %s", len(removed),
                           ", ".join(folder.name for folder in removed))
        self.path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=self.parent))
        self._saved = tempfile.tempdir, os.environ.get("TMPDIR")
        tempfile.tempdir = str(self.path)
        os.environ["TMPDIR"] = str(self.path)
        return self.path

    def __exit__(self, *exc) -> None:
        tempdir, environ = self._saved
        tempfile.tempdir = tempdir
        if environ is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = environ
        shutil.rmtree(self.path, ignore_errors=True)
