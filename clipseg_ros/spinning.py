"""Spin an rclpy executor in a background thread that outlives one failed callback.

``executor.spin()`` ends at the first exception that escapes a callback or the executor itself,
and a spin thread that swallows it just stops: every later message is silently never delivered.
One such exception is a known rclpy race: destroying a subscription (or node) from another
thread while the executor is waiting on it or taking from it raises ``InvalidHandle`` in the spin
thread (ros2/rclpy#1206, #1284).  :class:`BackgroundSpinner` calls ``spin_once`` in a loop,
records each such exception (``errors``, and ``on_error`` when given) and goes on, until
:meth:`stop` or the context shuts down.

rclpy is not imported here; the caller passes its executor and context.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["BackgroundSpinner"]


class BackgroundSpinner:
    """``BackgroundSpinner(executor, context).start()`` … ``.stop()``.

    ``errors`` keeps the last ``keep_errors`` exceptions as ``"Type: message"`` strings (the
    count of all of them is ``error_count``), for tests and tools to report."""

    def __init__(self, executor, context, name: str = "ros_spin", timeout_sec: float = 0.1,
                 on_error: Callable[[BaseException], None] | None = None, keep_errors: int = 50):
        self.executor = executor
        self.context = context
        self.timeout_sec = timeout_sec
        self.on_error = on_error
        self.keep_errors = keep_errors
        self.errors: list[str] = []
        self.error_count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "BackgroundSpinner":
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        from rclpy.executors import ExternalShutdownException

        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=self.timeout_sec)
            except ExternalShutdownException:
                break
            except Exception as exc:  # noqa: BLE001 - see the module docstring
                if self._stop.is_set() or not self.context.ok():
                    break             # shutting down under us: expected
                self.error_count += 1
                self.errors.append(f"{type(exc).__name__}: {exc}")
                del self.errors[:-self.keep_errors]
                if self.on_error is not None:
                    try:
                        self.on_error(exc)
                    except Exception:  # noqa: BLE001 - a reporting hook must not end spinning
                        pass
                time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end (it does within ``timeout_sec``) and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)
