"""The RViz2 view of one ``seg_node``: ``config/seg.rviz`` with the topics the launch file wired.

``config/seg.rviz`` is both a usable RViz config (the launch defaults: ``/camera/image_raw`` and
``/seg_node/...``) and the template: its three Image displays are found by name
(:data:`DISPLAYS`) and get the input topic and the node's ``~/overlay`` and ``~/color`` under the
chosen namespace.  The launch file calls :func:`write_rviz_config` at launch time (an
OpaqueFunction) and starts ``rviz2 -d`` on the file it returns.  Plain Python and PyYAML, no ROS.

Names are resolved the way rcl resolves the node's own names: an absolute name stays, ``~/x``
is ``<namespace>/<node>/x``, anything else is relative to the namespace.
"""
from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path

import yaml

__all__ = ["DISPLAYS", "RvizConfigError", "normalize_namespace", "resolve_topic", "view_topics",
           "render_rviz_config", "write_rviz_config", "image_displays"]

#: display name in seg.rviz -> what it shows
DISPLAYS = {"Camera (input)": "input", "Segmentation overlay": "overlay",
            "Segmentation colors": "color"}

NODE_NAME = "seg_node"
_NAME_RE = re.compile(r"[A-Za-z_~{}][A-Za-z0-9_/{}~]*")


class RvizConfigError(ValueError):
    """The template or a topic / namespace argument is unusable; the message says why."""


def normalize_namespace(namespace: str) -> str:
    """``""`` / ``"/"`` -> ``"/"``; ``"front"`` / ``"/front/"`` -> ``"/front"``."""
    ns = (namespace or "").strip()
    parts = [p for p in ns.split("/") if p]
    for p in parts:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p):
            raise RvizConfigError(f"namespace {namespace!r}: {p!r} is not a valid name token")
    return "/" + "/".join(parts)


def resolve_topic(name: str, namespace: str = "", node_name: str = NODE_NAME) -> str:
    """The fully qualified topic ``name`` names for node ``node_name`` in ``namespace``."""
    name = (name or "").strip()
    if not name or not _NAME_RE.fullmatch(name.lstrip("/")) or "//" in name or name.endswith("/"):
        raise RvizConfigError(f"topic {name!r} is not a valid ROS name")
    ns = normalize_namespace(namespace)
    if name.startswith("/"):
        return name
    if name == "~" or name.startswith("~/"):
        base = ns.rstrip("/") + "/" + node_name
        return base + name[1:]
    return ns.rstrip("/") + "/" + name


def view_topics(image: str = "/camera/image_raw", namespace: str = "", node_name: str = NODE_NAME,
                input_compressed: bool = False) -> dict[str, str]:
    """``{"input": ..., "overlay": ..., "color": ...}`` for a node launched with these arguments.

    ``image`` is the launch file's ``image`` argument (the remapping target of the node's
    ``image``); with ``input_compressed`` the node reads ``<image>/compressed``, and RViz picks
    the compressed image_transport from that topic suffix."""
    image_topic = resolve_topic(image, namespace, node_name)
    return {
        "input": image_topic + ("/compressed" if input_compressed else ""),
        "overlay": resolve_topic("~/overlay", namespace, node_name),
        "color": resolve_topic("~/color", namespace, node_name),
    }


def image_displays(config: dict) -> dict[str, dict]:
    """The template's role -> display dict (the dicts inside ``config``)."""
    try:
        displays = config["Visualization Manager"]["Displays"]
    except (KeyError, TypeError):
        raise RvizConfigError("not an RViz config: no 'Visualization Manager: Displays'") from None
    found = {}
    for d in displays or ():
        role = DISPLAYS.get(d.get("Name")) if isinstance(d, dict) else None
        if role is not None:
            if role in found:
                raise RvizConfigError(f"two displays are named {d.get('Name')!r}")
            if not isinstance(d.get("Topic"), dict):
                raise RvizConfigError(f"display {d.get('Name')!r} has no Topic")
            found[role] = d
    missing = [name for name, role in DISPLAYS.items() if role not in found]
    if missing:
        raise RvizConfigError(f"the RViz template has no display named {', '.join(map(repr, missing))}")
    return found


def render_rviz_config(template_text: str, topics: dict[str, str]) -> str:
    """``template_text`` (an RViz YAML config) with the displays of :data:`DISPLAYS` showing
    ``topics`` (role -> topic, as :func:`view_topics` gives); everything else unchanged."""
    try:
        config = yaml.safe_load(template_text)
    except yaml.YAMLError as exc:
        raise RvizConfigError(f"the RViz template is not YAML: {exc}") from None
    if not isinstance(config, dict):
        raise RvizConfigError("the RViz template is not a YAML mapping")
    config = copy.deepcopy(config)
    for role, display in image_displays(config).items():
        display["Topic"]["Value"] = topics[role]
    return yaml.dump(config, Dumper=_RvizDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True)


class _RvizDumper(yaml.SafeDumper):
    """Writes null as ``~``, the way RViz saves its configs."""


_RvizDumper.add_representer(type(None), lambda d, _v: d.represent_scalar("tag:yaml.org,2002:null", "~"))


def write_rviz_config(template: str | os.PathLike, image: str = "/camera/image_raw",
                      namespace: str = "", input_compressed: bool = False,
                      node_name: str = NODE_NAME, directory: str | os.PathLike | None = None) -> Path:
    """Render ``template`` for these launch arguments into a new ``.rviz`` file; returns its path
    (in ``directory``, default the temp folder; the caller removes it)."""
    template = Path(template)
    try:
        text = template.read_text()
    except OSError as exc:
        raise RvizConfigError(f"cannot read the RViz template {template}: {exc}") from None
    topics = view_topics(image, namespace, node_name, input_compressed)
    rendered = render_rviz_config(text, topics)
    fd, path = tempfile.mkstemp(prefix="clipseg_seg_", suffix=".rviz",
                                dir=None if directory is None else str(directory))
    with os.fdopen(fd, "w") as f:
        f.write(rendered)
    return Path(path)
