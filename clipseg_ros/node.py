"""``seg_node``: the ROS 2 node around :class:`clipseg_ros.segmenter.Segmenter`.

This file is the ROS glue of the package: :class:`SegNode` and :func:`main`.  Parameters are read
into a plain :class:`NodeConfig`, messages are turned into numpy arrays (``image_codec``), segmented
(``segmenter``), colorized / blended (``visualize``) and turned back into messages.  Two modules
beside it hold the parts that need no node:

* :mod:`clipseg_ros.node_params`: the parameter table (``PARAMETERS``), :class:`NodeConfig`,
  ``validate_parameter`` and the parameter descriptors;
* :mod:`clipseg_ros.node_diagnostics`: the diagnostics statistics (counters, latency windows,
  percentiles) and ``summarize``, which builds the diagnostics level, message and key/values.

Topics (``~`` is the node's name, ``/seg_node`` by default)
-----------------------------------------------------------
* in  ``image`` (``sensor_msgs/Image``), or ``image/compressed`` (``sensor_msgs/CompressedImage``,
  jpeg/png) when ``input_compressed`` is true.  QoS: best effort, keep last, depth 1 by default
  (``qos_reliability``, ``qos_depth``).
* out ``~/labels``     mono8 at the input resolution, 255 = unlabeled.  Always published.
* out ``~/color``      rgb8 color mask (model palette, or the ``palette`` parameter).
* out ``~/overlay``    rgb8 ``(1 - overlay_alpha) * image + overlay_alpha * color``.
* out ``~/confidence`` 32FC1 max softmax probability in [0, 1].  The publisher always exists;
  it is used only when ``publish_confidence`` is true.
* out ``/diagnostics`` ``diagnostic_msgs/DiagnosticArray`` every ``diagnostics_period`` seconds.
* in  ``camera_info`` (``sensor_msgs/CameraInfo``), the sibling of the image topic (``/cam/image_raw``
  -> ``/cam/camera_info``); out ``~/camera_info``, a copy with each labels message's header
  (K, P, ROI scaled should the label size differ from the input).  Without it: not published,
  a one-time notice.
* out ``~/labels/compressed`` ``CompressedImage`` "mono8; png compressed" (lossless), while subscribed.
* out ``~/groups`` mono8 group index per pixel (255 = no group) and ``~/groups/color`` rgb8 (while
  subscribed), with ``label_groups`` (a YAML file, see ``label_groups.py``).

Several cameras, one model
--------------------------
With ``cameras: [/front/image_raw, /rear/image_raw]`` the node subscribes every listed topic (plus
``/compressed`` with ``input_compressed``, and each sibling ``camera_info``) instead of ``image``,
and publishes each camera's outputs under ``~/<camera>/`` (``~/front/labels``, ``~/front/color``,
``~/front/camera_info`` ...; ``<camera>`` is the topic's namespace, see ``node_cameras.py``).
Each camera has its own drop-oldest mailbox and its own ``DiagnosticStatus``
(``seg_node: segmentation front``); the frames waiting when the worker is free are segmented
together, in one inference call when the backend takes a batch (``Segmenter.batchable``: ONNX
files with a dynamic batch dimension, the PyTorch backend), else one after the other.

Output QoS: reliable (``output_qos_reliability``), keep last, depth 1.  Every output carries the
input header (stamp and frame_id) unchanged.  Color / overlay / confidence are computed only when
enabled *and* someone subscribes (labels are always published).

Threading
---------
The subscription callback only puts the message into its camera's one-slot mailbox (newest
wins; a frame that is replaced before the worker took it counts as *dropped*) and updates
counters.  A plain worker thread takes every waiting frame, decodes, segments and publishes, so
latency does not grow when the cameras are faster than the model.  The executor
(single-threaded) runs the subscriptions, the diagnostics timer and the parameter services;
:func:`main` survives an exception raised in any of them (it is logged and counted as a
callback error).
"""
from __future__ import annotations

import functools
import signal
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import image_codec, visualize
from . import camera_info as _caminfo, label_codec, label_groups as _groups
from .model_file import ModelFileError
from . import node_cameras as _cams
from .node_diagnostics import STALE_STAMP_S, _Stats, summarize
from .node_params import (_BY_NAME, DEFAULT_MODEL, PARAMETERS, NodeConfig, _descriptor, validate_parameter)
from .segmenter import Segmenter, SegmenterConfigError

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["DEFAULT_MODEL", "NodeConfig", "SegNode", "StartupError", "main", "validate_parameter"]

NODE_NAME = "seg_node"
#: camera_info messages kept to find the one with an image's stamp.
CAMERA_INFO_KEEP = 10

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


class StartupError(RuntimeError):
    """The node cannot start (model file, parameter values, backend); the message says why."""


# ------------------------------------------------------------------------------------------------
# the node
# ------------------------------------------------------------------------------------------------

class SegNode(LifecycleNode):
    """Semantic segmentation node; see the module docstring for topics and threading.

    A managed (lifecycle) node: ``configure`` loads and validates the model and creates the
    publishers and the diagnostics timer; ``activate`` subscribes and starts processing;
    ``deactivate`` stops processing (the model stays loaded); ``cleanup`` frees the model and the
    publishers; ``shutdown`` does whatever of that is needed and finalizes.  With the
    ``autostart`` parameter (default true) the constructor walks to active, so the node behaves
    like a plain node.

    Keyword arguments go to :class:`rclpy.node.Node` (``context``, ``namespace``,
    ``parameter_overrides``, ``cli_args``, ...).  Raises :class:`StartupError` (after logging it)
    when a parameter value is unusable or, with ``autostart``, when configure fails; the node is
    destroyed in that case.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._guard_change_state()
        self._worker: threading.Thread | None = None
        self._cond = threading.Condition()   # guards every camera's mailbox
        self._stopping = False
        self.segmenter: Segmenter | None = None
        self._cameras: list[_cams.CameraState] = []
        self._diag_timer = None
        self._publishers_made: list = []
        self._startup_error: str | None = None
        self._node_stats = _Stats()          # what belongs to no camera: callback errors
        try:
            self._cfg = self._declare_parameters()
            self._plan = self._plan_cameras(self._cfg)
            self.input_topics = [self.resolve_topic_name(p.subscribe) for p in self._plan]
            self.input_topic = self.input_topics[0]
            self.add_on_set_parameters_callback(self._on_set_parameters)
            if self._cfg.autostart:
                for step in (self.trigger_configure, self.trigger_activate):
                    if step() != TransitionCallbackReturn.SUCCESS:
                        raise StartupError(self._startup_error or f"lifecycle {step.__name__} failed")
        except StartupError as exc:
            if self._startup_error is None:
                self.get_logger().error(str(exc))
            self.stop()
            self.destroy_node()
            raise
        except BaseException:
            self.stop()
            self.destroy_node()
            raise

    # ---- lifecycle ------------------------------------------------------------------------------
    def _guard_change_state(self) -> None:
        """A ChangeState request for a transition the current state does not have (e.g. activate
        while unconfigured) makes rclpy's handler raise instead of answering; answer it with
        ``success: false`` and a logged reason, so a client waits for nothing and the node goes on."""
        service = getattr(self, "_service_change_state", None)
        if service is None:
            return
        inner = service.callback

        def guarded(request, response):
            try:
                return inner(request, response)
            except Exception as exc:  # noqa: BLE001 - rclpy raises RCLError for unknown transitions
                self.get_logger().warning(
                    f"change_state: transition {request.transition.id} "
                    f"{request.transition.label!r} refused in state {self.lifecycle_state}: {exc}")
                response.success = False
                return response

        service.callback = guarded

    @property
    def lifecycle_state(self) -> str:
        """``unconfigured``, ``inactive``, ``active`` or ``finalized`` (or a transition state)."""
        return self._state_machine.current_state[1]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._startup_error = None
        try:
            self._configure()
        except StartupError as exc:
            self._startup_error = str(exc)
            self.get_logger().error(str(exc))
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self.model_path} ({self.num_classes} classes, "
                               f"{self.segmenter.description}; precision {self.segmenter.precision_note}; "
                               f"network input {self._input_note()})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._subscribe()
        with self._cond:
            self._stopping = False
            for cam in self._cameras:
                cam.slot = None
        self._worker = threading.Thread(target=self._work, name="seg_node_worker", daemon=True)
        self._worker.start()
        cfg = self._cfg
        extras = f"[color, overlay{', confidence' if cfg.publish_confidence else ''}]"
        if len(self._cameras) == 1 and not self._cameras[0].key:
            self.get_logger().info(
                f"segmenting {self.input_topic} with {self.model_path} ({self.num_classes} classes, "
                f"{self.segmenter.description}); publishing {self._pub_labels.topic_name} {extras}")
        else:
            batching = ("batched into one inference call" if self.segmenter.batchable else
                        "one after the other (this backend / model file takes no batch)")
            self.get_logger().info(
                f"segmenting {len(self._cameras)} cameras with {self.model_path} ({self.num_classes} "
                f"classes, {self.segmenter.description}); frames that wait together run {batching}: "
                + "; ".join(f"{c.input_topic} -> {c.pubs['labels'].topic_name} {extras}"
                            for c in self._cameras))
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.stop()
        self.get_logger().info("deactivated: not processing (the model stays loaded)")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.stop()
        self._release()
        self.get_logger().info("lifecycle shutdown")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _plan_cameras(self, cfg: NodeConfig) -> list:
        """The cameras to serve (``node_cameras.plan_cameras``); StartupError when they cannot be."""
        if not cfg.cameras:
            return _cams.single_camera(cfg.input_compressed)
        resolved = []
        for i, entry in enumerate(cfg.cameras):
            try:
                resolved.append(self.resolve_topic_name(entry.strip()))
            except Exception as exc:  # noqa: BLE001 - rclpy raises InvalidTopicNameException & co
                raise StartupError(f"parameter cameras: cameras[{i}] {entry!r} is not a valid topic "
                                   f"name ({type(exc).__name__}: {exc})") from None
        try:
            return _cams.plan_cameras(list(cfg.cameras), resolved, cfg.input_compressed)
        except _cams.CameraPlanError as exc:
            raise StartupError(f"parameter cameras: {exc}") from None

    def _subscribe(self) -> None:
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        cfg = self._cfg
        in_qos = self._in_qos
        if cfg.input_compressed:
            self._decode, msg_type = image_codec.compressed_to_rgb, CompressedImage
        else:
            self._decode, msg_type = image_codec.image_to_rgb, Image
        info_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, reliability=in_qos.reliability,
                              depth=max(cfg.qos_depth, CAMERA_INFO_KEEP))
        for cam in self._cameras:
            cam.sub = self.create_subscription(msg_type, cam.plan.subscribe,
                                               functools.partial(self._on_image, cam), in_qos)
            cam.input_topic = cam.sub.topic_name
            cam.camera_info_topic = _caminfo.camera_info_topic(cam.input_topic, cfg.input_compressed)
            cam.sub_camera_info = self.create_subscription(CameraInfo, cam.camera_info_topic,
                                                           cam.add_camera_info, info_qos)
        self.input_topics = [c.input_topic for c in self._cameras]
        self.input_topic = self.input_topics[0]
        self.camera_info_topic = self._cameras[0].camera_info_topic

    def _unsubscribe(self) -> None:
        for cam in self._cameras:
            for name in ("sub", "sub_camera_info"):
                sub = getattr(cam, name)
                if sub is not None:
                    self.destroy_subscription(sub)
                    setattr(cam, name, None)

    @property
    def _sub(self):
        """The (first) camera's image subscription, None while not active."""
        return self._cameras[0].sub if self._cameras else None

    @property
    def _sub_camera_info(self):
        """The (first) camera's camera_info subscription, None while not active."""
        return self._cameras[0].sub_camera_info if self._cameras else None

    def _release(self) -> None:
        """Free what configure made: the model, the publishers, the diagnostics timer."""
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        self._unsubscribe()
        for pub in self._publishers_made:
            self.destroy_publisher(pub)
        self._publishers_made = []
        self.segmenter = None
        for cam in self._cameras:
            cam.pubs, cam.buffers = {}, {}

    def _publisher(self, msg_type, topic: str, qos):
        pub = self.create_publisher(msg_type, topic, qos)
        self._publishers_made.append(pub)
        return pub

    # ---- set-up ---------------------------------------------------------------------------------
    def _configure(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self._Image, self._CompressedImage = Image, CompressedImage
        cfg = self._cfg
        path = cfg.model_path()
        if not cfg.model and not path.is_file():
            raise StartupError(f"no model given and the default model file {path} is not installed; "
                               f"pass one with model:=/path/to/model.clipseg "
                               f"(--ros-args -p model:=/path/to/model.clipseg)")
        try:
            self.segmenter = Segmenter(path, device=cfg.device, backend=cfg.backend,
                                       precision=cfg.precision, threads=cfg.threads or None,
                                       log=self.get_logger().info, input_size=cfg.input_size or None)
            if cfg.publish_confidence:
                self.segmenter.want_confidence_soon()
        except ModelFileError as exc:
            raise StartupError(f"cannot load the model: {exc}") from None
        except SegmenterConfigError as exc:
            raise StartupError(f"cannot run model file {path}: {exc}") from None
        except FileNotFoundError as exc:
            raise StartupError(f"model file {path}: not found ({exc})") from None
        except (OSError, RuntimeError, ValueError) as exc:
            raise StartupError(f"cannot load model file {path}: {type(exc).__name__}: {exc}") from None
        self.num_classes = len(self.segmenter.class_names)
        reason = validate_parameter("palette", cfg.palette, self.num_classes)
        if reason:
            raise StartupError(f"parameter palette: {reason}")
        self.model_path = str(path)
        self._groups = None
        if cfg.label_groups:
            try:
                self._groups = _groups.load_label_groups(cfg.label_groups, self.segmenter.class_names,
                                                         self.segmenter.palette)
            except _groups.LabelGroupsError as exc:
                raise StartupError(f"parameter label_groups: {exc}") from None
        self._colorizer = self._make_colorizer(cfg.palette)
        if self._groups is not None:
            self._groups_colorizer = visualize.Colorizer(self._groups.palette)
            unmapped = ", ".join(self._groups.unmapped)
            self.get_logger().info(
                f"label groups from {self._groups.source}: "
                + ", ".join(f"{n}={g}" for g, n in enumerate(self._groups.names))
                + (f"; in no group (255): {unmapped}" if unmapped else ""))

        self._in_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg.qos_depth,
                                  reliability=_RELIABILITY[cfg.qos_reliability])
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=_RELIABILITY[cfg.output_qos_reliability])
        types = {"labels/compressed": CompressedImage, "camera_info": CameraInfo}
        now = time.monotonic()
        self._cameras = []
        for plan, topic in zip(self._plan, self.input_topics):
            cam = _cams.CameraState(plan, CAMERA_INFO_KEEP, input_topic=topic)
            cam.camera_info_topic = _caminfo.camera_info_topic(topic, cfg.input_compressed)
            # time, received, processed, rejected, inference errors, stale stamps, callback errors
            cam.diag_last = (now, 0, 0, 0, 0, 0, 0)
            for name in _cams.OUTPUTS:
                cam.pubs[name] = self._publisher(types.get(name, Image), plan.output(name), out_qos)
            self._cameras.append(cam)
        self.camera_info_topic = self._cameras[0].camera_info_topic
        # the single camera's publishers by their old names (_pub_labels, _pub_labels_compressed ...)
        for name, pub in self._cameras[0].pubs.items():
            setattr(self, "_pub_" + name.replace("/", "_"), pub)
        self._pub_diag = self._publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)

    def _publish_extras(self, cam, labels: np.ndarray, header, in_size: tuple, counts: dict) -> None:
        """The outputs derived from the labels: camera_info, labels/compressed, groups."""
        h, w = labels.shape
        info = cam.camera_info_for(header)
        if info is not None:
            cam.pubs["camera_info"].publish(_caminfo.for_labels(info, header, in_size, (w, h)))
            counts["camera_info_published"] = 1
        elif not cam.caminfo_notice:
            cam.caminfo_notice = True
            out = cam.pubs["camera_info"].topic_name
            self.get_logger().info(
                f"no camera_info on {cam.camera_info_topic}: {out} is not published until "
                f"one arrives; the other outputs are unchanged")
        pub = cam.pubs["labels/compressed"]
        if pub.get_subscription_count() > 0:
            msg = self._CompressedImage(header=header, format=label_codec.LABELS_PNG_FORMAT)
            msg.data = label_codec.encode_labels_png(labels)
            pub.publish(msg)
            counts["labels_compressed_published"] = 1
        if self._groups is not None:
            groups = self._groups.apply(labels, out=self._buffer(cam, "groups", (h, w)))
            self._publish(cam.pubs["groups"], groups, "mono8", header)
            counts["groups_published"] = 1
            if cam.pubs["groups/color"].get_subscription_count() > 0:
                color = self._groups_colorizer.colorize(
                    groups, out=self._buffer(cam, "groups_color", (h, w, 3)))
                self._publish(cam.pubs["groups/color"], color, "rgb8", header)
                counts["groups_color_published"] = 1

    def _declare_parameters(self) -> NodeConfig:
        values = {}
        for p in PARAMETERS:
            try:
                param = self.declare_parameter(p.name, p.default, _descriptor(p))
            except ParameterException as exc:
                raise StartupError(f"parameter {p.name}: {exc}") from None
            value = param.value
            if p.name in ("palette", "input_size"):      # declared without a default: may be uninitialized
                try:
                    value = self.get_parameter(p.name).value
                except ParameterUninitializedException:
                    value = None
                value = tuple(int(v) for v in (value or ()))
            elif p.name == "cameras":    # likewise
                try:
                    value = self.get_parameter(p.name).value
                except ParameterUninitializedException:
                    value = None
                value = tuple(str(v) for v in (value or ()))
            reason = validate_parameter(p.name, value)
            if reason:
                raise StartupError(f"parameter {p.name}: {reason}")
            values[p.name] = value
        values["device"] = values["device"].strip().lower()
        return NodeConfig(**values)

    def _input_note(self) -> str:
        """The size the network sees, and where it comes from (the diagnostics and the log)."""
        seg = self.segmenter
        if seg.input_size is None:
            return "each frame's own size"
        h, w = seg.input_size
        source = "the input_size parameter" if seg.input_size_source == "requested" else "the model file"
        return f"{w}x{h} (width x height, from {source})"

    def _make_colorizer(self, palette: tuple) -> visualize.Colorizer:
        pal = (np.asarray(palette, dtype=np.uint8).reshape(-1, 3) if palette else self.segmenter.palette)
        return visualize.Colorizer(pal)

    # ---- parameters at run time -------------------------------------------------------------
    def _on_set_parameters(self, params: list) -> SetParametersResult:
        updates = {}
        for prm in params:
            if prm.name not in _BY_NAME:
                continue
            value = prm.value
            if prm.name == "palette":
                value = tuple(int(v) for v in (value or ()))
            reason = validate_parameter(prm.name, value, getattr(self, "num_classes", None)
                                        if self.segmenter is not None else None)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            updates[prm.name] = value
        if updates:
            if "palette" in updates and self.segmenter is not None:
                self._colorizer = self._make_colorizer(updates["palette"])
            self._cfg = replace(self._cfg, **updates)   # one atomic swap; the worker reads self._cfg
            self.get_logger().info("parameters changed: " + ", ".join(
                f"{k}={v}" for k, v in updates.items()))
        return SetParametersResult(successful=True)

    # ---- input ------------------------------------------------------------------------------
    def _on_image(self, cam, msg) -> None:
        with self._cond:
            cam.stats.add(received=1)
            if cam.slot is not None:
                cam.stats.add(dropped=1)
            cam.slot = msg
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and all(c.slot is None for c in self._cameras):
                    self._cond.wait()
                if self._stopping:
                    return
                # every camera's waiting frame: they are segmented together
                batch = [(c, c.slot) for c in self._cameras if c.slot is not None]
                for c, _ in batch:
                    c.slot = None
            try:
                self._process(batch)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                for cam, _ in batch:
                    self._failed(cam, f"processing failed: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Stop the worker thread (waits for the frames in progress)."""
        with self._cond:
            self._stopping = True
            for cam in self._cameras:
                cam.slot = None
            self._cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)

    def destroy_node(self):
        self.stop()
        return super().destroy_node()

    # ---- per frame --------------------------------------------------------------------------
    def _where(self, cam) -> str:
        return f" from {cam.input_topic}" if cam.key else ""

    def _reject(self, cam, reason: str) -> None:
        with cam.stats.lock:
            cam.stats.rejected += 1
            cam.stats.last_rejection = reason
        self.get_logger().warning(f"skipping frame{self._where(cam)}: {reason}", throttle_duration_sec=2.0)

    def _failed(self, cam, reason: str) -> None:
        with cam.stats.lock:
            cam.stats.inference_errors += 1
            cam.stats.last_error = reason
        self.get_logger().error(reason + (f" ({cam.input_topic})" if cam.key else ""),
                                throttle_duration_sec=2.0)

    def _buffer(self, cam, name: str, shape: tuple) -> np.ndarray:
        buf = cam.buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = cam.buffers[name] = np.empty(shape, np.uint8)
        return buf

    def _publish(self, pub, array: np.ndarray, encoding: str, header) -> None:
        msg = self._Image()
        msg.header = header
        image_codec.fill_image(msg, array, encoding)
        pub.publish(msg)

    def _decoded(self, cam, msg, cfg: NodeConfig) -> np.ndarray | None:
        """The message as RGB, or None after counting and logging why it was rejected."""
        if cfg.max_image_pixels:
            # before decoding: for raw images from the message fields, for compressed ones from
            # the PNG / JPEG header (a small PNG can declare a huge image)
            try:
                if cfg.input_compressed:
                    w, h, codec = image_codec.compressed_size(msg)
                    where = f" (from its {codec.upper()} header, not decoded)"
                else:
                    w, h, where = int(msg.width), int(msg.height), ""
            except image_codec.ImageDecodeError as exc:
                self._reject(cam, str(exc))
                return None
            except (TypeError, ValueError):
                w = h = 0
            if w * h > cfg.max_image_pixels:
                self._reject(cam, f"image {w}x{h}{where} has more than max_image_pixels="
                                  f"{cfg.max_image_pixels} pixels")
                return None
        try:
            rgb = self._decode(msg)
        except image_codec.ImageDecodeError as exc:
            self._reject(cam, str(exc))
            return None
        h, w = rgb.shape[:2]
        if cfg.max_image_pixels and h * w > cfg.max_image_pixels:
            self._reject(cam, f"image {w}x{h} has more than max_image_pixels={cfg.max_image_pixels} pixels")
            return None
        return rgb

    def _process(self, batch: list) -> None:
        """Decode, segment (together where the backend takes a batch) and publish ``batch``, a list
        of (camera, message)."""
        cfg = self._cfg
        ready = []
        for cam, msg in batch:
            rgb = self._decoded(cam, msg, cfg)
            if rgb is not None:
                want_conf = cfg.publish_confidence and cam.pubs["confidence"].get_subscription_count() > 0
                ready.append((cam, msg, rgb, want_conf))
        if not ready:
            return
        t0 = time.perf_counter()
        try:
            if len(ready) == 1:
                results = [self.segmenter(ready[0][2], want_confidence=ready[0][3])]
            else:
                results = self.segmenter.segment_batch([r[2] for r in ready],
                                                       want_confidence=any(r[3] for r in ready))
        except Exception as exc:  # noqa: BLE001
            for cam, _, rgb, _ in ready:
                h, w = rgb.shape[:2]
                self._failed(cam, f"inference failed on a {w}x{h} frame"
                                  f"{f' (batch of {len(ready)})' if len(ready) > 1 else ''}: "
                                  f"{type(exc).__name__}: {exc}")
            return
        # a frame's inference latency is the time of the call it went through (a batch's whole time)
        total_ms = (time.perf_counter() - t0) * 1000.0
        for (cam, msg, rgb, want_conf), result in zip(ready, results):
            batched = result.timings.get("batch", 1) > 1
            ms = total_ms if batched or len(ready) == 1 else sum(
                result.timings.get(k, 0.0) for k in ("preprocess", "inference", "postprocess")) * 1000.0
            self._publish_outputs(cam, msg.header, rgb, result, want_conf, ms, batched, cfg)

    def _publish_outputs(self, cam, header, rgb, result, want_conf: bool, inference_ms: float,
                         batched: bool, cfg: NodeConfig) -> None:
        h, w = rgb.shape[:2]
        labels = result.labels
        self._publish(cam.pubs["labels"], labels, "mono8", header)
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        e2e_ms = ((self.get_clock().now().nanoseconds - stamp_ns) / 1e6) if stamp_ns else None
        stale = e2e_ms is not None and abs(e2e_ms) > STALE_STAMP_S * 1000.0

        want_color = cfg.publish_color and cam.pubs["color"].get_subscription_count() > 0
        want_overlay = cfg.publish_overlay and cam.pubs["overlay"].get_subscription_count() > 0
        counts = {"processed": 1, "batched": int(batched)}
        self._publish_extras(cam, labels, header, (w, h), counts)
        if want_color or want_overlay:
            color = self._colorizer.colorize(labels, out=self._buffer(cam, "color", (h, w, 3)))
            counts["color_computed"] = 1
            if want_color:
                self._publish(cam.pubs["color"], color, "rgb8", header)
                counts["color_published"] = 1
            if want_overlay:
                # no labels= mask: the segmenter's argmax never outputs 255 (unlabeled), so the
                # per-pixel ignore test would be pure overhead (640x480: 2.0 ms with it, 0.14 ms
                # without, measured on 2 busy cores)
                blend = visualize.overlay(rgb, color, cfg.overlay_alpha,
                                          out=self._buffer(cam, "overlay", (h, w, 3)))
                self._publish(cam.pubs["overlay"], blend, "rgb8", header)
                counts["overlay_published"] = 1
        if want_conf and result.confidence is not None:
            conf = visualize.confidence_to_image(result.confidence)
            self._publish(cam.pubs["confidence"], conf, "32FC1", header)
            counts["confidence_published"] = 1
        stats = cam.stats
        with stats.lock:
            for k, v in counts.items():
                setattr(stats, k, getattr(stats, k) + v)
            stats.inference_ms.append(inference_ms)
            if stale:
                stats.stale_stamps += 1
            elif e2e_ms is not None:
                stats.e2e_ms.append(e2e_ms)

    def callback_failed(self, exc: BaseException) -> None:
        """Count and log (throttled) an exception that escaped a callback of the executor, e.g.
        rclpy's own parameter service on a malformed request; :func:`main` then goes on spinning.
        Node-wide: every camera's diagnostics show it."""
        where = ""
        frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
        if frames:
            last = frames[-1]
            where = f" (in {last.name}, {Path(last.filename).name}:{last.lineno})"
        reason = f"{type(exc).__name__}: {exc}{where}"
        with self._node_stats.lock:
            self._node_stats.callback_errors += 1
            self._node_stats.last_callback_error = reason
        self.get_logger().error(f"a callback failed and was skipped, the node goes on: {reason}",
                                throttle_duration_sec=2.0)

    # ---- introspection and diagnostics --------------------------------------------------------
    @property
    def config(self) -> NodeConfig:
        return self._cfg

    @property
    def cameras(self) -> list[str]:
        """The camera keys ("" for the single camera), in the order of the ``cameras`` parameter."""
        return [p.key for p in self._plan]

    def _snapshot(self, cam) -> dict:
        snap = cam.stats.snapshot() if cam is not None else _Stats().snapshot()
        with self._node_stats.lock:
            snap["callback_errors"] = self._node_stats.callback_errors
            snap["last_callback_error"] = self._node_stats.last_callback_error
        return snap

    def camera_stats(self, key: str = "") -> dict:
        """One camera's counters (see :attr:`stats`); ``key`` is its namespace ("" for the single
        camera).  KeyError for an unknown key."""
        for cam in self._cameras:
            if cam.key == key:
                return self._snapshot(cam)
        raise KeyError(f"no camera {key!r}; the cameras are {self.cameras}")

    @property
    def stats(self) -> dict:
        """A snapshot of the counters: received, processed, dropped, rejected, inference_errors,
        batched, color_computed, color/overlay/confidence_published, stale_stamps, callback_errors,
        latency windows and last reasons.  With several cameras the counters and windows are
        summed over them (:meth:`camera_stats` gives one camera's)."""
        snaps = [self._snapshot(c) for c in self._cameras] or [self._snapshot(None)]
        if len(snaps) == 1:
            return snaps[0]
        total = dict(snaps[0])
        for s in snaps[1:]:
            for k in _Stats.COUNTERS:
                if k != "callback_errors":
                    total[k] += s[k]
            total["inference_ms"] = total["inference_ms"] + s["inference_ms"]
            total["e2e_ms"] = total["e2e_ms"] + s["e2e_ms"]
            for k in ("last_rejection", "last_error"):
                total[k] = total[k] or s[k]
        return total

    def diagnostic_status(self, camera: str | None = None):
        """The current ``DiagnosticStatus`` of a camera (the first by default; rates over the time
        since that camera's previous status)."""
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        cam = self._cameras[0] if camera is None else next(
            (c for c in self._cameras if c.key == camera), None)
        if cam is None:
            raise KeyError(f"no camera {camera!r}; the cameras are {self.cameras}")
        snap = self._snapshot(cam)
        now = time.monotonic()
        trailer = [
            ("lifecycle state", self.lifecycle_state),
            ("backend", self.segmenter.description),
            ("precision", f"{self.segmenter.precision} ({self.segmenter.precision_note})"),
            ("tensorrt engine", self.segmenter.engine_note or "not used"),
            ("device", self.segmenter.device),
            ("network input", self._input_note()),
            ("model", self.model_path),
            ("input topic", cam.input_topic),
        ]
        if cam.key:
            trailer += [("camera", cam.key), ("cameras in this node", str(len(self._cameras))),
                        ("batched inference", "yes" if self.segmenter.batchable else
                         "no (this backend / model file takes no batch)")]
        level, message, values, cam.diag_last = summarize(
            snap, cam.diag_last, now, input_topic=cam.input_topic, trailer=trailer)
        st = DiagnosticStatus()
        ns = self.get_namespace().strip("/")
        st.name = f"{ns + '/' if ns else ''}{self.get_name()}: segmentation" + (
            f" {cam.key}" if cam.key else "")
        st.hardware_id = self.segmenter.device
        st.level = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN,
                    "ERROR": DiagnosticStatus.ERROR}[level]
        st.message = message
        st.values = [KeyValue(key=k, value=v) for k, v in values]
        return st

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [self.diagnostic_status(c.key) for c in self._cameras]
        self._pub_diag.publish(arr)


# ------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------

#: seconds ``main`` keeps spinning after a lifecycle shutdown, so the change_state reply is delivered
FINALIZED_LINGER_S = 0.5


def main(argv=None) -> int:
    """``seg_node [--ros-args ...]``: run the node until Ctrl-C / SIGTERM; 0 on a clean stop,
    1 when the node cannot start (the reason is logged), 2 on bad command-line arguments.

    ``seg_node -h`` / ``--help`` prints the topics, the parameter table and examples and returns
    0 before any ROS context exists.  ``argv`` is rclpy's (program name first, default
    ``sys.argv``); everything else on it goes to ``rclpy.init`` unchanged.

    An exception that escapes a callback while spinning (the node's own callbacks catch theirs;
    this is for rclpy's, such as the parameter services on a malformed request) is logged with
    its reason, counted as a callback error in the diagnostics, and the node goes on."""
    from . import node_help

    if node_help.wants_help(list(sys.argv if argv is None else argv)[1:]):
        try:
            sys.stdout.write(node_help.format_help(PARAMETERS))
            sys.stdout.flush()
        except BrokenPipeError:       # seg_node --help | head
            sys.stdout = None
        return 0
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    old_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:     # not the main thread: the caller handles signals
            pass
    try:
        try:
            rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
        except Exception as exc:  # noqa: BLE001 - bad --ros-args and the like
            print(f"seg_node: cannot initialise ROS: {exc}", file=sys.stderr, flush=True)
            return 2
        node = None
        try:
            try:
                node = SegNode()
            except StartupError:
                return 1          # already logged by the node
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set() and rclpy.ok() and node.lifecycle_state != "finalized":
                try:
                    executor.spin_once(timeout_sec=0.1)
                except ExternalShutdownException:
                    break
                except Exception as exc:  # noqa: BLE001 - e.g. rclpy's parameter service on a
                    # malformed request: one bad message from any client must not stop the node.
                    # Ctrl-C / SIGTERM (the stop event, KeyboardInterrupt) still end the loop.
                    node.callback_failed(exc)
                    time.sleep(0.01)
            if node.lifecycle_state == "finalized" and not stop.is_set():
                # A lifecycle shutdown came through change_state: the reply is sent, but a reliable
                # DDS writer destroyed at once can take it with it (the caller, on a loaded CPU,
                # then waits in vain).  Keep the node a moment so the reply is delivered.
                linger = time.monotonic() + FINALIZED_LINGER_S
                while time.monotonic() < linger and rclpy.ok():
                    try:
                        executor.spin_once(timeout_sec=0.05)
                    except Exception:  # noqa: BLE001 - best effort on the way out
                        break
            executor.remove_node(node)
            executor.shutdown(timeout_sec=1.0)
            return 0
        except KeyboardInterrupt:
            return 0
        finally:
            if node is not None:
                node.stop()
                node.get_logger().info("shutting down")
                node.destroy_node()
            rclpy.try_shutdown()
    finally:
        for sig, old in old_handlers.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass


if __name__ == "__main__":
    sys.exit(main())
