"""Shared test configuration.

DDS must stay on this machine: before any ROS context starts, restrict Fast DDS to shared-memory
transport, give the test session a ROS_DOMAIN_ID of its own and send ROS logs to a temp folder.
These settings live here (and in the Makefile / .ci/run), never in the node itself.
"""
import os
import tempfile
from pathlib import Path

# sockets_size=64MB: camera-sized messages arrive whole.  No max_msg_size: with it, messages whose
# byte 60 from the end is 0x80 arrived 60 bytes short and were dropped (docs/node.md).
os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "SHM?sockets_size=64MB"
# A domain id of our own per test process (0..101 are valid for Fast DDS on Linux).
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="clipseg_roslog_"))
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _find_shared_data() -> Path:
    env = os.environ.get("CLIPSEG_SHARED_DATA")
    if env:
        return Path(env).resolve()
    for cand in (REPO_ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand.resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


SHARED_DATA = _find_shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder (CamVid, text embeddings, pretrained weights)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def camvid_root(shared_data) -> Path:
    return shared_data / "camvid"
