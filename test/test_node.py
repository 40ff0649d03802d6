"""seg_node in-process: real rclpy, real messages, real DDS (shared memory, see conftest.py).

One ``RosHarness`` per module (a fresh Context, a tester node, a MultiThreadedExecutor spinning in
a thread); every test starts its own ``SegNode`` in a namespace of its own (``/tN``), so the
topics of different tests never mix.  The models are tiny networks whose every pixel is a known
class (``ros_helpers.known_model``), so labels, colors and overlays can be checked exactly.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from clipseg_ros import image_codec  # noqa: E402
from clipseg_ros.node import SegNode, StartupError  # noqa: E402
from clipseg_ros.node_params import PARAMETER_NAMES, RUNTIME_PARAMETERS  # noqa: E402
from ros_helpers import (  # noqa: E402
    RosHarness, compressed_msg, confidence_of, expected_rgb, image_msg, inconsistent_model, known_model,
    make_header, pattern_image, png_bomb, raw_image_msg, stamp_ns, truncated_copy, wait_for,
)

pytestmark = pytest.mark.ros

LABEL, K = 2, 4
TIMEOUT = 15.0
_ids = itertools.count()


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness("test_node")
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def model():
    return known_model(LABEL, K, (64, 96))


class Rig:
    """One SegNode in namespace ``/tN`` plus the tester's publisher and collectors."""

    def __init__(self, ros: RosHarness, model: str, compressed: bool = False, outputs=("labels",),
                 **params):
        self.ros = ros
        self.ns = f"/t{next(_ids)}"
        params = {"model": model, "device": "cpu", "threads": 1, "input_compressed": compressed,
                  **params}
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        self.node = ros.add(SegNode(context=ros.context, namespace=self.ns, parameter_overrides=overrides))
        self.out = f"{self.ns}/seg_node"
        in_topic = f"{self.ns}/image" + ("/compressed" if compressed else "")
        self.pub = ros.publisher(CompressedImage if compressed else Image, in_topic, reliable=True, depth=30)
        self.col = {}
        for name in outputs:
            self.subscribe(name)
        ros.wait_matched(self.pub)
        wait_for(lambda: self.node._sub.get_publisher_count() >= 1, TIMEOUT,
                 what="the node's subscription to match our publisher")

    def subscribe(self, name: str):
        col = self.col[name] = self.ros.collect(Image, f"{self.out}/{name}", reliable=True)
        pub = getattr(self.node, f"_pub_{name}")   # the node decides on its publishers' match counts
        # matching is asynchronous in both directions: a reader that has not matched the writer
        # yet would miss the first message
        wait_for(lambda: pub.get_subscription_count() >= 1 and col.sub.get_publisher_count() >= 1,
                 TIMEOUT, what=f"our subscription on {name} and the node's publisher to match")
        return col

    def unsubscribe(self, name: str) -> None:
        self.ros.unsubscribe(self.col.pop(name))
        pub = getattr(self.node, f"_pub_{name}")
        wait_for(lambda: pub.get_subscription_count() == 0, TIMEOUT,
                 what=f"the node to see no subscription on {name}")

    def wait_stats(self, **want) -> dict:
        """Wait until the node's counters equal ``want`` (they are updated just after publishing)."""
        def ok():
            s = self.node.stats
            return s if all(s[k] == v for k, v in want.items()) else None
        try:
            return wait_for(ok, TIMEOUT, what=f"stats {want}")
        except AssertionError:
            raise AssertionError(f"stats {self.node.stats} never matched {want}") from None

    def send(self, msg, wait: tuple = ("labels",)) -> dict:
        """Publish ``msg`` and wait for the outputs named in ``wait`` with its stamp."""
        self.pub.publish(msg)
        return {name: self.col[name].wait_stamp(msg.header.stamp, TIMEOUT) for name in wait}

    def send_bad(self, msg) -> str:
        """Publish an invalid frame; wait until the node counts it as rejected; return the reason."""
        before = self.node.stats["rejected"]
        self.pub.publish(msg)
        wait_for(lambda: self.node.stats["rejected"] > before, TIMEOUT, what="the frame to be rejected")
        return self.node.stats["last_rejection"]

    def close(self):
        self.ros.remove(self.node)
        for col in self.col.values():
            self.ros.unsubscribe(col)
        self.ros.node.destroy_publisher(self.pub)


@pytest.fixture
def rigs(ros):
    made = []

    def make(model, **kw):
        rig = Rig(ros, model, **kw)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def as_array(msg) -> np.ndarray:
    return image_codec.image_to_array(msg)


def check_header(out, sent) -> None:
    assert stamp_ns(out.header.stamp) == stamp_ns(sent.header.stamp)
    assert out.header.frame_id == sent.header.frame_id


def expected_overlay(rgb: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    return (1.0 - alpha) * rgb.astype(np.float64) + alpha * color.astype(np.float64)


def set_remote(ros: RosHarness, node_fqn: str, **params):
    """Set parameters through the node's ``set_parameters`` service (the real ROS path)."""
    client = ros.node.create_client(SetParameters, f"{node_fqn}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=TIMEOUT)
        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                for k, v in params.items()])
        future = client.call_async(req)
        wait_for(future.done, TIMEOUT, what="set_parameters response")
        return future.result().results
    finally:
        ros.node.destroy_client(client)


# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_outputs_for_each_input_encoding(rigs, model, encoding):
    rig = rigs(model, outputs=("labels", "color", "overlay"))
    palette = rig.node.segmenter.palette
    rgb = pattern_image(48, 64, seed=1)
    sent = image_msg(rgb, encoding, make_header(f"cam_{encoding}"))
    got = rig.send(sent, wait=("labels", "color", "overlay"))

    labels = got["labels"]
    assert (labels.encoding, labels.height, labels.width) == ("mono8", 48, 64)
    assert np.all(as_array(labels) == LABEL)
    color = got["color"]
    assert (color.encoding, color.height, color.width) == ("rgb8", 48, 64)
    col = image_codec.image_to_rgb(color)
    assert np.all(col == palette[LABEL])
    ov = got["overlay"]
    assert (ov.encoding, ov.height, ov.width) == ("rgb8", 48, 64)
    want = expected_overlay(expected_rgb(rgb, encoding), col, 0.5)
    assert np.abs(image_codec.image_to_rgb(ov).astype(np.float64) - want).max() <= 1.0
    for out in got.values():
        check_header(out, sent)


def test_labels_are_exact_for_another_class_and_size(rigs):
    """A different known class, an input larger than the model size and odd dimensions."""
    rig = rigs(known_model(1, 3, (64, 96)))
    rgb = pattern_image(101, 157, seed=2)
    sent = image_msg(rgb, "rgb8")
    labels = rig.send(sent)["labels"]
    arr = as_array(labels)
    assert arr.shape == (101, 157) and arr.dtype == np.uint8
    assert np.all(arr == 1)
    assert labels.step == 157


def test_overlay_alpha_changes_at_runtime(ros, rigs, model):
    rig = rigs(model, outputs=("labels", "overlay"), overlay_alpha=0.3)
    rgb = pattern_image(48, 64, seed=3)
    color = rig.node.segmenter.palette[LABEL]
    for alpha in (0.3, 0.8, 0.0, 1.0):
        if alpha != 0.3:
            results = set_remote(ros, rig.out, overlay_alpha=alpha)
            assert results[0].successful, results[0].reason
            assert rig.node.get_parameter("overlay_alpha").value == alpha
        got = rig.send(image_msg(rgb), wait=("overlay",))["overlay"]
        want = expected_overlay(rgb, np.broadcast_to(color, rgb.shape), alpha)
        assert np.abs(image_codec.image_to_rgb(got).astype(np.float64) - want).max() <= 1.0, alpha


def test_invalid_parameter_values_are_rejected(ros, rigs, model):
    rig = rigs(model)
    node = rig.node
    res = node.set_parameters([Parameter("overlay_alpha", value=1.5)])[0]
    assert not res.successful and "overlay_alpha" in res.reason
    assert node.get_parameter("overlay_alpha").value == 0.5
    # the same through the service
    res = set_remote(ros, rig.out, overlay_alpha=-0.1)[0]
    assert not res.successful and res.reason
    # read-only parameters cannot change while running
    for name, value in (("model", "/tmp/other.clipseg"), ("device", "cuda"), ("qos_depth", 5),
                        ("input_compressed", True)):
        res = node.set_parameters([Parameter(name, value=value)])[0]
        assert not res.successful and "read-only" in res.reason.lower(), (name, res.reason)
    assert node.get_parameter("model").value == model
    # palette: K colors of 0..255
    res = node.set_parameters([Parameter("palette", value=[1, 2, 3])])[0]
    assert not res.successful and "4 classes" in res.reason
    res = node.set_parameters([Parameter("palette", value=[0, 0, 0] * 3 + [300, 0, 0])])[0]
    assert not res.successful and "0..255" in res.reason
    # an atomic update with one bad value changes nothing
    res = node.set_parameters_atomically([Parameter("publish_color", value=False),
                                          Parameter("overlay_alpha", value=2.0)])
    assert not res.successful
    assert node.config.publish_color is True
    # wrong type
    res = node.set_parameters([Parameter("overlay_alpha", value="half")])[0]
    assert not res.successful


def test_parameter_descriptors(rigs, model):
    node = rigs(model).node
    names = set(PARAMETER_NAMES)
    assert {"model", "device", "backend", "precision", "threads", "input_compressed", "overlay_alpha",
            "publish_color", "publish_overlay", "publish_confidence", "palette", "qos_reliability",
            "qos_depth", "output_qos_reliability", "diagnostics_period"} <= names
    for name in names:
        d = node.describe_parameter(name)
        assert d.description, name
        assert d.read_only == (name not in RUNTIME_PARAMETERS), name
    alpha = node.describe_parameter("overlay_alpha").floating_point_range[0]
    assert (alpha.from_value, alpha.to_value) == (0.0, 1.0)
    assert node.describe_parameter("qos_depth").integer_range[0].from_value == 1


def test_palette_override_and_switches(ros, rigs, model):
    rig = rigs(model, outputs=("labels", "color"))
    rgb = pattern_image(32, 40)
    pal = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]
    assert rig.node.set_parameters([Parameter("palette", value=pal)])[0].successful
    col = image_codec.image_to_rgb(rig.send(image_msg(rgb), wait=("color",))["color"])
    assert np.all(col == pal[3 * LABEL: 3 * LABEL + 3])
    # back to the model's palette
    assert rig.node.set_parameters([Parameter("palette", Parameter.Type.INTEGER_ARRAY, [])])[0].successful
    col = image_codec.image_to_rgb(rig.send(image_msg(rgb), wait=("color",))["color"])
    assert np.all(col == rig.node.segmenter.palette[LABEL])
    # publish_color off: labels still come, color does not
    assert set_remote(ros, rig.out, publish_color=False)[0].successful
    before = len(rig.col["color"])
    rig.send(image_msg(rgb))
    rig.send(image_msg(rgb))
    rig.wait_stats(processed=4, color_computed=2)
    assert len(rig.col["color"]) == before


def test_confidence_published_when_enabled(rigs, model):
    rig = rigs(model, outputs=("labels", "confidence"), publish_confidence=True)
    sent = image_msg(pattern_image(30, 50))
    got = rig.send(sent, wait=("labels", "confidence"))
    conf = got["confidence"]
    check_header(conf, sent)
    assert (conf.encoding, conf.height, conf.width) == ("32FC1", 30, 50)
    arr = image_codec.image_to_array(conf)
    assert arr.dtype == np.float32 and arr.shape == (30, 50)
    assert np.all((arr >= 0.0) & (arr <= 1.0))
    np.testing.assert_allclose(arr, confidence_of(LABEL, K), atol=1e-3)
    rig.wait_stats(processed=1, confidence_published=1)


def test_confidence_not_published_by_default(rigs, model):
    rig = rigs(model, outputs=("labels", "confidence"))
    rig.send(image_msg(pattern_image()))
    rig.send(image_msg(pattern_image()))
    rig.wait_stats(processed=2, confidence_published=0)
    assert len(rig.col["confidence"]) == 0


def test_color_and_overlay_skipped_without_subscribers(rigs, model):
    rig = rigs(model, outputs=("labels",))
    for _ in range(3):
        rig.send(image_msg(pattern_image()))
    rig.wait_stats(processed=3, color_computed=0, color_published=0, overlay_published=0)
    # an overlay subscriber needs the color mask but not the color topic
    rig.subscribe("overlay")
    rig.send(image_msg(pattern_image()), wait=("labels", "overlay"))
    rig.wait_stats(processed=4, color_computed=1, color_published=0, overlay_published=1)
    # gone again: back to labels only
    rig.unsubscribe("overlay")
    rig.send(image_msg(pattern_image()))
    rig.wait_stats(processed=5, color_computed=1, overlay_published=1)


def test_publish_overlay_false_skips_the_work(rigs, model):
    rig = rigs(model, outputs=("labels", "overlay"), publish_overlay=False, publish_color=False)
    rig.send(image_msg(pattern_image()))
    rig.wait_stats(processed=1, color_computed=0)
    assert len(rig.col["overlay"]) == 0


# ------------------------------------------------------------------------------------------------
# compressed input
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_input(rigs, model, fmt):
    rig = rigs(model, compressed=True, outputs=("labels", "overlay"))
    rgb = pattern_image(40, 56, seed=4)
    sent = compressed_msg(rgb, fmt, make_header(f"cam_{fmt}"))
    got = rig.send(sent, wait=("labels", "overlay"))
    labels = got["labels"]
    check_header(labels, sent)
    check_header(got["overlay"], sent)
    assert np.all(as_array(labels) == LABEL) and as_array(labels).shape == (40, 56)
    decoded = image_codec.compressed_to_rgb(sent)
    if fmt == "png":
        assert np.array_equal(decoded, rgb)
    color = np.broadcast_to(rig.node.segmenter.palette[LABEL], rgb.shape)
    want = expected_overlay(decoded, color, 0.5)
    assert np.abs(image_codec.image_to_rgb(got["overlay"]).astype(np.float64) - want).max() <= 1.0


def test_bad_compressed_input_is_rejected(rigs, model):
    rig = rigs(model, compressed=True)
    good = compressed_msg(pattern_image(), "jpeg")
    bad = CompressedImage(header=make_header(), format="jpeg")
    bad.data = b"\xff\xd8\xff\xe0 this is not a jpeg" * 10
    assert "could not be decoded" in rig.send_bad(bad)
    rig.send(compressed_msg(pattern_image(), "jpeg"))
    empty = CompressedImage(header=make_header(), format="png")
    assert "empty" in rig.send_bad(empty)
    truncated = CompressedImage(header=make_header(), format="jpeg")
    truncated.data = bytes(good.data[:40])
    rig.send_bad(truncated)
    rig.send(compressed_msg(pattern_image(), "png"))
    rig.wait_stats(rejected=3, processed=2, inference_errors=0)


def test_compressed_decompression_bomb_is_rejected_from_its_header(rigs, model):
    """A 400 KB PNG declaring 20000x20000 is refused from its IHDR, before anything is decoded;
    max_image_pixels applies to the header's size as well.  (Memory: test_node_subprocess.py.)"""
    rig = rigs(model, compressed=True)
    bomb = CompressedImage(header=make_header(), format="png")
    bomb.data = png_bomb(20000, 20000)
    t0 = time.monotonic()
    reason = rig.send_bad(bomb)
    assert "declares 20000x20000" in reason and "PNG header" in reason and "not decoded" in reason, reason
    assert time.monotonic() - t0 < 5.0
    rig.send(compressed_msg(pattern_image(), "png"))
    # max_image_pixels, from the header of a PNG and of a JPEG
    assert rig.node.set_parameters([Parameter("max_image_pixels", value=1000)])[0].successful
    for fmt in ("png", "jpeg"):
        reason = rig.send_bad(compressed_msg(pattern_image(48, 64), fmt))
        assert "64x48" in reason and "max_image_pixels=1000" in reason, reason
        assert f"{fmt.upper()} header" in reason, reason
    small = png_bomb(40, 20)     # within the limit: decoded
    msg = CompressedImage(header=make_header(), format="png")
    msg.data = small
    labels = rig.send(msg)["labels"]
    assert (labels.width, labels.height) == (40, 20)
    rig.wait_stats(rejected=3, processed=2, inference_errors=0)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

def _bad_images():
    good = image_msg(pattern_image(48, 64))
    data = bytes(good.data)
    return [
        ("xyz8 encoding", raw_image_msg(48, 64, "xyz8", 64 * 3, data), "unsupported image encoding"),
        ("array-only 32SC1", raw_image_msg(48, 16, "32SC1", 64, data[: 48 * 64]), "no RGB conversion"),
        ("step too small", raw_image_msg(48, 64, "rgb8", 100, data), "step"),
        ("truncated data", raw_image_msg(48, 64, "rgb8", 64 * 3, data[: len(data) // 2]), "truncated"),
        ("data longer than step*height", raw_image_msg(48, 64, "rgb8", 64 * 3, data + b"\0" * 10),
         "10 trailing bytes"),
        ("data one row too long", raw_image_msg(47, 64, "rgb8", 64 * 3, data), "longer than step*height"),
        ("zero width", raw_image_msg(48, 0, "rgb8", 0, b""), "zero"),
        ("zero height", raw_image_msg(0, 64, "rgb8", 64 * 3, b""), "zero"),
        ("absurd size", raw_image_msg(100000, 100000, "rgb8", 300000, b"\0" * 64), "absurd"),
        ("odd yuv422 width", raw_image_msg(4, 5, "yuv422", 10, b"\0" * 40), "even"),
    ]


def test_bad_images_are_rejected_and_the_node_keeps_working(rigs, model):
    rig = rigs(model)
    cases = _bad_images()
    for i, (what, msg, reason) in enumerate(cases):
        got = rig.send_bad(msg)
        assert reason in got, (what, got)
        # a good frame right after is processed normally
        sent = image_msg(pattern_image(24, 32, seed=i))
        assert np.all(as_array(rig.send(sent)["labels"]) == LABEL), what
    rig.wait_stats(rejected=len(cases), processed=len(cases), inference_errors=0)
    assert rig.node._worker.is_alive()


def test_max_image_pixels(rigs, model):
    rig = rigs(model, max_image_pixels=1000)
    assert "max_image_pixels" in rig.send_bad(image_msg(pattern_image(48, 64)))
    rig.send(image_msg(pattern_image(20, 30)))
    assert rig.node.set_parameters([Parameter("max_image_pixels", value=0)])[0].successful
    rig.send(image_msg(pattern_image(48, 64)))


def test_inference_failure_is_counted_and_the_node_recovers(rigs, model):
    rig = rigs(model, diagnostics_period=0.1)
    diag = rig.ros.collect(DiagnosticArray, "/diagnostics")
    real = rig.node.segmenter
    calls = {"n": 0}

    class Flaky:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, rgb, want_confidence=False):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("simulated backend failure")
            return real(rgb, want_confidence=want_confidence)

    rig.node.segmenter = Flaky()
    try:
        rig.pub.publish(image_msg(pattern_image()))
        wait_for(lambda: rig.node.stats["inference_errors"] == 1, TIMEOUT, what="the inference error")
        st = diag.wait_until(lambda m: any(s.name.startswith(rig.out.strip("/")) and s.level == DiagnosticStatus.ERROR
                                           for s in m.status), TIMEOUT, what="an ERROR status")
        status = next(s for s in st.status if s.name.startswith(rig.out.strip("/")))
        assert "simulated backend failure" in status.message
        rig.send(image_msg(pattern_image()))
        rig.wait_stats(processed=1, inference_errors=1)
    finally:
        rig.ros.unsubscribe(diag)
        rig.node.segmenter = real


# ------------------------------------------------------------------------------------------------
# never falls behind
# ------------------------------------------------------------------------------------------------

def test_burst_keeps_the_newest_frame_and_bounded_latency(rigs):
    slow = known_model(LABEL, K, (384, 512))          # ~50-100 ms per frame on one CPU thread
    rig = rigs(slow, qos_reliability="reliable", qos_depth=30)
    rgb = pattern_image(48, 64)
    rig.send(image_msg(rgb))                          # warm-up
    rig.wait_stats(processed=1)
    single_ms = float(np.median(rig.node.stats["inference_ms"]))
    rig.col["labels"].clear()
    base = rig.node.stats

    n = 30
    sent = []
    for _ in range(n):                                # back to back, much faster than the model
        msg = image_msg(rgb)
        sent.append(stamp_ns(msg.header.stamp))
        rig.pub.publish(msg)
    last = rig.col["labels"].wait_until(lambda m: stamp_ns(m.header.stamp) == sent[-1], 30.0,
                                        what="labels of the last frame sent")
    s = wait_for(lambda: (st := rig.node.stats)["received"] - base["received"] == n
                 and st["processed"] + st["dropped"] == st["received"] and st, TIMEOUT,
                 what="all frames received and accounted for")
    received = s["received"] - base["received"]
    processed = s["processed"] - base["processed"]
    dropped = s["dropped"] - base["dropped"]
    assert dropped > 0 and processed < received
    assert processed + dropped == received
    # the newest frame was processed, and it was the last thing published
    got = rig.col["labels"].wait(processed)
    assert stamp_ns(got[-1].header.stamp) == sent[-1] == stamp_ns(last.header.stamp)
    assert [stamp_ns(m.header.stamp) for m in got] == sorted(stamp_ns(m.header.stamp) for m in got)
    # latency does not pile up: each processed frame waited at most about one other frame
    latencies_ms = [(r - stamp_ns(m.header.stamp)) / 1e6
                    for m, r in zip(got, rig.col["labels"].received_ns)]
    bound = 10 * single_ms + 500.0
    assert max(latencies_ms) < bound, (latencies_ms, single_ms)


# ------------------------------------------------------------------------------------------------
# diagnostics
# ------------------------------------------------------------------------------------------------

EXPECTED_KEYS = {
    "frames received", "frames processed", "frames dropped", "frames rejected", "input rate (Hz)",
    "processed rate (Hz)", "inference latency median (ms)", "inference latency p95 (ms)",
    "end-to-end latency median (ms)", "end-to-end latency p95 (ms)", "backend", "device", "model",
    "last rejection reason", "stale stamps", "callback errors", "last callback error",
}


def _status(msg, prefix):
    return next((s for s in msg.status if s.name.startswith(prefix)), None)


def test_diagnostics(ros, rigs, model):
    diag = ros.collect(DiagnosticArray, "/diagnostics")
    try:
        rig = rigs(model, diagnostics_period=0.2)
        prefix = rig.out.strip("/") + ": "
        first = diag.wait_until(lambda m: _status(m, prefix) is not None, TIMEOUT, what="a status")
        st = _status(first, prefix)
        assert st.name == f"{rig.out.strip('/')}: segmentation"
        assert st.level == DiagnosticStatus.OK
        assert st.hardware_id == "cpu"
        rig.send(image_msg(pattern_image()))
        rig.send(image_msg(pattern_image()))
        rig.send_bad(raw_image_msg(4, 4, "rgb8", 5, b"\0" * 20))

        def counts(m):
            s = _status(m, prefix)
            if s is None:
                return None
            v = {kv.key: kv.value for kv in s.values}
            return s if int(v["frames rejected"]) >= 1 else None

        msg = diag.wait_until(counts, TIMEOUT, what="a status counting the rejection")
        st = _status(msg, prefix)
        values = {kv.key: kv.value for kv in st.values}
        assert EXPECTED_KEYS <= set(values)
        assert st.level == DiagnosticStatus.WARN and "step" in st.message
        assert values["frames received"] == "3" and values["frames processed"] == "2"
        assert values["frames rejected"] == "1" and values["frames dropped"] == "0"
        assert "step" in values["last rejection reason"]
        assert values["device"] == "cpu" and values["backend"].startswith(rig.node.segmenter.backend)
        assert rig.node.segmenter.backend in ("onnxruntime", "openvino")     # auto's CPU picks
        assert values["model"] == model
        assert float(values["inference latency median (ms)"]) > 0
        assert float(values["inference latency p95 (ms)"]) >= float(values["inference latency median (ms)"])
        assert float(values["end-to-end latency median (ms)"]) > 0
        # a quiet period afterwards is OK again
        later = diag.wait_until(lambda m: (s := _status(m, prefix)) is not None
                                and s.level == DiagnosticStatus.OK, TIMEOUT, what="an OK status",
                                start=diag.index(msg) + 1)
        assert later is not None
    finally:
        ros.unsubscribe(diag)


def test_stale_stamps_stay_out_of_the_latency_window(ros, rigs, model):
    """One frame stamped sec=1000 (a replayed bag, a camera without time sync) and one an hour in
    the future must not make the end-to-end statistics meaningless; they are counted instead."""
    from builtin_interfaces.msg import Time

    diag = ros.collect(DiagnosticArray, "/diagnostics")
    try:
        rig = rigs(model, diagnostics_period=0.2)
        prefix = rig.out.strip("/") + ": "
        rig.send(image_msg(pattern_image(), header=make_header(stamp=Time(sec=1000, nanosec=5))))
        future = time.time_ns() + 3600 * 10**9
        rig.send(image_msg(pattern_image(), header=make_header(
            stamp=Time(sec=future // 10**9, nanosec=future % 10**9))))
        for _ in range(4):
            rig.send(image_msg(pattern_image()))
        rig.wait_stats(processed=6, stale_stamps=2)
        assert len(rig.node.stats["e2e_ms"]) == 4

        def final(m):
            st = _status(m, prefix)
            return st is not None and {kv.key: kv.value for kv in st.values}["frames processed"] == "6"

        msg = diag.wait_until(final, TIMEOUT, what="a status with all 6 frames")
        values = {kv.key: kv.value for kv in _status(msg, prefix).values}
        assert values["stale stamps"] == "2"
        assert 0.0 < float(values["end-to-end latency median (ms)"]) < 5000.0, values
        assert 0.0 < float(values["end-to-end latency p95 (ms)"]) < 5000.0, values
        warned = [s for m in diag.messages if (s := _status(m, prefix)) is not None
                  and s.level == DiagnosticStatus.WARN and "stamped more than 10 s" in s.message]
        assert warned, [(_status(m, prefix) or DiagnosticStatus()).message for m in diag.messages]
    finally:
        ros.unsubscribe(diag)


# ------------------------------------------------------------------------------------------------
# start-up failures (in process; the console script is covered in test_node_subprocess.py)
# ------------------------------------------------------------------------------------------------

def _start(ros, **params):
    params = {"device": "cpu", "threads": 1, **params}
    return SegNode(context=ros.context, namespace=f"/bad{next(_ids)}",
                   parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_startup_errors_name_the_problem(ros, model, tmp_path):
    missing = tmp_path / "missing.clipseg"
    with pytest.raises(StartupError, match="missing.clipseg"):
        _start(ros, model=str(missing))
    cut = truncated_copy(model, tmp_path / "cut.clipseg")
    with pytest.raises(StartupError, match="cut.clipseg"):
        _start(ros, model=str(cut))
    with pytest.raises(StartupError, match="gpu7"):
        _start(ros, model=model, device="gpu7")
    with pytest.raises(StartupError, match="backend"):
        _start(ros, model=model, backend="tensorflow")
    with pytest.raises(StartupError, match="overlay_alpha"):
        _start(ros, model=model, overlay_alpha=3.0)
    with pytest.raises(StartupError, match="palette"):
        _start(ros, model=model, palette=[1, 2, 3])
    with pytest.raises(StartupError, match="qos_reliability"):
        _start(ros, model=model, qos_reliability="sometimes")
    with pytest.raises(StartupError, match="overlay_alpha"):
        _start(ros, model=model, overlay_alpha="half")


def test_input_size_sets_what_the_network_sees_and_labels_keep_the_frame_size(rigs):
    """input_size:=[120, 160] on the real CamVid model: the labels are the Segmenter's at that input
    (not at the file's own size), at the frame's 240x320; the diagnostics and the Segmenter say so."""
    from clipseg_ros.conventions import DEFAULT_MODEL
    from clipseg_ros.segmenter import Segmenter

    rig = rigs(str(DEFAULT_MODEL), backend="onnxruntime", precision="fp32", input_size=[120, 160])
    seg = rig.node.segmenter
    assert seg.input_size == (120, 160) and seg.input_size_source == "requested"
    rgb = pattern_image(240, 320, seed=3)
    got = as_array(rig.send(image_msg(rgb, header=make_header("cam")))["labels"])
    small = Segmenter(DEFAULT_MODEL, device="cpu", backend="onnxruntime", precision="fp32", threads=1,
                      input_size=(120, 160))(rgb).labels
    native = Segmenter(DEFAULT_MODEL, device="cpu", backend="onnxruntime", precision="fp32", threads=1)(rgb).labels
    assert got.shape == (240, 320)
    np.testing.assert_array_equal(got, small)
    assert not np.array_equal(small, native), "the test image must segment differently at the two sizes"
    values = {kv.key: kv.value for kv in rig.node.diagnostic_status().values}
    assert values["network input"] == "160x120 (width x height, from the input_size parameter)"
    assert rig.node.describe_parameter("input_size").read_only


def test_bad_input_size_is_a_startup_error_that_names_it(ros, model):
    for bad, why in (([120], "give \\[height, width\\]"), ([16, 160], "at least 32"),
                     ([120, 160, 3], "3 values")):
        with pytest.raises(StartupError, match=f"parameter input_size: .*{why}"):
            _start(ros, model=model, input_size=bad)


def test_model_whose_onnx_graph_disagrees_with_its_metadata_is_refused(ros, tmp_path):
    """meta.json: 10 classes (names, palette, arch); the network: 11, every pixel class 10.  The
    default ONNX Runtime backend must refuse it at start-up, naming the file and the mismatch."""
    bad = inconsistent_model(tmp_path / "eleven_as_ten.clipseg")
    for backend in ("onnxruntime", "auto", "torch"):
        with pytest.raises(StartupError) as info:
            _start(ros, model=str(bad), backend=backend)
        msg = str(info.value)
        assert "eleven_as_ten.clipseg" in msg, (backend, msg)
        assert "outputs 11 classes" in msg and "describes 10" in msg, (backend, msg)


def test_stop_is_prompt_and_idempotent(ros, model):
    node = ros.add(_start(ros, model=model))
    t0 = time.monotonic()
    node.stop()
    node.stop()
    assert not node._worker.is_alive()
    assert time.monotonic() - t0 < 5.0
    ros.remove(node)
