"""The OpenVINO backend's tests (``openvino_cases.py``), run by pytest in a process of their own.

With OpenVINO's CPU plugin loaded in the pytest process, a later test that starts ``clipseg-train``
subprocesses (``test_decisive``) was killed by SIGSEGV in ``waitpid``; running these cases in a
child process keeps the rest of the suite free of OpenVINO.  The child sees the same environment
(conftest's DDS settings are applied again there).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_openvino_cases_pass_in_their_own_process():
    pytest.importorskip("openvino")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(HERE / "openvino_cases.py")], cwd=HERE.parent, capture_output=True, text=True,
                         timeout=900)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
