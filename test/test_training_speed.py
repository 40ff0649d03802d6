"""Training precision, memory format and the data cache: real training steps on a small synthetic
dataset written to disk (no shared data needed).

- ``run.precision`` values are validated with a clear error; ``run.amp`` is a deprecated alias.
- A bf16 step on CPU gives finite losses and changes the weights; checkpoints stay fp32 and
  contiguous whatever the training precision and memory format.
- The score map stays fp32 under autocast.
- Cached and uncached data give identical batches for one seed.
- Resume works across precisions.
- ``clipseg-bench --train`` runs the real step and writes JSON + Markdown.
"""
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from clipseg_training.config import ConfigError, load_config
from clipseg_training.precision import cpu_supports_bf16, resolve_precision
from clipseg_training.sampling import EpochSampler, SeededItems, build_data
from clipseg_training.train import main as train_main

needs_bf16 = pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")

CLASSES = ["sky", "road", "car", "tree"]


def synthetic_folder_dataset(root: Path, n_train: int = 6, n_val: int = 2, hw=(64, 96), seed: int = 0) -> Path:
    """Scenes with known classes: sky band on top, road at the bottom, a car box and a tree disk,
    colours per class plus noise; written as PNG images + label PNGs in the folder layout."""
    rng = np.random.default_rng(seed)
    colours = np.array([[120, 170, 240], [90, 90, 90], [200, 30, 30], [30, 140, 40]], np.float32)
    h, w = hw
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            lab = np.zeros((h, w), np.uint8)
            horizon = int(rng.integers(h // 3, h // 2))
            lab[horizon:] = 1
            y0, x0 = int(rng.integers(horizon - 8, h - 16)), int(rng.integers(0, w - 24))
            lab[y0:y0 + 14, x0:x0 + 22] = 2
            cy, cx = int(rng.integers(8, horizon)), int(rng.integers(10, w - 10))
            yy, xx = np.ogrid[:h, :w]
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 3
            lab[0, :4] = 255                                      # a few unlabelled pixels
            img = colours[np.minimum(lab, 3)] + rng.normal(0, 12, (h, w, 3))
            img = np.clip(img, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / "images" / split / f"f{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "labels" / split / f"f{i:03d}.png"), lab)
    return root


def write_config(tmp_path: Path, data_root: Path, **extra) -> Path:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(len(CLASSES), 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    npz = tmp_path / "text.npz"
    np.savez(npz, embeddings=emb, class_names=np.array(CLASSES))
    cfg = {
        "model": {"name": "mobilenetv2", "pretrained": None},
        "text": {"type": "precomputed", "path": str(npz)},
        "data": {"dataset": "folder", "root": str(data_root), "crop_size": [64, 96], "scale_range": [0.75, 1.25],
                 "batch_size": 2, "workers": 0, "val_batch_size": 2},
        "optim": {"warmup_iters": 1},
        "stage1": {"iters": 4},
        "run": {"stage": "stage1", "out_dir": str(tmp_path / "run"), "val_interval": 2, "ckpt_interval": 2,
                "log_interval": 1, "threads": 1, "progress": False},
        "export": {"input_size": [64, 96]},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        cfg.setdefault(section, {})[name] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def data_root(tmp_path):
    return synthetic_folder_dataset(tmp_path / "data")


# ----------------------------------------------------------------------------- config
def test_precision_values_are_validated():
    for value in ("auto", "fp32", "bf16", "fp16"):
        assert load_config(None, [f"run.precision={value}"])["run"]["precision"] == value
    with pytest.raises(ConfigError, match=r"run.precision 'half' is not one of auto, fp32, bf16, fp16"):
        load_config(None, ["run.precision=half"])
    with pytest.raises(ConfigError, match="run.channels_last must be true or false"):
        load_config(None, ["run.channels_last=maybe"])
    with pytest.raises(ConfigError, match="data.cache_mb must be a non-negative integer"):
        load_config(None, ["data.cache_mb=-1"])
    # hardware checks name the value
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    assert resolve_precision("fp32", "cpu").dtype is None


def test_run_amp_is_a_deprecated_alias(tmp_path):
    with pytest.warns(DeprecationWarning, match="run.amp is deprecated"):
        assert load_config(None, ["run.amp=false"])["run"]["precision"] == "fp32"
    old = tmp_path / "old.yaml"
    old.write_text("run:\n  amp: true\n")
    with pytest.warns(DeprecationWarning):
        assert load_config(old)["run"]["precision"] == "auto"
    # a config dict from an old checkpoint loads too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert load_config({"run": {"amp": True}})["run"]["precision"] == "auto"
    both = tmp_path / "both.yaml"
    both.write_text("run:\n  amp: true\n  precision: fp32\n")
    with pytest.raises(ConfigError, match="both run.amp"):
        load_config(both)


def test_auto_precision_names_its_reason():
    p = resolve_precision("auto", "cpu")
    assert p.name == ("bf16" if cpu_supports_bf16() else "fp32")
    assert "auto" in p.describe()


# ----------------------------------------------------------------------------- numerics
@needs_bf16
def test_score_map_stays_fp32_under_bf16_autocast():
    from clipseg_ros.networks import create_model

    net = create_model("mobilenetv2", 4, 32).train().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out["score_map"].dtype == torch.float32
    assert out["logits"].dtype == torch.bfloat16          # the rest does run in bf16
    assert float(out["score_map"].detach().abs().max()) <= 1.0 + 1e-5   # cosines


@needs_bf16
def test_bf16_channels_last_training_changes_weights_and_saves_fp32(tmp_path, data_root, capsys):
    cfg = write_config(tmp_path, data_root, run__precision="bf16", run__channels_last=True)
    assert train_main([str(cfg)]) == 0
    log = capsys.readouterr().out
    assert "precision bf16 on cpu" in log and "channels-last" in log
    run = tmp_path / "run" / "stage1"
    rows = (run / "log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[3]) for r in rows]
    assert len(losses) == 4 and all(np.isfinite(losses))
    last = torch.load(run / "last.pt", weights_only=False)
    # untrained twin from the same seed: the trained weights differ
    from clipseg_ros.networks import create_model
    torch.manual_seed(0)
    fresh = create_model("mobilenetv2", 4, 32).state_dict()
    changed = [k for k, v in last["net"].items() if v.is_floating_point() and not torch.equal(v, fresh[k])]
    assert len(changed) > 50
    for k, v in last["net"].items():
        if v.is_floating_point():
            assert v.dtype == torch.float32, k
        assert v.is_contiguous(), k
    best = torch.load(run / "best.pt", weights_only=False)
    assert all(v.is_contiguous() and v.dtype != torch.bfloat16 for v in best["net"].values())
    summary = json.loads((run / "summary.json").read_text())
    assert [h["iteration"] for h in summary["history"]] == [2, 4]   # validation ran (batched)
    # the exported file from a bf16 / channels-last run is an ordinary fp32 model file
    from clipseg_ros.segmenter import Segmenter
    from clipseg_training.export import export_checkpoint
    model = tmp_path / "bf16.clipseg"
    export_checkpoint(run / "best.pt", model)
    img = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    a = Segmenter(model, device="cpu", backend="torch")(img).labels
    b = Segmenter(model, device="cpu", backend="onnxruntime")(img).labels
    assert a.shape == (64, 96) and (a == b).mean() > 0.99


@needs_bf16
def test_resume_across_precisions(tmp_path, data_root):
    cfg = write_config(tmp_path, data_root, stage1__iters=4, run__val_interval=0, run__ckpt_interval=2)
    # 2 iterations in bf16, stopped (iters=2), then resumed to 4 in fp32 contiguous
    assert train_main([str(cfg), "stage1.iters=4", "run.precision=bf16"]) == 0
    first = torch.load(tmp_path / "run" / "stage1" / "last.pt", weights_only=False)
    assert first["iteration"] == 4
    assert train_main([str(cfg), "stage1.iters=6", "run.precision=fp32", "run.channels_last=false",
                       "--resume"]) == 0
    resumed = torch.load(tmp_path / "run" / "stage1" / "last.pt", weights_only=False)
    assert resumed["iteration"] == 6
    assert resumed["config"]["run"]["precision"] == "fp32"
    assert any(not torch.equal(first["net"][k], resumed["net"][k]) for k in first["net"]
               if first["net"][k].is_floating_point())



def test_resume_after_a_kill_between_checkpoints_logs_each_iteration_once(tmp_path, data_root):
    """A run killed after its last checkpoint has logged (and validated) iterations it will train
    again; on resume those rows go, so log.csv and val.csv hold each iteration once, in order."""
    cfg = write_config(tmp_path, data_root, run__val_interval=3, run__ckpt_interval=4)
    stage = tmp_path / "run" / "stage1"
    assert train_main([str(cfg), "stage1.iters=4"]) == 0
    at4 = (stage / "last.pt").read_bytes()
    assert train_main([str(cfg), "stage1.iters=8", "--resume"]) == 0
    assert (stage / "summary.json").is_file()
    (stage / "summary.json").unlink()
    (stage / "last.pt").write_bytes(at4)      # as after a SIGKILL at iteration 7: the checkpoint is at 4
    logged = [int(r.split(",")[0]) for r in (stage / "log.csv").read_text().splitlines()[1:]]
    assert logged == list(range(1, 9))
    assert train_main([str(cfg), "stage1.iters=8", "--resume"]) == 0
    rows = [r.split(",") for r in (stage / "log.csv").read_text().splitlines()]
    assert rows[0][0] == "iteration"
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 9))
    seconds = [float(r[-1]) for r in rows[1:]]
    assert seconds == sorted(seconds)
    val_iters = [int(r.split(",")[0]) for r in (stage / "val.csv").read_text().splitlines()]
    assert val_iters == [3, 4, 6, 8]
    summary = json.loads((stage / "summary.json").read_text())
    assert [h["iteration"] for h in summary["history"]] == [3, 4, 6, 8]


def test_a_fresh_run_in_an_old_folder_starts_clean_logs(tmp_path, data_root):
    cfg = write_config(tmp_path, data_root, run__val_interval=2, run__ckpt_interval=2)
    stage = tmp_path / "run" / "stage1"
    assert train_main([str(cfg), "stage1.iters=4"]) == 0
    assert train_main([str(cfg), "stage1.iters=2"]) == 0      # no --resume: starts over
    assert [int(r.split(",")[0]) for r in (stage / "val.csv").read_text().splitlines()] == [2]
    assert json.loads((stage / "summary.json").read_text())["iterations"] == 2


# ----------------------------------------------------------------------------- data
def _batches(cfg: dict, n: int):
    train_set, _ = build_data(cfg, 0, 1, validate=False)
    sampler = EpochSampler(len(train_set), cfg["data"]["batch_size"], cfg["run"]["seed"])
    sampler.set_epoch(1, 0)
    loader = torch.utils.data.DataLoader(SeededItems(train_set), batch_size=cfg["data"]["batch_size"],
                                         sampler=sampler, num_workers=0, drop_last=True)
    out = []
    for _ in range(2):                          # two passes: the second one reads the cache
        out.append([(b["image"].clone(), b["label"].clone()) for b, _ in zip(loader, range(n))])
    return train_set, out


def test_cached_and_uncached_batches_are_identical(tmp_path, data_root):
    cfg_path = write_config(tmp_path, data_root)
    cached_cfg = load_config(cfg_path, ["data.cache_mb=64"])
    plain_cfg = load_config(cfg_path, ["data.cache_mb=0"])
    cached_set, cached = _batches(cached_cfg, 3)
    plain_set, plain = _batches(plain_cfg, 3)
    assert cached_set.cache_info()["cached"] == len(cached_set) and plain_set.cache_info()["cached"] == 0
    for passes in (cached, plain):
        assert len(passes[0]) == 3
    for (ci, cl), (pi, pl) in zip(cached[0] + cached[1], plain[0] + plain[1]):
        assert torch.equal(ci, pi) and torch.equal(cl, pl)
    # the cached arrays are read-only: a transform that wrote into its input would fail loudly
    img, lab = cached_set.load(0)
    assert not img.flags.writeable and not lab.flags.writeable
    with pytest.raises(ValueError):
        img[0, 0, 0] = 1


def test_cache_respects_its_budget(tmp_path, data_root):
    cfg = load_config(write_config(tmp_path, data_root), ["data.cache_mb=0"])
    train_set, _ = build_data(cfg, 0, 1, validate=False)
    per_item = 64 * 96 * 4                                    # RGB + label bytes
    info = train_set.cache((2.5 * per_item) / 2**20)
    assert info["cached"] == 2 and info["total"] == 6


# ----------------------------------------------------------------------------- benchmark
@needs_bf16
def test_train_bench_runs_the_real_step(tmp_path, data_root):
    from clipseg_ros.bench import main as bench_main

    cfg = write_config(tmp_path, data_root)
    out = tmp_path / "bench"
    rc = bench_main(["--train", "--config", str(cfg), "--crop", "64x96", "--batch", "2", "--iters", "2",
                     "--block", "1", "--warmup", "1", "--threads", "1", "--out", str(out), "--no-progress",
                     "--variants", "fp32:contiguous,bf16:channels_last"])
    assert rc == 0
    result = json.loads((out / "train_bench.json").read_text())
    assert [r["precision"] for r in result["rows"]] == ["fp32", "bf16"]
    for r in result["rows"]:
        assert r["iterations"] == 2 and r["images_per_s"] > 0 and 0 <= r["data_fraction"] < 1
        ph = r["phase_median_s"]
        assert set(ph) == {"forward", "loss", "backward", "optimizer"} and all(v > 0 for v in ph.values())
        assert sum(ph.values()) <= r["step_median_s"] * 1.5
    assert result["machine"]["usable_cores"] >= 1
    assert "| bf16:channels_last | bf16 |" in (out / "train_bench.md").read_text()


def test_train_bench_rejects_bad_variants(tmp_path, capsys):
    from clipseg_ros.bench import main as bench_main

    assert bench_main(["--train", "--variants", "fp8:contiguous", "--out", str(tmp_path)]) == 2
    assert "precision 'fp8' is not one of" in capsys.readouterr().err


@needs_bf16
@pytest.mark.slow
def test_train_bench_whole_runs(tmp_path, data_root):
    from clipseg_ros.bench import main as bench_main

    cfg = write_config(tmp_path, data_root)
    out = tmp_path / "whole"
    rc = bench_main(["--train", "--whole-run", "--config", str(cfg), "--crop", "64x96", "--batch", "2",
                     "--iters", "2", "--threads", "1", "--out", str(out), "--variants",
                     "fp32:contiguous,auto:channels_last"])
    assert rc == 0
    result = json.loads((out / "train_whole.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["fp32:contiguous", "auto:channels_last"]
    for r in result["rows"]:
        assert r["iterations"] == 2 and r["wall_s"] > 0 and 0 <= r["best_miou"] <= 100
    logs = [(out / "whole" / f"{n}.log").read_text() for n in ("fp32_contiguous", "auto_channels_last")]
    assert "precision fp32" in logs[0] and "precision bf16" in logs[1]
    assert "| auto:channels_last |" in (out / "train_whole.md").read_text()


def test_detail_targets_equal_the_laplacian_convolution():
    """The pooled form of STDC's boundary targets gives exactly the convolution's result."""
    from torch.nn import functional as F

    from clipseg_training.losses import boundary_targets

    lap = torch.tensor([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=torch.float32).view(1, 1, 3, 3)

    def by_convolution(labels):
        lab = labels.unsqueeze(1).float()
        lab = torch.where(lab == 255, torch.zeros_like(lab), lab)
        maps = []
        for s in (1, 2, 4):
            b = (F.conv2d(lab, lap, stride=s, padding=1).clamp(min=0) > 0.1).float()
            maps.append(F.interpolate(b, size=labels.shape[-2:], mode="nearest") if s > 1 else b)
        fuse = torch.tensor([0.6, 0.3, 0.1]).view(1, 3, 1, 1)
        return (F.conv2d(torch.cat(maps, 1), fuse) > 0.1).float()

    g = torch.Generator().manual_seed(0)
    for shape in ((2, 96, 128), (1, 37, 53)):
        noisy = torch.randint(0, 11, shape, generator=g)
        noisy[:, :2] = 255
        blocks = torch.randint(0, 11, (shape[0], shape[1] // 8 + 1, shape[2] // 8 + 1), generator=g)
        blocks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :shape[1], :shape[2]]
        for labels in (noisy, blocks):
            got, want = boundary_targets(labels), by_convolution(labels)
            assert want.sum() > 0 and torch.equal(got, want)
