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
SHARED_DATA_ENV = "CLIPSEG_SHARED_DATA"


def _find_shared_data() -> Path | None:
    """The shared data folder, or None.  ``CLIPSEG_SHARED_DATA``, when set, is the only place looked
    at (a path that is not a folder, e.g. ``/nonexistent``, means "no shared data"); otherwise
    ``../shared/data`` next to the repository."""
    env = os.environ.get(SHARED_DATA_ENV)
    cand = Path(env).expanduser() if env is not None else REPO_ROOT.parent / "shared" / "data"
    return cand.resolve() if env != "" and cand.is_dir() else None


SHARED_DATA = _find_shared_data()
TEST_DATA = Path(__file__).resolve().parent / "data"
_EXTRA = "shared_data"        # marker of the extra tests on the real shared data


def pytest_configure(config):
    config.addinivalue_line("markers", f"{_EXTRA}: extra test on the real shared data (CamVid, CLIP "
                                       f"embeddings, ImageNet weights); not run where it is absent")


def pytest_collection_modifyitems(config, items):
    """Tests that need the real shared data are marked; without it they are deselected and the
    summary says so (they are extras: every feature is also covered by data the tests make)."""
    extra = [item for item in items if _EXTRA in getattr(item, "fixturenames", ())]
    for item in extra:
        item.add_marker(_EXTRA)
    config._clipseg_extra = (len(extra), SHARED_DATA is None)
    if SHARED_DATA is None and extra:
        config.hook.pytest_deselected(items=extra)
        items[:] = [item for item in items if _EXTRA not in getattr(item, "fixturenames", ())]


def pytest_report_header(config):
    if SHARED_DATA is not None:
        return f"shared data: {SHARED_DATA}"
    why = f"{SHARED_DATA_ENV}={os.environ[SHARED_DATA_ENV]!r}" if SHARED_DATA_ENV in os.environ \
        else "no ../shared/data next to the repository"
    return f"shared data: none ({why})"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n, absent = getattr(config, "_clipseg_extra", (0, False))
    if n and absent:
        terminalreporter.write_line(
            f"shared data: not found, so {n} extra test(s) on the real CamVid / CLIP embeddings / ImageNet "
            f"weights were deselected (set {SHARED_DATA_ENV} to run them); everything they cover also "
            f"runs on the data the tests make")
    elif n:
        terminalreporter.write_line(f"shared data: {SHARED_DATA} ({n} extra test(s) on it selected)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder (CamVid, CLIP text embeddings, ImageNet weights).  Only the
    extra tests use it; they are deselected where it is absent (the skip is a safety net)."""
    if SHARED_DATA is None:
        pytest.skip(f"no shared data folder (set {SHARED_DATA_ENV})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_camvid_root(shared_data) -> Path:
    """The real CamVid (367 train / 101 val at 480x360)."""
    return shared_data / "camvid"


@pytest.fixture(scope="session")
def camvid_root(tmp_path_factory) -> Path:
    """A tiny CamVid in the SegNet layout made from the shipped sample bag's real frames and labels:
    32 val + 16 train images at 160x120 (see tiny_camvid.py).  Needs no shared data."""
    from tiny_camvid import make_tiny_camvid

    return make_tiny_camvid(tmp_path_factory.mktemp("tiny_camvid"))


@pytest.fixture(scope="session")
def test_data() -> Path:
    """test/data: tiny committed files (random-unit-vector class embeddings, see its README)."""
    return TEST_DATA
