"""Where a run came from: code version, library versions, command line, host.

Recorded beside the resolved configuration in ``config.json``, the W&B run config and
the checkpoint, so a result can be traced to the code and environment that made it.
It is not part of a grid point's id: the same configuration run from another commit
or host is the same grid point.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "pytorch-lightning", "wandb", "numpy")


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """``{'git_commit', 'git_dirty'}`` of the repository (None where git or the repo is absent)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Versions of python and the libraries that determine the numbers (read without importing)."""
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name.replace("-", "_")] = None
    return out


def provenance(argv: Optional[Sequence[str]] = None) -> dict:
    """The provenance record of a run started with ``argv`` (default ``sys.argv``)."""
    return {
        **code_version(),
        "versions": versions(),
        "command": list(sys.argv if argv is None else argv),
        "host": socket.gethostname(),
    }
