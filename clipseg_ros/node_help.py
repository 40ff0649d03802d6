"""``seg_node --help``: usage text and documentation tables generated from the node's own tables.

Nothing here creates a ROS context: the text is built from the parameter table
(:data:`clipseg_ros.node_params.PARAMETERS`; :mod:`clipseg_ros.node_params` holds the table and its
validation, :mod:`clipseg_ros.node` the node itself, :mod:`clipseg_ros.node_diagnostics` its
diagnostics statistics) and the topic table below, so ``seg_node --help`` works on a machine with no
DDS, no ``ROS_DOMAIN_ID`` and a broken RMW.  The same rows make the parameter
tables of README.md and docs/node.md (``python -m clipseg_ros.node_help --markdown`` prints them;
a test checks that the documents still match).

The functions take the parameter table as an argument (any sequence of objects with ``name``,
``default``, ``ptype``, ``description``, ``read_only``, ``float_range``, ``int_range`` and
``constraints``), so they are plain Python; only :func:`main` imports the node module.
"""
from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

__all__ = ["Topic", "TOPICS", "wants_help", "parameter_rows", "format_help", "markdown_table", "main"]

PROG = "seg_node"


@dataclass(frozen=True)
class Topic:
    direction: str       # "in" | "out"
    name: str            # as the node creates it: relative ("image") or private ("~/labels")
    msg_type: str        # package/Type
    notes: str


#: What the node subscribes and publishes.  A test compares this with the topics a real node
#: creates (``test_node_help.py``), so an added publisher without a line here fails the suite.
TOPICS: tuple[Topic, ...] = (
    Topic("in", "image", "sensor_msgs/Image",
          "the camera (rgb8, bgr8, rgba8, bgra8, mono8, mono16, bayer, yuv422); "
          "remap it: -r image:=/camera/image_raw.  With the cameras parameter: each listed "
          "topic instead, and each camera's outputs below go under ~/<camera>/ (its namespace)"),
    Topic("in", "image/compressed", "sensor_msgs/CompressedImage",
          "instead of image when input_compressed is true (jpeg / png)"),
    Topic("in", "camera_info", "sensor_msgs/CameraInfo",
          "the image topic's sibling (/cam/image_raw -> /cam/camera_info); optional"),
    Topic("out", "~/labels", "sensor_msgs/Image", "mono8 class index per pixel, 255 = unlabeled"),
    Topic("out", "~/color", "sensor_msgs/Image", "rgb8 color mask (while subscribed)"),
    Topic("out", "~/overlay", "sensor_msgs/Image",
          "rgb8 camera image blended with the mask (while subscribed)"),
    Topic("out", "~/confidence", "sensor_msgs/Image",
          "32FC1 max softmax probability (while subscribed and publish_confidence)"),
    Topic("out", "~/labels/compressed", "sensor_msgs/CompressedImage",
          "the labels as lossless PNG, format \"mono8; png compressed\" (while subscribed)"),
    Topic("out", "~/camera_info", "sensor_msgs/CameraInfo",
          "the camera's camera_info with each labels message's header (once one arrives)"),
    Topic("out", "~/groups", "sensor_msgs/Image",
          "mono8 group index per pixel, 255 = no group (with label_groups)"),
    Topic("out", "~/groups/color", "sensor_msgs/Image",
          "rgb8 group colors (with label_groups, while subscribed)"),
    Topic("out", "/diagnostics", "diagnostic_msgs/DiagnosticArray",
          "rates, drops, latency every diagnostics_period s"),
    Topic("out", "~/transition_event", "lifecycle_msgs/TransitionEvent",
          "lifecycle transitions (configure, activate, ...; services ~/change_state, ~/get_state)"),
)

EXAMPLES = (
    ("segment a camera with the bundled CamVid model",
     f"{PROG} --ros-args -r image:=/camera/image_raw"),
    ("your model on a GPU, in namespace /front, with the shipped parameters file",
     f"{PROG} --ros-args --params-file config/params.yaml -r __ns:=/front "
     f"-r image:=/front/image_raw -p model:=/path/to/model.clipseg -p device:=cuda"),
    ("two cameras, one model: outputs on /seg_node/front/labels and /seg_node/rear/labels",
     f"{PROG} --ros-args -p cameras:=\"['/front/image_raw', '/rear/image_raw']\""),
)

_HELP_FLAGS = ("-h", "--help")


def user_arguments(argv: list[str]) -> list[str]:
    """The arguments of ``argv`` (without the program name) that are not ROS arguments: those
    outside ``--ros-args ... [--]`` blocks, the way rcl splits a command line."""
    out, in_ros = [], False
    for arg in argv:
        if in_ros:
            if arg == "--":
                in_ros = False
            continue
        if arg == "--ros-args":
            in_ros = True
        else:
            out.append(arg)
    return out


def wants_help(argv: list[str]) -> bool:
    """True when ``-h`` / ``--help`` is given as a node argument (not inside ``--ros-args``)."""
    return any(a in _HELP_FLAGS for a in user_arguments(argv))


# ------------------------------------------------------------------------------------------------
# the parameter table as text
# ------------------------------------------------------------------------------------------------

# rcl_interfaces/ParameterType values (fixed by the message definition)
_TYPE_NAMES = {1: "bool", 2: "int", 3: "double", 4: "string", 5: "byte[]", 6: "bool[]", 7: "int[]",
               8: "double[]", 9: "string[]"}


def _type_name(p) -> str:
    return _TYPE_NAMES.get(int(p.ptype), f"type {p.ptype}")


def _default_text(p) -> str:
    value = p.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "unset"      # a Parameter.Type: declared without a default


def _range_text(p) -> str:
    if p.constraints:
        return p.constraints
    if p.float_range is not None:
        lo, hi = p.float_range
        return f"{lo:g} .. {hi:g}"
    if p.int_range is not None:
        lo, hi = p.int_range
        return f"{lo} .. {hi}"
    return "true | false" if int(p.ptype) == 1 else "any"


def parameter_rows(parameters) -> list[dict]:
    """One dict per parameter: name, type, default, range, runtime ("yes" / "no"), meaning."""
    return [{"name": p.name, "type": _type_name(p), "default": _default_text(p),
             "range": _range_text(p), "runtime": "no" if p.read_only else "yes",
             "meaning": p.description} for p in parameters]


MARKDOWN_COLUMNS = ("name", "type", "default", "range", "run time", "meaning")
_ROW_KEYS = ("name", "type", "default", "range", "runtime", "meaning")


def markdown_cells(parameters) -> list[list[str]]:
    """The cells of the documents' parameter table (code spans where a value is literal)."""
    cells = []
    for r in parameter_rows(parameters):
        cells.append([f"`{r['name']}`", r["type"], f"`{r['default']}`",
                      r["range"].replace("|", "\\|"), r["runtime"], r["meaning"].replace("|", "\\|")])
    return cells


def markdown_table(parameters) -> str:
    """The parameter table of README.md and docs/node.md, as markdown."""
    lines = ["| " + " | ".join(MARKDOWN_COLUMNS) + " |",
             "|" + "---|" * len(MARKDOWN_COLUMNS)]
    lines += ["| " + " | ".join(c) + " |" for c in markdown_cells(parameters)]
    return "\n".join(lines)


def format_help(parameters, topics=TOPICS, width: int = 100) -> str:
    """The ``seg_node --help`` text."""
    wrap = textwrap.TextWrapper(width=width, initial_indent="      ", subsequent_indent="      ",
                                break_on_hyphens=False, break_long_words=False)
    topic_w = max(len(t.name) for t in topics) + 1
    out = [
        f"usage: {PROG} [-h] [--ros-args [-r FROM:=TO] [-p NAME:=VALUE] [--params-file FILE] ...]",
        "",
        "Semantic segmentation of a camera stream (clipseg_ros).  Each image is segmented by the",
        "model file's network; every output carries the input's header (stamp, frame_id).",
        "Everything after --ros-args goes to ROS unchanged.  ~ is the node's name",
        f"(/{PROG}, or /<namespace>/{PROG} with -r __ns:=/<namespace>).",
        "",
    ]
    for direction, title in (("in", "Subscribes:"), ("out", "Publishes:")):
        out.append(title)
        for t in topics:
            if t.direction == direction:
                out.append(f"  {t.name:<{topic_w}} {t.msg_type}")
                out.extend(wrap.wrap(t.notes))
        out.append("")
    rows = parameter_rows(parameters)
    out.append("Parameters (-p NAME:=VALUE; run time = yes: can be changed while the node runs, "
               "ros2 param set):")
    nw = max(len(r["name"]) for r in rows)
    tw = max(len(r["type"]) for r in rows)
    dw = min(max(len(r["default"]) for r in rows), 14)
    out.append(f"  {'name':<{nw}}  {'type':<{tw}}  {'default':<{dw}}  run time  range")
    for r in rows:
        out.append(f"  {r['name']:<{nw}}  {r['type']:<{tw}}  {r['default']:<{dw}}  "
                   f"{r['runtime']:<8}  {r['range']}")
        out.extend(wrap.wrap(r["meaning"]))
    out += ["", "Examples:"]
    for what, cmd in EXAMPLES:
        out += [f"  # {what}", f"  {cmd}"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m clipseg_ros.node_help [--markdown]``: the help text, or the docs' table."""
    from .node_params import PARAMETERS

    args = sys.argv[1:] if argv is None else argv
    if "--markdown" in args:
        print(markdown_table(PARAMETERS))
    else:
        sys.stdout.write(format_help(PARAMETERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
