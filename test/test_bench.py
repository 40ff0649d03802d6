"""Smoke test of ``clipseg-bench``: one tiny size, the MobileNetV2 twins, the default model and LRASPP.

Checks the outputs' structure (rows, keys, ratios, Markdown, PNG), never a speed.  The ROS
publish step runs with the DDS settings of conftest.py; the seg_node memory row is skipped.
"""
import json

import pytest

from clipseg_ros import bench

pytest.importorskip("torch")
pytest.importorskip("torchvision")

ROW_KEYS = {"model", "label", "family", "variant", "backend", "device", "precision", "size", "width",
            "height", "pixels", "status", "note", "count", "median_ms", "p90_ms", "mean_ms", "fps",
            "samples_ms", "params"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--out", str(out), "--sizes", "128x96", "--models", "defaults,mobilenetv2,lraspp,peer",
            "--backends", "torch,onnxruntime", "--warmup", "1", "--iters", "2", "--settle-ms", "0",
            "--overhead-iters", "3", "--no-memory"]
    rc = bench.main(argv)
    return rc, out


@pytest.mark.ros
def test_quick_run_writes_results(quick_run):
    rc, out = quick_run
    assert rc == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["schema"] == bench.SCHEMA
    m = data["machine"]
    for key in ("cpu_model", "logical_cores", "threads", "date", "versions", "gpu"):
        assert key in m
    for lib in ("torch", "onnxruntime", "numpy", "opencv"):
        assert m["versions"][lib]

    rows = data["rows"]
    models = ["default", "default-native", "mobilenetv2-guided", "mobilenetv2-base", "lraspp-mbv2-peer",
              "lraspp-mbv3"]
    backends = ["torch", "onnxruntime", bench.RAW]
    assert {(r["model"], r["backend"]) for r in rows} == {(mm, b) for mm in models for b in backends}
    native_raw = [r for r in rows if r["model"] == "default-native" and r["backend"] == bench.RAW]
    assert native_raw[0]["status"] == "skipped" and "native input size" in native_raw[0]["note"]
    rows = [r for r in rows if r not in native_raw]
    for r in rows:
        assert r["status"] == "ok", r
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["size"] == "128x96" and r["pixels"] == 128 * 96
        assert r["count"] == 2 and len(r["samples_ms"]) == 2
        assert 0 < r["median_ms"] <= r["p90_ms"]

    dm = data["default_model"]
    # repository-relative: the results name no directory of this machine
    assert dm["path"] == "clipseg_ros/models/default.clipseg" and dm["label"] == "default (packaged)"
    assert str(bench.PACKAGED_DEFAULT.parent) not in (out / "bench.json").read_text()

    ratios = data["ratios"]
    twins = {(t["family"], t["backend"]) for t in ratios["twins"]}
    assert twins == {("mobilenetv2", b) for b in backends}
    for t in ratios["twins"]:
        assert t["ratio"] > 0 and t["guided"] == "mobilenetv2-guided" and t["baseline"] == "mobilenetv2-base"
    enh = [r for r in rows if r["model"] == "mobilenetv2-guided"]
    assert all(r["ratio_vs_twin"] > 0 for r in enh)
    cmp = ratios["default_vs_lraspp"]
    assert cmp["status"] == "ok" and cmp["size"] == "128x96" and cmp["ratio"] > 0
    dep = ratios["deployed_default_vs_lraspp"]
    assert dep["status"] == "ok" and dep["ratio"] > 0 and "native" in dep["default"]
    # the native row runs the file's own input size, not the frame's
    from clipseg_ros.model_file import ModelFile

    hw = ModelFile(bench.PACKAGED_DEFAULT).meta.input_size
    assert f"native {hw[1]}x{hw[0]}" in dep["default"]

    ov = data["overhead"]
    assert ov["size"] == "640x480"
    steps = {s["step"].split(" (")[0] for s in ov["steps"]}
    for name in ("decode rgb8", "decode bgr8", "decode jpeg", "preprocess", "postprocess", "colorize",
                 "overlay", "fill labels msg", "fill color msg", "fill overlay msg"):
        assert name in steps
    assert set(ov["percent_of_inference"]) == {"torch", "onnxruntime"}
    assert ratios["node_overhead_percent"] == ov["percent_of_inference"]
    assert data["memory"]["status"] == "skipped"

    md = (out / "bench.md").read_text()
    assert "Guided / baseline" in md and "LRASPP" in md and "overhead" in md
    png = (out / "latency_vs_size.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--precision", "fp16"])       # fp16 needs --device cuda
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "640-480"])
    a = bench.parse_args(["--models", "stdc1,lraspp", "--sizes", "64x32"])
    assert a.model_keys == ["stdc1-guided", "stdc1-base", "lraspp-mbv3"]
    assert bench.parse_args(["--models", "mobilenetv2-enh"]).model_keys == ["mobilenetv2-guided"]   # old key
    assert a.size_list == [(64, 32)]
    assert bench.parse_args(["--device", "cuda"]).precision == "fp16"


def test_cuda_rows_degrade_with_a_message(tmp_path):
    """Without a GPU, --device cuda skips every row with the reason instead of crashing."""
    if bench.cuda_problem() is None:
        pytest.skip("a CUDA path exists here")
    rc = bench.main(["--device", "cuda", "--out", str(tmp_path), "--sizes", "64x48", "--models", "mobilenetv2-base",
                     "--backends", "torch", "--no-raw", "--iters", "1", "--warmup", "0",
                     "--no-overhead", "--no-memory", "--no-plot"])
    assert rc == 1      # nothing could run
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["status"] for r in data["rows"]] == ["skipped"]
    assert "CUDA" in data["rows"][0]["note"]


def test_portable_paths_writes_repository_paths_relative():
    from clipseg_ros.machine import REPO_ROOT, portable_paths

    got = portable_paths({"model": f"{REPO_ROOT}/clipseg_ros/models/m.clipseg",
                          "cmd": [f"{REPO_ROOT}/.venv/bin/seg_node", "-p", f"model:={REPO_ROOT}/m.clipseg"],
                          "other": "/elsewhere/file", "n": 3, f"{REPO_ROOT}/key": None})
    assert got == {"model": "clipseg_ros/models/m.clipseg", "cmd": [".venv/bin/seg_node", "-p", "model:=m.clipseg"],
                   "other": "/elsewhere/file", "n": 3, "key": None}


def test_faithful_rows_export_the_widened_network(tmp_path):
    """``mobilenetv2f``: the decisive experiment's network, 1/32 feature 1024 wide in both twins,
    the guided one with an identity projection; the files rebuild it and the twins pair up."""
    from clipseg_ros.bench.catalogue import MODEL_SPECS
    from clipseg_ros.bench.factories import ModelFactory
    from clipseg_ros.model_file import ModelFile

    keys = bench.parse_args(["--models", "mobilenetv2f"]).model_keys
    assert keys == ["mobilenetv2f-guided", "mobilenetv2f-base"]
    assert MODEL_SPECS["mobilenetv2f-guided"].twin == "mobilenetv2f-base"
    factory = ModelFactory(tmp_path, want_onnx=False, default_path=None, log=lambda _m: None)
    built = {}
    for key in keys:
        pm = factory.prepare(MODEL_SPECS[key], [(64, 48)])
        net = ModelFile(pm.files["64x48"]).build_network()
        assert net.backbone.channels[2] == 1024, key
        built[key] = net
    assert built["mobilenetv2f-guided"].text_guidance.proj_mode == "identity"
    assert built["mobilenetv2f-base"].text_guidance is None
    # not the same file as the narrow MobileNetV2 twins
    narrow = factory.prepare(MODEL_SPECS["mobilenetv2-base"], [(64, 48)])
    assert ModelFile(narrow.files["64x48"]).build_network().backbone.channels[2] == 320
    # the skip4 row: the same widened baseline plus the stride-4 branch, a file of its own
    assert bench.parse_args(["--models", "skip4"]).model_keys == ["mobilenetv2f-skip4-base"]
    s4 = factory.prepare(MODEL_SPECS["mobilenetv2f-skip4-base"], [(64, 48)])
    net4 = ModelFile(s4.files["64x48"]).build_network()
    assert net4.skip4 is not None and net4.backbone.channels[2] == 1024 and net4.text_guidance is None
    assert built["mobilenetv2f-base"].skip4 is None


def test_bf16_rows_time_torch_and_skip_onnxruntime(tmp_path):
    """--precision bf16: the torch and bare-forward rows run under bf16 autocast, ONNX Runtime rows
    are skipped with the reason (it has no bf16 kernels)."""
    out = tmp_path / "b"
    rc = bench.main(["--quick", "--out", str(out), "--sizes", "64x48", "--models", "default,lraspp",
                     "--backends", "torch,onnxruntime", "--precision", "bf16", "--warmup", "0",
                     "--iters", "1", "--settle-ms", "0", "--no-overhead", "--no-memory", "--no-publish"])
    assert rc == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    by = {(r["model"], r["backend"]): r for r in rows}
    for model in ("default", "lraspp-mbv3"):
        assert by[(model, "torch")]["status"] == "ok" and by[(model, "torch")]["precision"] == "bf16"
        assert by[(model, bench.RAW)]["status"] == "ok"
        ort = by[(model, "onnxruntime")]
        assert ort["status"] == "skipped" and "bf16" in ort["note"], ort
    assert "(bf16)" in by[("default", "torch")]["backend_detail"]


def test_deployed_rows_time_each_precision_the_node_offers(tmp_path):
    """``--models deployed``: the default model as the node runs it, at fp32 (both backends),
    bf16 (PyTorch here; OpenVINO in test_openvino_backend.py) and int8 (ONNX Runtime only, skipped when the
    file has no int8 graph), all timed in one interleaved group with LRASPP; the deployed ratio takes the fastest."""
    from clipseg_ros.model_file import ModelFile

    out = tmp_path / "d"
    rc = bench.main(["--quick", "--out", str(out), "--sizes", "64x48", "--models", "deployed,lraspp",
                     "--backends", "torch,onnxruntime", "--no-raw", "--warmup", "0", "--iters", "2",
                     "--settle-ms", "0", "--no-overhead", "--no-memory", "--no-publish", "--no-plot"])
    assert rc == 0
    data = json.loads((out / "bench.json").read_text())
    by = {(r["model"], r["backend"]): r for r in data["rows"]}
    assert by[("default-native", "torch")]["precision"] == "fp32"
    bf16 = by[("default-native-bf16", "torch")]
    assert bf16["status"] == "ok" and bf16["precision"] == "bf16" and "(bf16)" in bf16["backend_detail"]
    assert bf16["label"].endswith(" bf16")
    assert by[("default-native-bf16", "onnxruntime")]["status"] == "skipped"
    assert "torch or openvino only" in by[("default-native-bf16", "onnxruntime")]["note"]
    assert by[("default-native-int8", "torch")]["status"] == "skipped"
    int8 = by[("default-native-int8", "onnxruntime")]
    if ModelFile(bench.PACKAGED_DEFAULT).int8_bytes is None:
        assert int8["status"] == "skipped" and "model_int8.onnx" in int8["note"], int8
    else:
        assert int8["status"] == "ok" and int8["precision"] == "int8"
    dep = data["ratios"]["deployed_default_vs_lraspp"]
    ok = [r for r in data["rows"] if r["model"].startswith("default-native") and r["status"] == "ok"]
    fastest = min(ok, key=lambda r: r["median_ms"])
    assert dep["status"] == "ok" and dep["default_ms"] == fastest["median_ms"]
    assert (dep["default_backend"], dep["default_precision"]) == (fastest["backend"], fastest["precision"])
    assert f"({fastest['precision']})" in (out / "bench.md").read_text()


def test_a_model_outside_the_repository_is_named_without_its_directory(tmp_path):
    """--model /somewhere/m.clipseg: the results name the file, never this machine's directory."""
    import shutil

    model = tmp_path / "elsewhere" / "m.clipseg"
    model.parent.mkdir()
    shutil.copy(bench.PACKAGED_DEFAULT, model)
    out = tmp_path / "o"
    rc = bench.main(["--quick", "--out", str(out), "--model", str(model), "--sizes", "64x48",
                     "--models", "default-native", "--backends", "onnxruntime", "--no-raw", "--warmup", "0",
                     "--iters", "1", "--settle-ms", "0", "--no-overhead", "--no-memory", "--no-publish", "--no-plot"])
    assert rc == 0
    text = (out / "bench.json").read_text() + (out / "bench.md").read_text()
    assert str(tmp_path) not in text
    assert json.loads((out / "bench.json").read_text())["default_model"]["path"] == "m.clipseg"


@pytest.mark.ros
def test_memory_row_runs_the_real_node_with_its_backend_and_precision(tmp_path):
    """The seg_node memory row starts the real node with --node-backend / --node-precision and
    records what the node resolved them to (its configured: log line), with its peak RSS."""
    pytest.importorskip("rclpy")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "mem"
    rc = bench.main(["--quick", "--out", str(out), "--sizes", "64x48", "--models", "deployed",
                     "--backends", "onnxruntime", "--no-raw", "--threads", "1", "--warmup", "0", "--iters", "1",
                     "--settle-ms", "0", "--no-overhead", "--no-publish", "--no-plot", "--node-seconds", "1",
                     "--node-backend", "onnxruntime", "--node-precision", "fp32"])
    assert rc == 0
    mem = json.loads((out / "bench.json").read_text())["memory"]
    assert mem["status"] == "ok", mem
    assert "precision:=fp32" in mem["command"] and "backend:=onnxruntime" in mem["command"]
    assert mem["configured"].startswith("onnxruntime [CPUExecutionProvider] on cpu (fp32); precision as requested")
    assert mem["peak_rss_mb"] > 50 and mem["frames"] >= 1
    assert f"the node ran {mem['configured']}" in (out / "bench.md").read_text()
