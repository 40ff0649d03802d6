"""Child processes in their own process group, stopped thoroughly; the ``seg_node`` command line.

ROS-free: :class:`NodeProcess` (start in a new session with a parent-death signal, SIGINT to the
group, then SIGKILL whatever is left), :func:`kill_group` (SIGKILL a started group and reap it),
:class:`StopSignals` (SIGINT / SIGTERM / SIGHUP raise in the main thread so ``finally`` blocks stop
children), :func:`proc_status` (``/proc/<pid>/status`` memory fields).  Used by
``clipseg-bag-eval live``, ``clipseg-bench``'s node sections and the tests' ROS helpers.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["NodeProcess", "StopSignals", "kill_group", "node_command", "pdeathsig_setter", "proc_status",
           "seg_node_executable"]

STOP_GRACE_S = 5.0


def seg_node_executable() -> list[str]:
    """The ``seg_node`` console script next to this Python, on PATH, or ``python -c`` as fallback."""
    here = Path(sys.executable).parent / "seg_node"
    if here.is_file() and os.access(here, os.X_OK):
        return [str(here)]
    found = shutil.which("seg_node")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from clipseg_ros.node import main; sys.exit(main())"]


def _bool(v: bool) -> str:
    return "true" if v else "false"


def node_command(*, model: str, topic: str, compressed: bool, device: str, backend: str,
                 precision: str, threads: int | None, node_name: str = "seg_node",
                 extra_params=(), executable: str | None = None, input_size=None) -> list[str]:
    exe = [executable] if executable else seg_node_executable()
    cmd = exe + ["--ros-args", "-r", f"__node:={node_name}", "-p", f"model:={model}",
                 "-p", f"device:={device}", "-p", f"backend:={backend}", "-p", f"precision:={precision}"]
    if threads:
        cmd += ["-p", f"threads:={int(threads)}"]
    if input_size:
        cmd += ["-p", f"input_size:=[{int(input_size[0])}, {int(input_size[1])}]"]
    cmd += ["-p", "qos_reliability:=reliable", "-p", "qos_depth:=1",
            "-p", f"input_compressed:={_bool(compressed)}"]
    for p in extra_params:
        if ":=" not in p:
            raise ValueError(f"--node-param {p!r} is not NAME:=VALUE")
        cmd += ["-p", p]
    cmd += ["-r", f"{'image/compressed' if compressed else 'image'}:={topic}"]
    return cmd


def node_configuration(log_path) -> str | None:
    """``onnxruntime [CPUExecutionProvider] on cpu (fp32); precision auto: ...`` from the node's
    ``configured:`` log line: what ``auto`` resolved to.  None when the log has no such line."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"configured: .*? \(\d+ classes, (.+?); (precision .*?)(?:; network input .*)?\)?$", text,
                  re.MULTILINE)
    return f"{m.group(1)}; {m.group(2)}" if m else None


def pdeathsig_setter():
    """A preexec_fn that makes the child get SIGKILL when this process dies (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl   # looked up before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setter() -> None:  # runs in the child between fork and exec
        prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
        if os.getppid() != parent:               # the parent died before prctl took effect
            os._exit(1)

    return setter


class NodeProcess:
    """The node subprocess in its own process group; :meth:`stop` is idempotent and thorough."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict | None = None):
        self.cmd = cmd
        self.log_path = Path(log_path)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self._log = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self._log.write(("$ " + " ".join(self.cmd) + "\n").encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True,
            preexec_fn=pdeathsig_setter())
        self.pgid = self.proc.pid   # new session: the group id is the child's pid
        atexit.register(self.stop)

    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        text = [t for t in text[1:] if t.strip()]
        return " | ".join(t.strip() for t in text[-lines:])

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGINT to the group, wait, then SIGKILL whatever is left; returns the exit code."""
        with self._lock:
            if self.proc is None:
                return None
            try:
                if self.proc.poll() is None:
                    _signal_group(self.pgid, signal.SIGINT)
                    try:
                        self.proc.wait(timeout=grace_s)
                    except subprocess.TimeoutExpired:
                        pass
                if self._group_alive():
                    _signal_group(self.pgid, signal.SIGKILL)
                try:
                    self.proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                    pass
                # other members of the group (if the node spawned any) must go too
                deadline = time.monotonic() + grace_s
                while self._group_alive() and time.monotonic() < deadline:
                    if not _signal_group(self.pgid, signal.SIGKILL):
                        break
                    time.sleep(0.05)
                return self.proc.returncode
            finally:
                if self._log is not None:
                    self._log.close()
                    self._log = None
                try:
                    atexit.unregister(self.stop)
                except Exception:  # noqa: BLE001
                    pass


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """SIGINT / SIGTERM / SIGHUP raise in the main thread so that ``finally`` blocks stop the node.

    :meth:`hold` switches to recording signals instead (during the clean-up, so that a second
    Ctrl-C cannot cut it short); :meth:`release` re-raises a recorded one afterwards.
    """

    def __init__(self):
        self.saved = {}
        self.held: int | None = None
        self.active = False

    def _raise(self, signum, _frame):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def _record(self, signum, _frame):
        self.held = self.held or signum

    def _install(self, handler) -> None:
        for sig in STOP_SIGNALS:
            try:
                old = signal.signal(sig, handler)
                self.saved.setdefault(sig, old)
            except (ValueError, OSError):
                pass

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.active = True
            self._install(self._raise)
        return self

    def hold(self) -> None:
        if self.active:
            self._install(self._record)

    def release(self) -> None:
        if self.active:
            self._install(self._raise)
            if self.held is not None:
                signum, self.held = self.held, None
                self._raise(signum, None)

    def __exit__(self, *exc):
        for sig, old in self.saved.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError):
                pass
        self.saved = {}


def kill_group(proc: subprocess.Popen, reap_timeout: float = 10.0) -> None:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session``) and reap it.

    Only while ``proc`` has not been reaped: afterwards its pid (= group id) may belong to
    someone else."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=reap_timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass


def proc_status(pid: int) -> dict:
    """``VmHWM``, ``VmRSS``, ``VmPeak`` (kB) and ``Threads`` of a process, from ``/proc`` (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            text = fh.read()
    except OSError:
        text = ""
    vals = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "VmPeak", "Threads"):
            parts = rest.split()
            vals[key] = int(parts[0]) if parts else None
    return vals
