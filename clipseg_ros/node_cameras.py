"""The cameras of ``seg_node``: which topics, where their outputs go, and each camera's state.

ROS-free.  With the ``cameras`` parameter unset (or ``[]``) the node has one camera: it subscribes
to the relative topic ``image`` (remap it) and publishes ``~/labels``, ``~/color`` ... as always.
With ``cameras: [/front/image_raw, /rear/image_raw]`` it serves every listed camera with one model:

* each camera's outputs go under ``~/<camera>/`` where ``<camera>`` is the image topic's namespace
  (``/front/image_raw`` -> ``~/front/labels``, ``/robot/left/image_raw`` -> ``~/robot/left/labels``);
* its ``camera_info`` is the image topic's sibling (``/front/camera_info``), and
  ``input_compressed`` subscribes ``<topic>/compressed`` (the image_transport naming);
* each camera has its own one-slot, drop-oldest mailbox, its own counters and latency windows and
  its own ``DiagnosticStatus``.

:func:`plan_cameras` turns the (resolved) topics into :class:`CameraPlan` entries and rejects
what cannot work: a topic without a namespace (its outputs would have no name of their own),
two topics in the same namespace, the same topic twice.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from .node_diagnostics import _Stats

__all__ = ["CameraPlan", "CameraState", "CameraPlanError", "OUTPUTS", "camera_key", "plan_cameras",
           "single_camera"]

#: The per-camera outputs, by key; the topic is ``<prefix>/<key>`` (``~/labels``, ``~/front/labels``).
OUTPUTS = ("labels", "color", "overlay", "confidence", "labels/compressed", "groups", "groups/color",
           "camera_info")


class CameraPlanError(ValueError):
    """The ``cameras`` parameter cannot be served; the message names the entry."""


@dataclass(frozen=True)
class CameraPlan:
    """One camera: ``key`` ("" for the single camera), the topic to subscribe (relative ``image``
    for the single camera, so remapping works), and the prefix of its outputs (``~`` or
    ``~/<key>``)."""

    key: str
    subscribe: str
    out_prefix: str

    def output(self, name: str) -> str:
        return f"{self.out_prefix}/{name}"


def single_camera(compressed: bool) -> list[CameraPlan]:
    return [CameraPlan("", "image/compressed" if compressed else "image", "~")]


def camera_key(topic: str) -> str:
    """The namespace of a fully qualified image topic, without the leading slash
    (``/front/image_raw`` -> ``front``); "" when the topic is at the root."""
    return topic.strip("/").rpartition("/")[0]


def plan_cameras(entries, resolved, compressed: bool) -> list[CameraPlan]:
    """The cameras for ``entries`` (the parameter's values) given their fully qualified names
    ``resolved`` (the node resolves them: namespace, remapping).  Raises :class:`CameraPlanError`."""
    plans: list[CameraPlan] = []
    by_key: dict[str, int] = {}
    by_topic: dict[str, int] = {}
    for i, (entry, topic) in enumerate(zip(entries, resolved)):
        if compressed and topic.endswith("/compressed"):
            raise CameraPlanError(
                f"cameras[{i}] {entry!r}: give the image topic, not its /compressed sibling "
                f"(input_compressed subscribes <topic>/compressed)")
        if topic in by_topic:
            raise CameraPlanError(f"cameras[{i}] {entry!r} is the same topic as "
                                  f"cameras[{by_topic[topic]}] ({topic})")
        key = camera_key(topic)
        if not key:
            raise CameraPlanError(
                f"cameras[{i}] {entry!r} ({topic}) has no namespace to name its outputs; use a "
                f"topic inside the camera's namespace, e.g. /{topic.strip('/')}_cam/image_raw")
        if key in by_key:
            raise CameraPlanError(
                f"cameras[{i}] {entry!r} and cameras[{by_key[key]}] {entries[by_key[key]]!r} are both "
                f"in namespace /{key}: their outputs (~/{key}/labels ...) would collide")
        by_topic[topic], by_key[key] = i, i
        plans.append(CameraPlan(key, topic + ("/compressed" if compressed else ""), f"~/{key}"))
    return plans


@dataclass
class CameraState:
    """What the node keeps per camera: subscriptions, publishers, mailbox, statistics, buffers and
    the recent camera_info messages.  The mailbox is guarded by the node's condition variable."""

    plan: CameraPlan
    camera_info_keep: int
    input_topic: str = ""
    camera_info_topic: str = ""
    sub: object = None
    sub_camera_info: object = None
    pubs: dict = field(default_factory=dict)
    slot: object = None                 # the newest unprocessed message
    stats: _Stats = field(default_factory=_Stats)
    buffers: dict = field(default_factory=dict)
    caminfo_notice: bool = False
    diag_last: tuple = ()

    def __post_init__(self):
        self.caminfo_lock = threading.Lock()
        self.caminfos: deque = deque(maxlen=self.camera_info_keep)

    @property
    def key(self) -> str:
        return self.plan.key

    def add_camera_info(self, msg) -> None:
        with self.caminfo_lock:
            self.caminfos.append(msg)

    def camera_info_for(self, header):
        """The camera_info with the image's stamp if one came, else the newest (None: none yet)."""
        want = (header.stamp.sec, header.stamp.nanosec)
        with self.caminfo_lock:
            if not self.caminfos:
                return None
            for info in reversed(self.caminfos):
                if (info.header.stamp.sec, info.header.stamp.nanosec) == want:
                    return info
            return self.caminfos[-1]
