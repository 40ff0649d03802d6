"""The resumable row x seed loop shared by the experiment runners (``experiments run``, ``decisive run``).

Seeds are the outer loop, so the rows of one seed complete together (paired seeds).  A finished run
is skipped; any other run is started with ``--resume`` appended, so an interrupted one continues.
The first failing run stops the loop, and its exit code is returned, with a message that rerunning
the same command continues where it stopped.

``jobs > 1`` keeps that many runs going at once (a GPU machine, or a CPU with cores to spare, trains
several small runs side by side): runs still start in seed-major order, each one's output goes to
its own log file (``log_path``), and after a failure no new run starts while the ones already going
finish; the first failure's exit code is returned.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Hashable, Iterable


def _executable(cmd: list[str]) -> list[str]:
    """``cmd`` with its program resolved next to the running interpreter (the environment's
    ``clipseg-train``), so the runners work without that environment on ``PATH``."""
    return [str(Path(sys.executable).parent / cmd[0])] + cmd[1:]


def _pending(rows, seeds, tag, finished, applies, run_key):
    """(row, seed, key) of every run still to do, in seed-major order; prints the finished ones."""
    owner = {}
    for seed in seeds:
        for row in rows:
            if applies is not None and not applies(row, seed):
                continue
            key = run_key(row, seed) if run_key is not None else None
            if finished(row, seed):
                print(f"[{tag}] {row.name} seed {seed}: done", flush=True)
                continue
            if key is not None and key in owner:
                print(f"[{tag}] {row.name} seed {seed}: the same run as {owner[key]}", flush=True)
                continue
            if key is not None:
                owner[key] = row.name
            yield row, seed, key


def run_matrix(rows: Iterable, seeds: Iterable[int], *, tag: str,
               command: Callable[[object, int], list[str]],
               finished: Callable[[object, int], bool],
               applies: Callable[[object, int], bool] | None = None,
               run_key: Callable[[object, int], Hashable] | None = None,
               jobs: int = 1,
               log_path: Callable[[object, int], Path] | None = None) -> int:
    """Run ``command(row, seed) + ["--resume"]`` for every seed x row not yet finished.

    ``tag`` prefixes the progress lines (``[tag] row seed N: ...``); rows need a ``name``.
    ``applies(row, seed)`` false skips that pair silently (a row run on fewer seeds).
    ``run_key(row, seed)``: rows that share one training run return the same key, and once that run
    has succeeded in this loop the later rows sharing it count as done.
    ``jobs``: how many runs go at once; with more than one, ``log_path(row, seed)`` names the file
    each run's output goes to (required then, so parallel progress bars do not interleave).
    Returns 0, or the exit code of the run that failed.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if jobs > 1 and log_path is None:
        raise ValueError("jobs > 1 needs log_path: each parallel run writes its output to its own file")
    rows = list(rows)
    todo = list(_pending(rows, seeds, tag, finished, applies, run_key))
    if jobs == 1:
        for row, seed, _key in todo:
            cmd = command(row, seed) + ["--resume"]
            print(f"[{tag}] {row.name} seed {seed}: {shlex.join(cmd)}", flush=True)
            res = subprocess.run(_executable(cmd))
            if res.returncode != 0:
                print(f"[{tag}] {row.name} seed {seed} stopped with exit code {res.returncode}; "
                      f"rerun the same command to continue", flush=True)
                return res.returncode
        return 0
    return _run_parallel(todo, tag, command, jobs, log_path)


def _run_parallel(todo, tag, command, jobs, log_path) -> int:
    running: list[tuple[object, int, subprocess.Popen, object]] = []
    first_failure = 0
    todo = list(todo)
    while todo or running:
        while todo and not first_failure and len(running) < jobs:
            row, seed, _key = todo.pop(0)
            cmd = command(row, seed) + ["--resume"]
            log = Path(log_path(row, seed))
            log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "a")
            print(f"[{tag}] {row.name} seed {seed}: {shlex.join(cmd)} (output: {log})", flush=True)
            proc = subprocess.Popen(_executable(cmd), stdout=fh, stderr=subprocess.STDOUT)
            running.append((row, seed, proc, fh))
        if first_failure and not running:
            break
        time.sleep(0.2)
        still = []
        for row, seed, proc, fh in running:
            code = proc.poll()
            if code is None:
                still.append((row, seed, proc, fh))
                continue
            fh.close()
            if code == 0:
                print(f"[{tag}] {row.name} seed {seed}: finished", flush=True)
            else:
                print(f"[{tag}] {row.name} seed {seed} stopped with exit code {code} (see "
                      f"{log_path(row, seed)}); rerun the same command to continue", flush=True)
                first_failure = first_failure or code
        running = still
    return first_failure
