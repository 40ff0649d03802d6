"""clipseg-bag-eval: make-bag, offline evaluation, and clear errors for bad input.

Bags are written here (real CamVid val frames resized to 96x72 via make-bag, plus synthetic bags
written with rosbags directly); the model is a tiny MobileNetV2 segmenter with randomised batch-norm
affine parameters so that its predictions vary across the image.  Offline metrics must equal a
direct computation (Segmenter + ConfusionMatrix on the same frames).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags")

from clipseg_ros.bag import cli  # noqa: E402
from clipseg_ros.bag.reader import open_bag, typestore  # noqa: E402

W, H = 96, 72
N_CAMVID = 5
CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist")
VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# helpers shared with test_bag_live.py
# --------------------------------------------------------------------------------------------

def tiny_model(tmp_path_factory) -> Path:
    """A small random 11-class model file (exported once per test session)."""
    path = tmp_path_factory.getbasetemp() / "bag_eval_model" / "tiny.clipseg"
    if path.exists():
        return path
    import torch

    from clipseg_ros.model_file import save_model_file
    from clipseg_ros.networks import create_model

    torch.manual_seed(0)
    net = create_model("mobilenetv2", len(CAMVID_CLASSES), detail_head=False, aux_heads=False).eval()
    with torch.no_grad():   # varied predictions instead of one class everywhere
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.5)
                m.bias.normal_(0.0, 0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model_file(path, net, list(CAMVID_CLASSES), input_size=[64, 96])
    return path


def camvid_bags(tmp_path_factory, camvid_root) -> dict:
    """CamVid val frames at 96x72: raw/mcap and JPEG/sqlite3 (written once per session)."""
    base = tmp_path_factory.getbasetemp() / "bag_eval_bags"
    bags = {"raw": base / "camvid_raw", "jpeg": base / "camvid_jpeg"}
    if not bags["raw"].exists():
        base.mkdir(parents=True, exist_ok=True)
        common = [str(camvid_root), "--limit", str(N_CAMVID), "--resize", f"{W}x{H}", "--no-progress",
                  "--start-time", "1700000000"]
        assert cli.main(["make-bag", *common[:1], str(bags["raw"]), *common[1:]]) == 0
        assert cli.main(["make-bag", *common[:1], str(bags["jpeg"]), *common[1:], "--compressed",
                         "--storage", "sqlite3"]) == 0
    return bags


def camvid_frames(camvid_root, n=N_CAMVID):
    """The frames make-bag writes, computed independently: (rgb, labels with 11 -> 255)."""
    out = []
    for line in (camvid_root / "val.txt").read_text().split("\n")[:n]:
        img_rel, lab_rel = line.split()
        rgb = cv2.cvtColor(cv2.imread(str(camvid_root / "val" / Path(img_rel).name)), cv2.COLOR_BGR2RGB)
        lab = cv2.imread(str(camvid_root / "valannot" / Path(lab_rel).name), cv2.IMREAD_UNCHANGED)
        rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA)
        lab = cv2.resize(lab, (W, H), interpolation=cv2.INTER_NEAREST)
        lab[lab == 11] = 255
        out.append((rgb, lab))
    return out


def jpeg_roundtrip(rgb, quality=90):
    from clipseg_ros.image_codec import encode_compressed

    _, payload = encode_compressed(rgb, "jpeg", quality)
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def direct_eval(model, frames, threads=1, input_size=None):
    """Segmenter + ConfusionMatrix straight on (rgb, gt) pairs: (labels list, ConfusionMatrix)."""
    from clipseg_ros.metrics import ConfusionMatrix
    from clipseg_ros.segmenter import Segmenter

    seg = Segmenter(model, device="cpu", backend="onnxruntime", threads=threads, input_size=input_size)
    cm = ConfusionMatrix(len(seg.class_names))
    labels = []
    for rgb, gt in frames:
        pred = seg(rgb).labels
        labels.append(pred)
        if gt is not None:
            cm.update(pred, gt)
    return labels, cm


def read_topic(bag, topic):
    """{header stamp ns: decoded array} of a topic (labels as HxW, images as RGB)."""
    from clipseg_ros.image_codec import image_to_array

    ts = typestore()
    from rosbags.rosbag2 import Reader

    out = {}
    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        assert conns, f"{topic} not in {bag}: {[c.topic for c in r.connections]}"
        for c, _t, raw in r.messages(connections=conns):
            msg = ts.deserialize_cdr(raw, c.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            out[stamp] = np.array(image_to_array(msg), copy=True)
    return out


def write_bag(path, *, images=(), labels=(), compressed=False, storage="mcap", image_topic=None,
              label_topic="/camera/labels", extra=(), label_first=False, label_encoding=None):
    """A bag written straight with rosbags: images/labels are lists of (stamp_ns, array).

    ``extra``: (topic, msgtype, [messages]) triples; ``label_first`` records each label before
    its image; ``images=None`` writes no image topic at all.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from clipseg_ros.bag.writer import compressed_msg, image_msg

    ts = typestore()
    image_topic = image_topic or ("/camera/image_raw/compressed" if compressed else "/camera/image_raw")
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        ic = None if images is None else w.add_connection(
            image_topic, "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image",
            typestore=ts)
        lc = w.add_connection(label_topic, "sensor_msgs/msg/Image", typestore=ts) if labels else None
        records = []
        for stamp, rgb in images or ():
            msg = (compressed_msg(ts, rgb, stamp, "cam") if compressed
                   else image_msg(ts, rgb, stamp, "cam", "rgb8"))
            records.append((stamp, 1, ic, ts.serialize_cdr(msg, msg.__msgtype__)))
        for stamp, lab in labels:
            enc = label_encoding or ("mono8" if lab.dtype == np.uint8 else "mono16")
            msg = image_msg(ts, lab, stamp, "cam", enc)
            records.append((stamp, 0 if label_first else 2, lc, ts.serialize_cdr(msg, msg.__msgtype__)))
        for topic, msgtype, msgs in extra:
            c = w.add_connection(topic, msgtype, typestore=ts)
            for k, m in enumerate(msgs):
                records.append((1_700_000_000 * 10**9 + k, 3, c, ts.serialize_cdr(m, msgtype)))
        for stamp, _order, conn, data in sorted(records, key=lambda r: (r[0], r[1])):
            w.write(conn, stamp, data)
    return path


def synthetic_frames(n, h=H, w=W, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        rgb = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 0)
        lab = rng.integers(0, 11, (h, w)).astype(np.uint8)
        frames.append((1_700_000_000 * 10**9 + i * 100_000_000, rgb, lab))
    return frames


def run_cli(args, capsys):
    """main() in-process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("clipseg-bag-eval: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert str(n) in lines[0], (n, err)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def bags(tmp_path_factory, camvid_root):
    return camvid_bags(tmp_path_factory, camvid_root)


@pytest.fixture(scope="module")
def expected(model, camvid_root):
    frames = camvid_frames(camvid_root)
    labels, cm = direct_eval(model, frames)
    jframes = [(jpeg_roundtrip(rgb), gt) for rgb, gt in frames]
    jlabels, jcm = direct_eval(model, jframes)
    return {"raw": (frames, labels, cm), "jpeg": (jframes, jlabels, jcm)}


# --------------------------------------------------------------------------------------------
# make-bag
# --------------------------------------------------------------------------------------------

def test_make_bag_camvid_layout(bags, camvid_root):
    frames = camvid_frames(camvid_root)
    with open_bag(bags["raw"]) as b:
        assert b.storage == "mcap"
        assert b.topics == {"/camera/image_raw": ("sensor_msgs/msg/Image", N_CAMVID),
                            "/camera/labels": ("sensor_msgs/msg/Image", N_CAMVID)}
        b.select_topics()
        got = list(b.frames())
    assert [f.stamp_ns for f in got] == [1_700_000_000 * 10**9 + i * 10**8 for i in range(N_CAMVID)]
    assert [f.bag_time_ns for f in got] == [f.stamp_ns for f in got]
    for f, (rgb, lab) in zip(got, frames):
        assert f.msg.encoding == "rgb8"
        np.testing.assert_array_equal(f.rgb, rgb)
        np.testing.assert_array_equal(f.gt, lab)      # void 11 written as 255
    with open_bag(bags["jpeg"]) as b:
        assert b.storage == "sqlite3"
        assert b.topics["/camera/image_raw/compressed"] == ("sensor_msgs/msg/CompressedImage", N_CAMVID)
        b.select_topics()
        got = list(b.frames())
    for f, (rgb, lab) in zip(got, frames):
        assert "jpeg" in f.msg.format
        np.testing.assert_array_equal(f.rgb, jpeg_roundtrip(rgb))
        np.testing.assert_array_equal(f.gt, lab)


def test_make_bag_records_its_source_split_without_local_paths(bags, camvid_root):
    """The bag says which split its frames come from (the trained-on check below reads it), and no
    directory of the machine that wrote it."""
    with open_bag(bags["raw"]) as b:
        source = b.info()["source"]
    assert source == f"camvid:val {camvid_root.name}"
    assert str(camvid_root.resolve().parent) not in source
    with open_bag(REPO / "data/sample_bag/camvid_val_sample") as b:
        assert b.info()["source"].startswith("camvid:val ")


def test_training_overlap_warns_when_the_model_trained_on_the_bags_split():
    from clipseg_ros.bag.report import training_overlap

    bag = {"source": "camvid:val camvid"}
    trained_on_val = {"provenance": {"dataset": "camvid", "train_split": "train+val"}}
    note = training_overlap(trained_on_val, bag)
    assert note and "camvid train+val" in note and "camvid val" in note and "not an estimate" in note
    assert training_overlap({"provenance": {"dataset": "camvid", "train_split": "train"}}, bag) is None
    assert training_overlap({"provenance": {"dataset": "cityscapes", "train_split": "train+val"}}, bag) is None
    assert training_overlap(trained_on_val, {"source": None}) is None          # a robot's own bag
    assert training_overlap(trained_on_val, {"source": "folders my_images"}) is None
    assert training_overlap({"provenance": None}, bag) is None                   # no provenance


def test_offline_report_carries_the_trained_on_note(bags, tmp_path, capsys):
    """A real offline run of a model whose provenance says camvid train+val on a camvid:val bag:
    results.json and the printed table say its mIoU is not an estimate."""
    import torch

    from clipseg_ros.model_file import save_model_file
    from clipseg_ros.networks import create_model

    torch.manual_seed(0)
    net = create_model("mobilenetv2", len(CAMVID_CLASSES), detail_head=False, aux_heads=False).eval()
    path = tmp_path / "trainval.clipseg"
    save_model_file(path, net, list(CAMVID_CLASSES), input_size=[64, 96],
                    provenance={"dataset": "camvid", "train_split": "train+val"})
    out = tmp_path / "out"
    code, stdout, err = run_cli(["offline", "--bag", bags["raw"], "--model", path, "--out", out,
                                 "--device", "cpu", "--threads", "1", "--no-progress"], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert "not an estimate" in res["trained_on_these_frames"]
    assert "not an estimate" in stdout


def test_make_bag_zstd_message_compression_reads_back(tmp_path, capsys, camvid_root):
    """--compression zstd (as the shipped sample bag uses): same frames, far fewer bytes."""
    frames = camvid_frames(camvid_root, n=3)
    sizes = {}
    for comp in ("none", "zstd"):
        out = tmp_path / comp
        code, _, err = run_cli(["make-bag", camvid_root, out, "--limit", "3", "--resize", f"{W}x{H}",
                                "--no-progress", "--compression", comp], capsys)
        assert code == 0, err
        sizes[comp] = sum(f.stat().st_size for f in out.iterdir())
        with open_bag(out) as b:
            b.select_topics()
            got = list(b.frames())
        assert len(got) == 3
        for f, (rgb, lab) in zip(got, frames):
            np.testing.assert_array_equal(f.rgb, rgb)
            np.testing.assert_array_equal(f.gt, lab)
    assert sizes["zstd"] < 0.8 * sizes["none"], sizes
    from clipseg_ros.bag.reader import BagError
    from clipseg_ros.bag.writer import make_bag

    with pytest.raises(BagError, match="compression 'bz2' is not one of"):
        make_bag(camvid_root, tmp_path / "bad", compression="bz2", progress=False)
    assert not (tmp_path / "bad").exists()


def test_make_bag_folder_pairs_every_limit(tmp_path, capsys):
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    frames = synthetic_frames(7, h=30, w=40)
    for i, (_, rgb, lab) in enumerate(frames):
        cv2.imwrite(str(imgs / f"f{i:02d}.jpg" if i == 0 else imgs / f"f{i:02d}.png"), rgb[:, :, ::-1])
        if i != 3:    # f03 has no label: not paired
            cv2.imwrite(str(labs / f"f{i:02d}.png"), (lab.astype(np.uint16) * 300))  # 16-bit ids
    out = tmp_path / "pairs"
    code, stdout, err = run_cli(["make-bag", imgs, out, "--labels", labs, "--every", "2", "--limit", "2",
                                 "--rate-hz", "4", "--storage", "sqlite3", "--no-progress",
                                 "--label-topic", "/gt", "--image-topic", "/cam"], capsys)
    assert code == 0, err
    assert "wrote 2 frames" in stdout
    with open_bag(out) as b:
        assert b.topics == {"/cam": ("sensor_msgs/msg/Image", 2), "/gt": ("sensor_msgs/msg/Image", 2)}
        b.select_topics("/cam", "/gt")
        got = list(b.frames())
    # pairs f00 f01 f02 f04 f05 f06 -> every 2nd: f00 f02 -> limit 2
    assert got[1].stamp_ns - got[0].stamp_ns == 250_000_000
    assert got[0].msg.encoding == "rgb8"
    lab = read_topic(out, "/gt")[got[1].stamp_ns]
    assert lab.dtype == np.uint16
    np.testing.assert_array_equal(lab, frames[2][2].astype(np.uint16) * 300)
    np.testing.assert_array_equal(got[1].rgb, frames[2][1])


def test_make_bag_errors(tmp_path, capsys, bags):
    code, _, err = run_cli(["make-bag", tmp_path / "nope", tmp_path / "o"], capsys)
    assert_clean_error(code, err, "nope", "does not exist")
    code, _, err = run_cli(["make-bag", tmp_path, bags["raw"]], capsys)
    assert_clean_error(code, err)
    imgs, labs = tmp_path / "i", tmp_path / "l"
    imgs.mkdir()
    labs.mkdir()
    cv2.imwrite(str(imgs / "a.png"), np.zeros((10, 12, 3), np.uint8))
    cv2.imwrite(str(labs / "a.png"), np.zeros((11, 12), np.uint8))
    code, _, err = run_cli(["make-bag", imgs, tmp_path / "o", "--labels", labs, "--no-progress"], capsys)
    assert_clean_error(code, err, "a.png", "12x11")
    assert not (tmp_path / "o").exists()      # no half-written bag left behind
    code, _, err = run_cli(["make-bag", imgs, tmp_path / "o", "--resize", "12by4"], capsys)
    assert_clean_error(code, err, "12by4")


# --------------------------------------------------------------------------------------------
# offline
# --------------------------------------------------------------------------------------------

def _check_metrics(res, cm, class_names=CAMVID_CLASSES):
    want = cm.to_json_dict(list(class_names))
    assert res["metrics"] == json.loads(json.dumps(want))


@pytest.mark.parametrize("kind", ["raw", "jpeg"])
def test_offline_equals_direct_computation(kind, model, bags, expected, tmp_path, capsys):
    frames, labels, cm = expected[kind]
    out = tmp_path / "res"
    obag = tmp_path / "outbag"
    code, stdout, err = run_cli(["offline", "--bag", bags[kind], "--model", model, "--out", out,
                                 "--device", "cpu", "--backend", "onnxruntime", "--threads", "1",
                                 "--output-bag", obag, "--no-progress"], capsys)
    assert code == 0, err
    assert "mIoU" in stdout
    res = json.loads((out / "results.json").read_text())
    assert res["mode"] == "offline"
    assert res["frames"]["processed"] == N_CAMVID and res["frames"]["with_gt"] == N_CAMVID
    _check_metrics(res, cm)
    assert res["metrics"]["miou"] == pytest.approx(cm.compute()["miou"])
    lat = res["latency_ms"]
    assert lat["count"] == N_CAMVID
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert set(res["latency_breakdown_ms"]) == {"decode", "preprocess", "inference", "postprocess"}
    # exact configuration and provenance
    assert res["config"]["args"]["threads"] == 1 and res["config"]["argv"][1] == "offline"
    assert res["model"]["sha256"] and res["model"]["backend"] == "onnxruntime"
    assert res["machine"]["cpu_model"] and "numpy" in res["machine"]["versions"]
    assert res["bag"]["image_topic"].startswith("/camera/image_raw")
    for name in ("results.json", "results.md", "per_class_iou.png", "confusion.png", "latency_hist.png",
                 "latency_timeline.png", "contact_sheet.png"):
        assert (out / name).stat().st_size > 0, name
    assert "| Sky |" in (out / "results.md").read_text() or "Sky" in (out / "results.md").read_text()
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > sheet.shape[1]   # 5 rows of 3 tiles
    # output bag: input copied, labels equal the direct computation, color and overlay present
    with open_bag(obag) as b:
        topics = b.topics
    assert {t: n for t, (_, n) in topics.items()} == {
        res["bag"]["image_topic"]: N_CAMVID, "/seg_node/labels": N_CAMVID, "/seg_node/color": N_CAMVID,
        "/seg_node/overlay": N_CAMVID}
    got = read_topic(obag, "/seg_node/labels")
    for stamp, want in zip(sorted(got), labels):
        np.testing.assert_array_equal(got[stamp], want)


def test_offline_input_size_resizes_what_the_network_sees(model, bags, camvid_root, expected, tmp_path, capsys):
    """--input-size 64x48: the metrics are those of the Segmenter at a (48, 64) input, not at the
    file's own size; labels still come at the frames' size; results.json records the size seen."""
    frames = camvid_frames(camvid_root)
    labels, cm = direct_eval(model, frames, input_size=(48, 64))
    assert cm.compute()["miou"] != expected["raw"][2].compute()["miou"], "the sizes must segment differently"
    out, obag = tmp_path / "res", tmp_path / "outbag"
    code, _, err = run_cli(["offline", bags["raw"], "--model", model, "--out", out, "--device", "cpu",
                            "--backend", "onnxruntime", "--threads", "1", "--input-size", "64x48",
                            "--output-bag", obag, "--no-progress", "--quiet"], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    _check_metrics(res, cm)
    assert res["model"]["network_input_size"] == [48, 64]
    assert res["config"]["args"]["input_size"] == [48, 64]
    assert "| network input (W x H) | 64x48 |" in (out / "results.md").read_text()
    got = read_topic(obag, "/seg_node/labels")
    for stamp, want in zip(sorted(got), labels):
        np.testing.assert_array_equal(got[stamp], want)
    for bad, why in (("64", "WIDTHxHEIGHT"), ("16x48", "at least 32"), ("axb", "WIDTHxHEIGHT")):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["offline", "b", "--input-size", bad])
        assert why in capsys.readouterr().err
    from clipseg_ros.segmenter import Segmenter, SegmenterConfigError

    for bad, why in (((16, 64), "at least 32"), ((48,), r"has 1 values; give \[height, width\]"),
                     ((48.5, 64), "not a pair"), ("ab", "not a pair")):
        with pytest.raises(SegmenterConfigError, match=why):
            Segmenter(model, device="cpu", input_size=bad)
    # live mode hands the same size to the node as a parameter
    from clipseg_ros.processes import node_command

    cmd = node_command(model="m", topic="/t", compressed=False, device="cpu", backend="auto",
                       precision="fp32", threads=None, executable="seg_node", input_size=(300, 400))
    assert cmd[cmd.index("input_size:=[300, 400]") - 1] == "-p"


def test_offline_gt_matched_by_stamp_label_map_and_mono16(model, tmp_path, capsys):
    frames = synthetic_frames(6)
    # mono16 ground truth with bag ids 100..110 for classes 0..10 and 999 = void
    def to_bag(lab):
        g = lab.astype(np.uint16) + 100
        g[:5, :] = 999
        return g
    labels = [(s, to_bag(lab)) for k, (s, _, lab) in enumerate(frames) if k != 2]   # frame 2: no GT
    labels.append((frames[-1][0] + 12345, to_bag(frames[0][2])))                     # unmatched label
    bag = write_bag(tmp_path / "syn", images=[(s, rgb) for s, rgb, _ in frames], labels=labels,
                    label_first=True, storage="sqlite3")
    mapfile = tmp_path / "map.yaml"
    mapfile.write_text("label_map:\n" + "".join(f"  {100 + k}: {k}\n" for k in range(11)))
    out = tmp_path / "res"
    code, _, err = run_cli(["offline", bag, "--model", model, "--out", out, "--device", "cpu",
                            "--backend", "onnxruntime", "--threads", "1", "--label-map", mapfile,
                            "--label-map", "999:ignore", "--no-progress", "--quiet"], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    gts = []
    for k, (_, rgb, lab) in enumerate(frames):
        gt = lab.copy()
        gt[:5, :] = 255
        gts.append((rgb, gt if k != 2 else None))
    _, cm = direct_eval(model, gts)
    assert res["frames"]["processed"] == 6 and res["frames"]["with_gt"] == 5
    assert res["bag"]["reader_stats"]["unmatched_labels"] == 1
    _check_metrics(res, cm)
    assert res["label_map"]["999"] == 255 and res["label_map"]["105"] == 5
    # --every / --limit
    code, _, err = run_cli(["offline", bag, "--model", model, "--out", tmp_path / "r2", "--device", "cpu",
                            "--backend", "onnxruntime", "--threads", "1", "--label-map", mapfile,
                            "--label-map", "999:255", "--every", "2", "--limit", "2", "--no-progress",
                            "--quiet", "--samples", "0"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "r2" / "results.json").read_text())
    assert [p["stamp_ns"] for p in res["per_frame"]] == [frames[0][0], frames[2][0]]
    assert res["frames"]["with_gt"] == 1
    assert not (tmp_path / "r2" / "contact_sheet.png").exists()


# --------------------------------------------------------------------------------------------
# bad input: exit code 2, one line on stderr naming the problem, no traceback
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_bags(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_bags")
    ts = typestore()
    frames = synthetic_frames(2)
    images = [(s, rgb) for s, rgb, _ in frames]
    String = ts.types["std_msgs/msg/String"]
    bags = {
        "gt_size": write_bag(base / "gt_size", images=images,
                             labels=[(s, np.zeros((H // 2, W // 2), np.uint8)) for s, _, _ in frames]),
        "gt_ids": write_bag(base / "gt_ids", images=images,
                            labels=[(s, np.full((H, W), 11, np.uint8)) for s, _, _ in frames]),
        "gt_rgb": write_bag(base / "gt_rgb", images=images, labels=[(s, rgb) for s, rgb, _ in frames],
                            label_encoding="rgb8"),
        "string": write_bag(base / "string", images=images,
                            extra=[("/chatter", "std_msgs/msg/String", [String(data="hi")])]),
        "empty": write_bag(base / "empty", images=[], labels=[(frames[0][0], frames[0][2])]),
        "only_string": write_bag(base / "only_string", images=None,
                                 extra=[("/chatter", "std_msgs/msg/String", [String(data="hi")])]),
    }
    # unreadable storage: a valid metadata.yaml with a garbage storage file
    broken = base / "broken"
    broken.mkdir()
    src = bags["string"]
    meta = (src / "metadata.yaml").read_text().replace("string.mcap", "broken.mcap")
    (broken / "metadata.yaml").write_text(meta)
    (broken / "broken.mcap").write_bytes(b"\x89MCAP0\r\n" + b"garbage" * 100)
    bags["broken"] = broken
    nometa = base / "nometa"
    nometa.mkdir()
    (nometa / "x.txt").write_text("not a bag")
    bags["nometa"] = nometa
    return bags


BAD_CASES = {
    "missing": (lambda b, t: t / "does_not_exist", [], ["does_not_exist", "does not exist"]),
    "not_a_bag": (lambda b, t: b["nometa"], [], ["nometa", "metadata.yaml"]),
    "unreadable": (lambda b, t: b["broken"], [], ["broken", "cannot read"]),
    "topic_missing": (lambda b, t: b["string"], ["--image-topic", "/nope"],
                      ["/nope", "/camera/image_raw", "/chatter"]),
    "label_topic_missing": (lambda b, t: b["string"], ["--label-topic", "/gt"], ["/gt", "/chatter"]),
    "unsupported_type": (lambda b, t: b["string"], ["--image-topic", "/chatter"],
                         ["/chatter", "std_msgs/msg/String"]),
    "no_image_topic": (lambda b, t: b["only_string"], [], ["no sensor_msgs Image", "/chatter"]),
    "gt_size": (lambda b, t: b["gt_size"], [], ["/camera/labels", "48x36", "96x72"]),
    "gt_ids": (lambda b, t: b["gt_ids"], [], ["11", "--label-map"]),
    "gt_ids_after_map": (lambda b, t: b["gt_ids"], ["--label-map", "11:12"], ["12", "label map"]),
    "gt_ids_not_in_map": (lambda b, t: b["gt_ids"], ["--label-map", "3:255"],
                          ["ids 11", "not in the label map"]),
    "gt_encoding": (lambda b, t: b["gt_rgb"], [], ["rgb8", "mono8"]),
    "no_frames": (lambda b, t: b["empty"], [], ["no frames", "/camera/image_raw"]),
    "bad_map": (lambda b, t: b["gt_ids"], ["--label-map", "a:b"], ["'a'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_offline(case, bad_bags, model, tmp_path, capsys):
    bag_of, extra, needles = BAD_CASES[case]
    code, _, err = run_cli(["offline", bag_of(bad_bags, tmp_path), "--model", model, "--out", tmp_path / "r",
                            "--device", "cpu", "--backend", "onnxruntime", "--no-progress", *extra], capsys)
    assert_clean_error(code, err, *needles)


def test_bad_input_console_script(bad_bags, model, tmp_path):
    """The installed console script: exit code 2, one line, no traceback (also for live mode)."""
    exe = VENV_BIN / "clipseg-bag-eval"
    if not exe.exists():
        pytest.skip("clipseg-bag-eval console script not installed (pip install -e .)")
    for mode, bag, needles in (("offline", bad_bags["gt_size"], ["48x36"]),
                               ("live", bad_bags["only_string"], ["no sensor_msgs Image", "/chatter"]),
                               ("live", tmp_path / "missing", ["missing"])):
        p = subprocess.run([str(exe), mode, "--bag", str(bag), "--model", str(model), "--out",
                            str(tmp_path / "r"), "--no-progress"], capture_output=True, text=True,
                           timeout=60, env=os.environ.copy())
        assert_clean_error(p.returncode, p.stderr, *needles)
        assert not (tmp_path / "r" / "node.log").exists()   # no node started for bad input


def test_live_flags_keep_their_old_spellings():
    """--node-executable / --node-startup-timeout are the spellings; --node-exe / --startup-timeout
    (the old ones) still work, hidden from --help."""
    p = cli.build_parser()
    new = p.parse_args(["live", "b", "--node-executable", "/x/seg_node", "--node-startup-timeout", "7"])
    old = p.parse_args(["live", "b", "--node-exe", "/x/seg_node", "--startup-timeout", "7"])
    for a in (new, old):
        assert a.node_executable == "/x/seg_node" and a.node_startup_timeout == 7.0
    assert p.parse_args(["live", "b"]).node_startup_timeout == 120.0
    live_help = p._subparsers._group_actions[0].choices["live"].format_help()
    assert "--node-executable" in live_help and "--node-exe " not in live_help


def test_backends_from_explicit_inputs(model):
    """The backends take a network / ONNX bytes and mean/std, not a model file, and give the
    Segmenter's labels."""
    from clipseg_ros.model_file import ModelFile
    from clipseg_ros.segmenter import OnnxBackend, Segmenter, TorchBackend

    mf = ModelFile(model)
    h, w = mf.meta.input_size
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    want = Segmenter(model, device="cpu", backend="onnxruntime", threads=1)(rgb).labels
    onnx_labels, _ = OnnxBackend(mf.onnx_bytes, "cpu", "fp32", 1, source=mf.path)(rgb, False)
    np.testing.assert_array_equal(onnx_labels, want)
    torch_labels, _ = TorchBackend(mf.build_network(), mf.meta.mean, mf.meta.std, "cpu", "fp32", 1)(rgb, False)
    assert torch_labels.shape == want.shape and (torch_labels == want).mean() > 0.99
