"""Which code produced a run: the git commit of the checkout the training package was imported from."""
from __future__ import annotations

import subprocess
from pathlib import Path


def code_commit(path: Path | None = None) -> str | None:
    """The short commit of the git checkout holding ``path`` (default: this package), with
    ``-dirty`` appended when tracked files differ from it; None outside a checkout or without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
