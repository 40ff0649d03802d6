"""Training end to end on a few real CamVid images: two stages, eval, export, runtime loading;
stage-2 freezing; exact resume after a real SIGTERM; a 2-process gloo DDP run; bad input.

Everything runs on a fresh clone: the images are the tiny CamVid that conftest builds from the
shipped sample bag, the backbone is randomly initialised (``pretrained: null``), stage 2 learns
prompts through the bundled MiniLM, and the fixed class embeddings are the random-unit-vector files
in test/data (plumbing, not CLIP).  One extra test repeats stage 1 on the real shared CamVid with
the ImageNet weights and CLIP embeddings where that data exists."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clipseg_training.config import ConfigError, load_config
from clipseg_training.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO / "test" / "data" / "camvid11_random_d32.npz"          # 11 x 32 random unit vectors
NPZ19 = REPO / "test" / "data" / "cityscapes19_random_d32.npz"    # 19 classes: a mismatch for CamVid
REAL_NPZ = "text_embeddings/camvid11_clip_rn50.npz"                # in the shared data folder


def tiny_config(tmp_path, camvid_root, **extra) -> Path:
    """A few CamVid images, small crops, a handful of iterations, MobileNetV2 (random init)."""
    cfg = {
        "model": {"name": "mobilenetv2", "pretrained": None},
        "text": {"type": "hf", "model_dir": None,
                 "prompt_names": ["sky", "building", "pole", "road", "sidewalk", "tree", "traffic sign",
                                  "fence", "car", "pedestrian", "bicyclist"]},
        "prompt": {"n_ctx": 4},
        "data": {"root": str(camvid_root), "crop_size": [96, 128], "scale_range": [0.75, 1.5],
                 "eval_size": [96, 128], "batch_size": 2, "workers": 0, "limit_train": 6, "limit_val": 2},
        "optim": {"warmup_iters": 2},
        "stage1": {"iters": 4},
        "stage2": {"iters": 3},
        "run": {"out_dir": str(tmp_path / "run"), "val_interval": 2, "ckpt_interval": 2, "log_interval": 1,
                "threads": 1, "progress": False},
        "export": {"input_size": [96, 128]},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        cfg.setdefault(section, {})[name] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _val_size(camvid_root) -> int:
    return len((camvid_root / "val.txt").read_text().split()) // 2


def _backbone_state(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.slow
def test_two_stages_eval_export_and_runtime(tmp_path, camvid_root):
    cfg = tiny_config(tmp_path, camvid_root)
    assert train_main([str(cfg), "--stage", "both"]) == 0
    run = tmp_path / "run"
    for stage in ("stage1", "stage2"):
        summary = json.loads((run / stage / "summary.json").read_text())
        assert summary["iterations"] == (4 if stage == "stage1" else 3)
        assert 0 <= summary["best_miou"] <= 100
        assert (run / stage / "best.pt").is_file() and (run / stage / "log.csv").is_file()

    s1 = torch.load(run / "stage1" / "best.pt", weights_only=False)
    s2_last = torch.load(run / "stage2" / "last.pt", weights_only=False)
    # Stage 2 froze the backbone: weights AND batch-norm statistics unchanged ...
    b1, b2 = _backbone_state(s1["net"]), _backbone_state(s2_last["net"])
    assert b1.keys() == b2.keys() and len(b1) > 100
    assert all(torch.equal(b1[k], b2[k]) for k in b1), "stage 2 changed the frozen backbone"
    # ... while the head, the projection and the prompt contexts trained.
    assert not torch.equal(s1["net"]["head.conv_out.weight"], s2_last["net"]["head.conv_out.weight"])
    assert not torch.equal(s1["net"]["text_guidance.proj.weight"], s2_last["net"]["text_guidance.proj.weight"])
    assert s2_last["prompt_ctx"].shape == (11, 4, 384)
    # T baked into the checkpoint comes from the learned prompts, not the stage-1 bare names
    assert not torch.allclose(s1["net"]["text_guidance.text_embeddings"],
                              s2_last["net"]["text_guidance.text_embeddings"])
    # optimizer: contexts without weight decay
    param_groups = s2_last["optimizer"]["param_groups"]
    groups = {g["name"]: g for g in param_groups} if "name" in param_groups[0] else None
    if groups:
        assert groups["prompt_ctx"]["weight_decay"] == 0.0

    # eval CLI on the checkpoint: metrics JSON + PNGs
    from clipseg_training.evaluate import main as eval_main

    out = tmp_path / "eval"
    assert eval_main(["--checkpoint", str(run / "stage2" / "best.pt"), "--out", str(out), "--workers", "0",
                      "--flip"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == _val_size(camvid_root) and metrics["flip"] is True   # the whole val split
    assert (out / "confusion.png").stat().st_size > 1000 and (out / "per_class_iou.png").is_file()

    # the text branch alone (diagnostic): same split, predictions from argmax S
    out_s = tmp_path / "eval_s"
    assert eval_main(["--checkpoint", str(run / "stage1" / "best.pt"), "--out", str(out_s), "--workers", "0",
                      "--head", "score_map"]) == 0
    ms = json.loads((out_s / "metrics.json").read_text())
    assert ms["head"] == "score_map" and ms["images"] == _val_size(camvid_root) and 0 <= ms["metrics"]["miou"] <= 100

    # export → the runtime's loader reproduces the checkpoint's predictions
    from clipseg_training.export import export_checkpoint
    from clipseg_training.checkpoint import load_checkpoint_network
    from clipseg_ros.networks import DeployWrapper
    from clipseg_ros.segmenter import Segmenter
    import cv2

    model = tmp_path / "model.clipseg"
    report = export_checkpoint(run / "stage2" / "best.pt", model)
    assert all(r["ok"] for r in report["verify"].values()) and set(report["verify"]) == {"torch", "onnxruntime"}
    img = cv2.cvtColor(cv2.imread(str(next((camvid_root / "val").glob("*.png")))), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (128, 96), interpolation=cv2.INTER_AREA)
    net, ckpt = load_checkpoint_network(run / "stage2" / "best.pt")
    with torch.no_grad():
        ref, _ = DeployWrapper(net, ckpt["config"]["data"]["mean"], ckpt["config"]["data"]["std"])(
            torch.from_numpy(img)[None])
    for backend in ("torch", "onnxruntime"):
        seg = Segmenter(model, device="cpu", backend=backend)
        assert seg.class_names[0] == "Sky" and seg.input_size == (96, 128)
        labels = seg(img).labels
        assert (labels == ref[0].numpy()).mean() >= 0.995, backend
    meta = seg.meta.provenance
    assert meta["stage"] == "stage2" and meta["dataset"] == "camvid"


@pytest.mark.slow
def test_stage2_control_without_prompts_and_centred_text(tmp_path, camvid_root):
    """The stage-2 control (``stage2.learn_prompts: false``): same frozen backbone, the stage-1 text
    stays as it was, no prompt contexts; it runs even with precomputed (CLIP) embeddings, where
    prompt learning is impossible.  ``text.center``: the baked T is the centred class embeddings."""
    cfg = tiny_config(tmp_path, camvid_root, text__type="precomputed",
                      text__path=str(NPZ), text__prompt_names=None, text__center=True,
                      stage1__iters=3, stage2__iters=2, stage2__learn_prompts=False, data__limit_train=4)
    assert train_main([str(cfg), "--stage", "both"]) == 0
    run = tmp_path / "run"
    s1 = torch.load(run / "stage1" / "best.pt", weights_only=False)
    s2 = torch.load(run / "stage2" / "last.pt", weights_only=False)
    assert s2["iteration"] == 2 and s2["prompt_ctx"] is None
    b1, b2 = _backbone_state(s1["net"]), _backbone_state(s2["net"])
    assert all(torch.equal(b1[k], b2[k]) for k in b1), "the control changed the frozen backbone"
    assert not torch.equal(s1["net"]["head.conv_out.weight"], s2["net"]["head.conv_out.weight"])
    t1, t2 = s1["net"]["text_guidance.text_embeddings"], s2["net"]["text_guidance.text_embeddings"]
    assert torch.equal(t1, t2), "the control must keep the stage-1 text"
    # centred: the rows are the L2-normalised CLIP embeddings minus their mean
    data = np.load(NPZ)
    e = torch.nn.functional.normalize(torch.from_numpy(data["embeddings"]).float(), dim=-1)
    assert torch.allclose(t1, e - e.mean(0, keepdim=True), atol=1e-6)
    assert t1.sum(0).abs().max() < 1e-5
    assert s2["config"]["stage2"]["learn_prompts"] is False and s2["config"]["text"]["center"] is True

    # clipseg-eval --ablate-text on the control's checkpoint: a metrics.json in its own folder
    from clipseg_training.evaluate import main as eval_main

    assert eval_main(["--checkpoint", str(run / "stage2" / "best.pt"), "--workers", "0",
                      "--ablate-text", "shuffle"]) == 0
    m = json.loads((run / "stage2" / "eval_val_ablate-shuffle" / "metrics.json").read_text())
    assert m["ablate_text"] == "shuffle" and m["images"] == _val_size(camvid_root) and 0 <= m["metrics"]["miou"] <= 100
    # the experiment report reads that cached evaluation, and runs the score-map one when asked
    from clipseg_training import experiments as ex

    assert ex.diagnostic_miou(run / "stage2", "miou_text_shuffled", False) == pytest.approx(m["metrics"]["miou"])
    assert ex.diagnostic_miou(run / "stage1", "miou_score_map", False) is None
    v = ex.diagnostic_miou(run / "stage1", "miou_score_map", True)
    assert 0 <= v <= 100 and (run / "stage1" / "eval_val_score_map" / "metrics.json").is_file()


def test_new_switches_must_be_booleans():
    with pytest.raises(ConfigError, match="text.center"):
        load_config(None, ["text.center=sometimes"])
    with pytest.raises(ConfigError, match="stage2.learn_prompts"):
        load_config(None, ["stage2.learn_prompts=2"])
    assert load_config(None, ["stage2.learn_prompts=false"])["stage2"]["learn_prompts"] is False
    with pytest.raises(ConfigError, match="model.skip4"):
        load_config(None, ["model.skip4=maybe"])
    with pytest.raises(ConfigError, match="model.skip4 is a MobileNetV2 option"):
        load_config(None, ["model.name=stdc1", "model.skip4=true"])
    assert load_config(None, ["model.skip4=true"])["model"]["skip4"] is True


def _run_cli(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "clipseg_training.train", *args], cwd=REPO,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_resume_after_sigterm_reproduces_uninterrupted_run(tmp_path, camvid_root):
    cfg = tiny_config(tmp_path, camvid_root, text__type="precomputed",
                      text__path=str(NPZ), text__prompt_names=None,
                      stage1__iters=8, run__val_interval=0, run__ckpt_interval=100,
                      data__limit_train=6)
    # uninterrupted reference, in-process
    assert train_main([str(cfg), "--stage", "stage1", "run.out_dir=" + str(tmp_path / "ref")]) == 0
    ref = torch.load(tmp_path / "ref" / "stage1" / "last.pt", weights_only=False)
    assert ref["iteration"] == 8

    # a real process, stopped by SIGTERM part-way, then resumed
    out = tmp_path / "interrupted"
    proc = _run_cli([str(cfg), "--stage", "stage1", f"run.out_dir={out}"])
    log = out / "stage1" / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:   # header + 2 iterations
            break
        if proc.poll() is not None:
            pytest.fail("training exited before it could be interrupted:\n" + proc.stdout.read())
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "--resume" in output
    partial = torch.load(out / "stage1" / "last.pt", weights_only=False)
    assert 2 <= partial["iteration"] < 8

    assert train_main([str(cfg), "--stage", "stage1", f"run.out_dir={out}", "--resume"]) == 0
    resumed = torch.load(out / "stage1" / "last.pt", weights_only=False)
    assert resumed["iteration"] == 8
    for key, value in ref["net"].items():
        assert torch.allclose(value.float(), resumed["net"][key].float(), atol=1e-6, rtol=0), key
    lines = (out / "stage1" / "log.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 9))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path, camvid_root):
    cfg = tiny_config(tmp_path, camvid_root, text__type="precomputed",
                      text__path=str(NPZ), text__prompt_names=None,
                      stage1__iters=3, run__val_interval=3, run__device="cpu", data__limit_train=8)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "clipseg_training.train", str(cfg), "--stage", "stage1", f"run.out_dir={out}"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((out / "stage1" / "summary.json").read_text())
    assert summary["iterations"] == 3 and len(summary["history"]) == 1
    ckpt = torch.load(out / "stage1" / "last.pt", weights_only=False)
    assert ckpt["iteration"] == 3


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(bad)
    with pytest.raises(ConfigError, match="optim.momentom"):
        load_config(None, ["optim.momentom=0.5"])
    assert train_main([str(bad)]) == 2


def test_bad_inputs_stop_before_training(tmp_path, camvid_root, capsys):
    # missing dataset root
    cfg = tiny_config(tmp_path, camvid_root, data__root=str(tmp_path / "no-such-camvid"))
    assert train_main([str(cfg), "--stage", "stage1"]) == 2
    assert "no-such-camvid" in capsys.readouterr().err
    # class-count mismatch: 19-class Cityscapes embeddings with 11-class CamVid
    cfg = tiny_config(tmp_path, camvid_root, text__type="precomputed", text__prompt_names=None,
                      text__path=str(NPZ19))
    assert train_main([str(cfg), "--stage", "stage1"]) == 2
    err = capsys.readouterr().err
    assert "19" in err and "11" in err
    # prompt names that do not match the classes
    cfg = tiny_config(tmp_path, camvid_root, text__prompt_names=["sky", "road"])
    assert train_main([str(cfg), "--stage", "stage1"]) == 2
    assert "prompt_names" in capsys.readouterr().err
    # stage 2 with precomputed embeddings: prompt learning is impossible, said clearly
    cfg = tiny_config(tmp_path, camvid_root, text__type="precomputed", text__prompt_names=None,
                      text__path=str(NPZ), stage2__init=str(tmp_path / "x.pt"))
    (tmp_path / "x.pt").write_bytes(b"")
    torch.save({"net": {}}, tmp_path / "x.pt")
    assert train_main([str(cfg), "--stage", "stage2"]) == 2
    err = capsys.readouterr().err
    assert "precomputed" in err.lower() or "prompt" in err.lower()


def test_bad_label_values_detected_before_training(tmp_path):
    import cv2

    root = tmp_path / "folder"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / "images" / split / f"f{i}.png"), np.full((32, 48, 3), 100, np.uint8))
            lab = np.zeros((32, 48), np.uint8)
            if split == "train" and i == 1:
                lab[0, 0] = 7          # only 3 classes
            cv2.imwrite(str(root / "labels" / split / f"f{i}.png"), lab)
    (root / "classes.txt").write_text("a\nb\nc\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "mobilenetv2", "guidance": False},
        "data": {"dataset": "folder", "root": str(root), "classes_file": str(root / "classes.txt"),
                 "crop_size": [32, 48], "batch_size": 1, "workers": 0},
        "stage1": {"iters": 1}, "run": {"out_dir": str(tmp_path / "r"), "progress": False}}))
    proc = _run_cli([str(cfg)])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "f1.png" in out and "7" in out
    assert not (tmp_path / "r" / "baseline" / "last.pt").exists()


def test_predict_from_the_score_map_head():
    """--head score_map predicts from S = cos(T, P f) alone; a baseline has no such head."""
    from torch.nn import functional as F

    from clipseg_ros.networks import create_model
    from clipseg_training.evaluate import predict_logits

    torch.manual_seed(0)
    net = create_model("mobilenetv2", 5, 16).eval()
    net.text_guidance.set_text_embeddings(torch.randn(5, 16))
    x = torch.randn(2, 3, 64, 96)
    got = predict_logits(net, x, head="score_map", out_size=(48, 72))
    with torch.no_grad():
        s = net(x)["score_map"]
    want = F.interpolate(s, size=(48, 72), mode="bilinear", align_corners=False).softmax(1)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, predict_logits(net, x, out_size=(48, 72)))
    base = create_model("mobilenetv2", 5, None).eval()
    with pytest.raises(ValueError, match="no 'score_map' output"):
        predict_logits(base, x, head="score_map")


def test_ablated_text_takes_the_class_information_out_of_s():
    """--ablate-text: shuffle rolls S's channels by one class; mean makes all K channels equal."""
    from clipseg_ros.networks import create_model
    from clipseg_training.evaluate import ablated_text

    torch.manual_seed(0)
    net = create_model("mobilenetv2", 5, 16).eval()
    net.text_guidance.set_text_embeddings(torch.randn(5, 16))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        s = net(x)["score_map"]
        s_shuffled = net(x, ablated_text(net, "shuffle"))["score_map"]
        s_mean = net(x, ablated_text(net, "mean"))["score_map"]
        logits, logits_shuffled = net(x)["logits"], net(x, ablated_text(net, "shuffle"))["logits"]
    torch.testing.assert_close(s_shuffled, s.roll(-1, dims=1))
    torch.testing.assert_close(s_mean, s_mean[:, :1].expand_as(s_mean))
    assert not torch.allclose(logits, logits_shuffled)      # S does reach the prediction
    assert torch.equal(net.text_guidance.text_embeddings.roll(-1, 0), ablated_text(net, "shuffle"))
    with pytest.raises(ValueError, match="guided training checkpoint"):
        ablated_text(create_model("mobilenetv2", 5, None), "shuffle")


def test_ablate_text_refuses_a_model_file(tmp_path, capsys):
    from clipseg_training.evaluate import main as eval_main

    with pytest.raises(SystemExit) as exc:
        eval_main(["--model", str(tmp_path / "m.clipseg"), "--ablate-text", "shuffle"])
    assert exc.value.code == 2
    assert "m.clipseg" in capsys.readouterr().err


@pytest.mark.slow
def test_stage1_on_the_shared_camvid_with_imagenet_weights_and_clip(tmp_path, shared_camvid_root, shared_data):
    """Extra, where the shared data exists: the real CamVid, ImageNet MobileNetV2 and CLIP RN50
    class embeddings through a short stage 1 (the fresh-clone tests above cover every feature)."""
    weights = shared_data / "pretrained" / "mobilenet_v2-b0353104.pth"
    cfg = tiny_config(tmp_path, shared_camvid_root, model__pretrained=str(weights), text__type="precomputed",
                      text__path=str(shared_data / REAL_NPZ), text__prompt_names=None, stage1__iters=2,
                      data__scale_range=[0.25, 0.5])
    assert train_main([str(cfg), "--stage", "stage1"]) == 0
    summary = json.loads((tmp_path / "run" / "stage1" / "summary.json").read_text())
    assert summary["iterations"] == 2 and 0 <= summary["best_miou"] <= 100
    ckpt = torch.load(tmp_path / "run" / "stage1" / "last.pt", weights_only=False)
    e = torch.nn.functional.normalize(torch.from_numpy(np.load(shared_data / REAL_NPZ)["embeddings"]).float(), dim=-1)
    assert e.shape == (11, 1024)
    torch.testing.assert_close(ckpt["net"]["text_guidance.text_embeddings"], e)


def test_a_fixed_schedule_on_train_and_val_without_evaluation(tmp_path, camvid_root):
    """The shipped model's recipe: data.train_split=train+val, no val split, the final checkpoint."""
    cfg = tiny_config(tmp_path, camvid_root, data__train_split="train+val", data__val_split="",
                      data__limit_train=0)
    assert train_main([str(cfg), "--stage", "stage1"]) == 0
    run = tmp_path / "run" / "stage1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 4
    last = torch.load(run / "last.pt", weights_only=False)
    assert last["config"]["data"]["train_split"] == "train+val"
    n_train = len((camvid_root / "train.txt").read_text().split()) // 2
    assert summary["train_images"] == n_train + _val_size(camvid_root) and summary["val_images"] == 0
    assert summary["train_split"] == "train+val" and (run / "best.pt").is_file()   # best = the final weights


def test_export_adds_the_int8_graph(tmp_path, camvid_root):
    """clipseg-export --int8-calib: the exported file carries a checked int8 graph and its record."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from clipseg_ros.model_file import ModelFile
    from clipseg_training.export import main as export_main

    cfg = tiny_config(tmp_path, camvid_root, stage1__iters=6)
    assert train_main([str(cfg), "--stage", "stage1"]) == 0
    out = tmp_path / "m.clipseg"
    bag = REPO / "data" / "sample_bag" / "camvid_val_sample"
    best = str(tmp_path / "run" / "stage1" / "best.pt")
    assert export_main([best, str(out), "--int8-calib", str(camvid_root / "train"), "--int8-count", "8",
                        "--int8-val-bag", str(bag)]) == 0
    mf = ModelFile(out)
    assert mf.int8_bytes is not None and mf.meta.int8["calibration_frames"] == 8
    assert mf.meta.int8["val_source"].startswith("camvid_val_sample")
    assert export_main([best, str(out), "--int8-val-bag", str(bag)]) == 2
