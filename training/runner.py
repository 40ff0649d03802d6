"""The resumable row x seed loop shared by the experiment runners (``experiments run``, ``decisive run``).

Seeds are the outer loop, so the rows of one seed complete together (paired seeds).  A finished run
is skipped; any other run is started with ``--resume`` appended, so an interrupted one continues.
The first failing run stops the loop, and its exit code is returned, with a message that rerunning
the same command continues where it stopped.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Hashable, Iterable


def _executable(cmd: list[str]) -> list[str]:
    """``cmd`` with its program resolved next to the running interpreter (the environment's
    ``clipseg-train``), so the runners work without that environment on ``PATH``."""
    return [str(Path(sys.executable).parent / cmd[0])] + cmd[1:]


def run_matrix(rows: Iterable, seeds: Iterable[int], *, tag: str,
               command: Callable[[object, int], list[str]],
               finished: Callable[[object, int], bool],
               applies: Callable[[object, int], bool] | None = None,
               run_key: Callable[[object, int], Hashable] | None = None) -> int:
    """Run ``command(row, seed) + ["--resume"]`` for every seed x row not yet finished.

    ``tag`` prefixes the progress lines (``[tag] row seed N: ...``); rows need a ``name``.
    ``applies(row, seed)`` false skips that pair silently (a row run on fewer seeds).
    ``run_key(row, seed)``: rows that share one training run return the same key, and once that run
    has succeeded in this loop the later rows sharing it count as done.
    Returns 0, or the exit code of the run that failed.
    """
    rows = list(rows)
    done = set()
    for seed in seeds:
        for row in rows:
            if applies is not None and not applies(row, seed):
                continue
            key = run_key(row, seed) if run_key is not None else None
            if finished(row, seed) or (key is not None and key in done):
                print(f"[{tag}] {row.name} seed {seed}: done", flush=True)
                continue
            cmd = command(row, seed) + ["--resume"]
            print(f"[{tag}] {row.name} seed {seed}: {shlex.join(cmd)}", flush=True)
            res = subprocess.run(_executable(cmd))
            if res.returncode != 0:
                print(f"[{tag}] {row.name} seed {seed} stopped with exit code {res.returncode}; "
                      f"rerun the same command to continue", flush=True)
                return res.returncode
            if key is not None:
                done.add(key)
    return 0
