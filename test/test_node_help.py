"""``seg_node --help``, and the documents' parameter tables, against the node's own tables.

The console script runs as a subprocess.  Its environment makes any ROS start fail
(``ROS_DOMAIN_ID`` that is not a number): the same command without ``--help`` is run as the
control and must fail in ``rclpy.init``, so a help that touched ROS could not pass.  A second
check uses a valid environment and an empty ``ROS_LOG_DIR``: ``rclpy.init`` writes a log file
there, ``--help`` must not.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from clipseg_ros import node_help  # noqa: E402
from clipseg_ros.node_params import PARAMETERS, _Param  # noqa: E402
from ros_helpers import seg_node_command  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_script(args, env_changes: dict, timeout: float = 60.0):
    env = {**os.environ, **env_changes}
    t0 = time.monotonic()
    proc = subprocess.run(seg_node_command() + list(args), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def param_line(text: str, name: str) -> list[str]:
    """The columns of ``name``'s line in the help's parameter list."""
    for line in text.splitlines():
        cols = line.split()
        if cols and cols[0] == name and line.startswith("  " + name):
            return cols
    raise AssertionError(f"no line for parameter {name} in the help:\n{text}")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_without_a_ros_context(flag, tmp_path):
    broken = {"ROS_DOMAIN_ID": "not_a_number", "ROS_LOG_DIR": str(tmp_path / "logs")}
    proc, seconds = run_script([flag], broken)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out == node_help.format_help(PARAMETERS)
    assert out.startswith("usage: seg_node")
    for p in PARAMETERS:
        cols = param_line(out, p.name)
        assert cols[1] == node_help.parameter_rows([p])[0]["type"], cols
        assert ("no" if p.read_only else "yes") in cols[2:4], cols
    assert param_line(out, "overlay_alpha")[1:5] == ["double", "0.5", "yes", "0"]
    assert param_line(out, "threads")[1:4] == ["int", "0", "no"] and "256" in param_line(out, "threads")
    assert param_line(out, "model")[1:4] == ["string", '""', "no"]
    assert param_line(out, "palette")[1:4] == ["int[]", "unset", "yes"]
    assert "Subscribes:" in out and "Publishes:" in out
    for t in node_help.TOPICS:
        assert re.search(rf"^  {re.escape(t.name)} +{re.escape(t.msg_type)}$", out, re.M), t.name
    assert out.count("\n  seg_node --ros-args") == 3       # three example command lines
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())
    assert seconds < 20.0, seconds
    # the control: the same environment breaks a real start in rclpy.init
    proc, _ = run_script(["--ros-args", "-p", "model:=/nonexistent/m.clipseg"], broken)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot initialise ROS" in proc.stderr and "ROS_DOMAIN_ID" in proc.stderr


def test_help_writes_no_ros_log_where_a_start_does(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    proc, _ = run_script(["--help"], {"ROS_LOG_DIR": str(logs)})
    assert proc.returncode == 0 and proc.stdout.startswith("usage: seg_node")
    assert list(logs.iterdir()) == []
    # control: a real start (that fails on its model, after rclpy.init) leaves a log file
    proc, _ = run_script(["--ros-args", "-p", "model:=/nonexistent/m.clipseg",
                          "-p", "device:=cpu", "-p", "backend:=onnxruntime"], {"ROS_LOG_DIR": str(logs)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert list(logs.iterdir()), "rclpy.init wrote no log file: this check cannot tell help from a start"


def test_help_after_ros_args_block_but_not_inside_it(tmp_path):
    """``--help`` inside ``--ros-args`` belongs to rcl (and is an error there), after ``--`` it is
    the node's again."""
    broken = {"ROS_DOMAIN_ID": "not_a_number", "ROS_LOG_DIR": str(tmp_path / "logs")}
    proc, _ = run_script(["--ros-args", "-r", "__ns:=/x", "--", "--help"], broken)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: seg_node"), proc.stderr
    proc, _ = run_script(["--ros-args", "--help"], broken)
    assert proc.returncode == 2 and "usage: seg_node" not in proc.stdout


@pytest.mark.parametrize("argv, want", [
    (["--help"], True),
    (["-h"], True),
    (["--ros-args", "-p", "model:=x", "--", "-h"], True),
    (["foo", "--help", "--ros-args", "-r", "image:=/c"], True),
    ([], False),
    (["--ros-args", "-p", "model:=x"], False),
    (["--ros-args", "--help"], False),
    (["--ros-args", "-r", "__node:=help", "-p", "x:=--help"], False),
    (["--helpme"], False),
    (["--ros-args", "-p", "a:=1", "--", "x", "--ros-args", "-h"], False),
])
def test_wants_help(argv, want):
    assert node_help.wants_help(argv) is want


def test_help_and_tables_follow_the_parameter_table():
    extra = _Param("a_new_parameter", 7, 2, "Something new", int_range=(3, 9))
    table = PARAMETERS + (extra,)
    text = node_help.format_help(table)
    cols = param_line(text, "a_new_parameter")
    assert cols[1:] == ["int", "7", "yes", "3", "..", "9"]
    assert "Something new" in text
    assert "| `a_new_parameter` | int | `7` | 3 .. 9 | yes | Something new |" in node_help.markdown_table(table)
    assert "a_new_parameter" not in node_help.format_help(PARAMETERS)


def _doc_table(path: Path, heading: str) -> list[list[str]]:
    """The rows (cells) of the first table after ``heading`` in a markdown file."""
    lines = path.read_text().splitlines()
    assert heading in lines, f"{path.name}: no '{heading}' heading"
    i = lines.index(heading) + 1
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", lines[i].strip())[1:-1]]
        rows.append(cells)
        i += 1
    return rows


@pytest.mark.parametrize("doc, heading", [("README.md", "### Parameters"),
                                          ("docs/node.md", "## Parameters")])
def test_doc_parameter_tables_match_the_node(doc, heading):
    rows = _doc_table(REPO / doc, heading)
    assert rows[0] == list(node_help.MARKDOWN_COLUMNS), rows[0]
    assert set(rows[1]) == {"---"}
    body = rows[2:]
    want = node_help.markdown_cells(PARAMETERS)
    names = [r[0].strip("`") for r in body]
    assert names == [p.name for p in PARAMETERS], (
        f"{doc}: the parameter table lists {names}; regenerate it with "
        f"`python -m clipseg_ros.node_help --markdown`")
    for got, exp in zip(body, want):
        assert got == exp, f"{doc}: {got} != {exp} (python -m clipseg_ros.node_help --markdown)"


def test_help_topics_are_the_topics_of_a_real_node():
    """The help's topic table against what a real SegNode (both input modes) creates."""
    pytest.importorskip("onnxruntime")
    from rclpy.parameter import Parameter

    from clipseg_ros.node import SegNode
    from ros_helpers import RosHarness, known_model

    infra = {"/rosout", "/parameter_events"}
    ros = RosHarness("test_node_help")
    try:
        for compressed in (False, True):
            ns = f"/help_{int(compressed)}"
            node = SegNode(context=ros.context, namespace=ns, parameter_overrides=[
                Parameter("model", value=known_model()), Parameter("device", value="cpu"),
                Parameter("input_compressed", value=compressed)])
            try:
                def resolved(name):
                    if name.startswith("/"):
                        return name
                    return f"{ns}/seg_node{name[1:]}" if name.startswith("~") else f"{ns}/{name}"

                pubs = {(n, tuple(t)) for n, t in node.get_publisher_names_and_types_by_node("seg_node", ns)
                        if n not in infra}
                subs = {(n, tuple(t)) for n, t in node.get_subscriber_names_and_types_by_node("seg_node", ns)}
                want_pubs = {(resolved(t.name), (t.msg_type.replace("/", "/msg/"),))
                             for t in node_help.TOPICS if t.direction == "out"}
                assert pubs == want_pubs
                skip = "image" if compressed else "image/compressed"   # one of the two inputs
                want_subs = {(resolved(t.name), (t.msg_type.replace("/", "/msg/"),))
                             for t in node_help.TOPICS if t.direction == "in" and t.name != skip}
                assert subs == want_subs
            finally:
                node.destroy_node()
    finally:
        ros.close()
