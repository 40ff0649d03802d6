"""Write the model card of a ``.clipseg`` file from what the file and the measurements say.

    python -m clipseg_training.model_card clipseg_ros/models/default.clipseg \\
        --out clipseg_ros/models/default.md [--bench bench.json] [--live results.json] \\
        [--results docs/results/results.json]

Everything numeric comes from the file's metadata (val mIoU per class, recipe, provenance) or
from the JSON that ``clipseg-bench`` / ``clipseg-bag-eval live`` / the experiment report wrote,
so regenerating the card after replacing the model cannot leave stale numbers behind.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from clipseg_ros.atomic_files import atomic_write_text
from clipseg_ros.bag.report import trained_splits

DATA_TRAIN = """\
- **Training data**: CamVid (Brostow et al., PRL 2009), the SegNet tutorial's 480×360 copy: the
  train split (367 images) for training and the val split (101) for model selection. Its licence
  is **CC BY-NC 4.0** (non-commercial research use). These weights are derived from that data, so
  treat them as non-commercial too."""
DATA_TRAINVAL = """\
- **Training data**: CamVid (Brostow et al., PRL 2009), the SegNet tutorial's 480×360 copy: the
  train and val splits together (367 + 101 = 468 images), a fixed schedule, the final checkpoint
  (standard CamVid practice; no checkpoint was selected on any split). Its licence is
  **CC BY-NC 4.0** (non-commercial research use). These weights are derived from that data, so
  treat them as non-commercial too."""
LICENCE = """\
{data}
- **Backbone initialisation**: torchvision's ImageNet MobileNetV2 weights (BSD-3-Clause code; the
  ImageNet terms apply to the weights).
{text}
- The package code is Apache-2.0."""
TEXT_GUIDED = """\
- **Text knowledge**: OpenAI CLIP RN50 text-encoder embeddings of the class names (MIT licence),
  or, for prompt-learning models trained here, the MiniLM-L6 sentence encoder (Apache-2.0)."""
TEXT_NONE = """\
- **Text knowledge**: none. This is a baseline network, trained without textual guidance, so no
  text encoder or class embedding went into these weights."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _text_source(prov: dict) -> str:
    enc = (prov.get("info") or {}).get("text_encoder") or {}
    kind = enc.get("type")
    if kind == "precomputed":
        return f"precomputed CLIP class embeddings (`{Path(str(enc.get('path'))).name}`)"
    if kind == "open_clip":
        return (f"open_clip {enc.get('model_name')} ({enc.get('pretrained')})"
                + ("; learnable prompts (CoOp)" if (prov.get("info") or {}).get("prompt") else ""))
    if kind == "hf":
        return (f"transformers text encoder ({enc.get('model_dir')}), **not CLIP**"
                + ("; learnable prompts (CoOp)"
                   if prov.get("prompt") or (prov.get("info") or {}).get("prompt") else ""))
    return "none (baseline)"


def _speed_lines(bench: dict) -> list[str]:
    rows = [r for r in bench.get("rows", [])
            if str(r.get("model", "")).startswith("default-native") and r.get("status") == "ok"]
    if not rows:
        return []
    m = bench.get("machine", {})
    out = [f"Measured with `clipseg-bench` on {m.get('cpu_model', '?')}, {m.get('threads', '?')} threads "
           f"({m.get('date', '?')}). The file's own input size is used, as the node runs it: the frame is "
           "resized to it and the labels back. Batch 1, median (p90) ms:", "",
           "| frame size | backend | precision | median ms | p90 ms | FPS |", "|---|---|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["pixels"], r["backend"], r.get("precision") or "")):
        out.append(f"| {r['size']} | {r['backend']} | {r.get('precision') or 'fp32'} | {r['median_ms']:.1f} | "
                   f"{r['p90_ms']:.1f} | {r['fps']:.0f} |")
    cmp = (bench.get("ratios") or {}).get("deployed_default_vs_lraspp") or {}
    if cmp.get("status") == "ok":
        how = f" ({cmp['default_backend']}, {cmp['default_precision']})" if cmp.get("default_precision") else ""
        out += ["", f"Against torchvision's LRASPP-MobileNetV3-Large in PyTorch at {cmp['size']}, in the "
                    f"same interleaved run: the fastest way the node can run this file{how} "
                    f"{cmp['default_ms']:.1f} ms vs {cmp['lraspp_torch_ms']:.1f} ms (ratio {cmp['ratio']:.2f})."]
    return out


def _ms(lat: dict, key: str) -> float:
    """A latency figure of a bag-eval results file: ``<key>_ms`` (older files: ``<key>``)."""
    return lat.get(f"{key}_ms", lat.get(key, 0))


def _live_lines(live: dict) -> list[str]:
    f, lat, rate = live.get("frames", {}), live.get("latency_ms", {}), live.get("rate", {})
    if not f:
        return []
    bag = live.get("bag", {})
    trend = live.get("latency_trend") or {}
    out = [f"Through the real node (`clipseg-bag-eval live`, bag `{Path(str(bag.get('path'))).name}`): "
           f"{f.get('processed')} of {f.get('sent')} frames processed at {rate.get('achieved_hz') or 0:.1f} Hz "
           f"(input {rate.get('sent_hz') or 0:.1f} Hz), {f.get('dropped')} dropped; end-to-end latency "
           f"median {_ms(lat, 'median'):.1f} ms, p90 {_ms(lat, 'p90'):.1f} ms."]
    if trend:
        out[0] += (f" Over {trend['duration_s']:.0f} s the p95 went from {trend['first_quarter_p95_ms']:.1f} ms "
                   f"(first quarter) to {trend['last_quarter_p95_ms']:.1f} ms (last quarter).")
    return out


def _int8_lines(rec: dict | None) -> list[str]:
    """The int8 member's section (clipseg_ros.quantize), from its own record."""
    if not rec:
        return ["", "## int8", "", "No int8 graph in this file: `precision: auto` runs fp32 "
                "(`clipseg-quantize` adds one)."]
    def num(v):
        return "n/a" if v is None else f"{v:.2f}"

    lat = rec.get("latency_ms") or {}
    return ["", "## int8 (CPU)", "",
            f"- `{rec['member']}`: {rec.get('quantization')}, calibrated on {rec.get('calibration_frames')} "
            f"frames of `{rec.get('calibration_source')}`; labels agree with PyTorch on "
            f"{num(100 * rec['agreement_with_torch']) if rec.get('agreement_with_torch') is not None else 'n/a'} % "
            f"of the pixels of {rec.get('agreement_frames')} held-out frames.",
            f"- val mIoU: int8 **{num(rec.get('val_miou'))}** against fp32 {num(rec.get('fp32_val_miou'))} "
            f"({rec.get('val_source') or 'not measured'}).",
            f"- Latency where it was made ({rec.get('latency_threads')} threads): int8 {num(lat.get('int8'))} ms, "
            f"fp32 {num(lat.get('fp32'))} ms.  `precision: auto` takes int8 only when the val mIoU is within "
            f"0.5 of fp32 and int8 measures faster on the robot at start-up; `precision: int8` forces it."]


def _twin_row(twin: dict | None, row: str) -> dict | None:
    """The train-only twin's row of a ``decisive report`` results.json (``rows.<row>``)."""
    if not twin:
        return None
    r = (twin.get("rows") or {}).get(row)
    if not r or not r.get("n"):
        raise ValueError(f"--twin: no finished row {row!r} in the twin results (rows: "
                         f"{', '.join(twin.get('rows') or {}) or 'none'})")
    return r


def twin_from_runs(run_dirs: list[Path]) -> dict:
    """A twin row (as ``_twin_row`` returns it) from train-only clipseg-train run folders, one per
    seed (``<run>/baseline``: summary.json or val.csv): each scored by the mean of its last two
    evaluations, per-class IoU of its final weights.  Raises ValueError naming a folder without
    two evaluations."""
    import numpy as np

    from .decisive import _class_iou_summary, final_class_iou, history, score

    per_seed, class_iou = {}, {}
    for i, d in enumerate(run_dirs):
        hist = history(Path(d))
        if len(hist) < 2:
            raise ValueError(f"--twin-run {d}: needs a clipseg-train run folder with at least two "
                             f"evaluations (summary.json or val.csv), found {len(hist)}")
        cfg = Path(d) / "config.yaml"
        seed = i
        if cfg.is_file():
            import yaml

            seed = int(((yaml.safe_load(cfg.read_text()) or {}).get("run") or {}).get("seed", i))
        per_seed[str(seed)] = {"last2": round(score(hist), 3), "best": round(max(m for _, m in hist), 3)}
        ci = final_class_iou(Path(d))
        if ci:
            class_iou[str(seed)] = ci
    last2 = [v["last2"] for v in per_seed.values()]
    row = {"n": len(last2), "mean": round(float(np.mean(last2)), 3),
           "std": round(float(np.std(last2, ddof=1)), 3) if len(last2) > 1 else None,
           "per_seed": per_seed}
    row["class_iou"] = _class_iou_summary({s: {"class_iou": ci} for s, ci in class_iou.items()})
    return row


def _loss_text(recipe: dict, guided: bool, detail: bool) -> str:
    loss = recipe.get("loss") or {}
    ce = ("plain cross-entropy (OHEM keeping every pixel, as the authors' config)"
          if int(loss.get("ohem_min_kept_div") or 16) == 1 else "OHEM cross-entropy")
    if loss.get("class_weight"):
        ce += f" with {loss['class_weight']} class weights"
    parts = [ce, "auxiliary heads"]
    if detail:
        parts.append("STDC detail loss")
    if guided:
        parts.append(f"textual loss with τ = {loss.get('tau')}")
    return ", ".join(parts)


def render(model_path: Path, bench: dict | None = None, live: dict | None = None,
           results: dict | None = None, command: str | None = None, speed_note: str | None = None,
           limits: list[str] | None = None, twin: dict | None = None, twin_row: str = "baseline",
           peer: dict | None = None, twin_run: dict | None = None) -> str:
    """The card as Markdown.  ``twin`` is a ``decisive report`` results.json (its ``twin_row``);
    ``twin_run`` a row made by :func:`twin_from_runs` (it wins when both are given)."""
    from clipseg_ros.model_file import ModelFile

    mf = ModelFile(model_path)
    meta = mf.meta
    prov = meta.provenance or {}
    recipe = prov.get("recipe") or {}
    data, optim = recipe.get("data", {}), recipe.get("optim", {})
    stage = prov.get("stage", "?")
    # the baseline runs stage 1's schedule
    iters = ((recipe.get("stage2" if stage == "stage2" else "stage1") or {}).get("iters")
             if stage in ("stage1", "stage2", "baseline") else None)
    trained_on_val = "val" in trained_splits(prov)
    twin_r = twin_run if twin_run is not None else _twin_row(twin, twin_row)
    guided = bool(meta.arch.get("text_dim"))
    size_mb = model_path.stat().st_size / 1e6
    h, w = meta.input_size or (None, None)
    members = "fp16 PyTorch weights + ONNX graph" + (" + int8 ONNX graph" if meta.int8 else "") + " + metadata"
    if trained_on_val:
        if twin_r and twin_r["n"] > 1:
            acc = (f"| val mIoU | **{twin_r['mean']:.1f}** ± {twin_r['std']:.1f}: the honest estimate, from "
                   f"its train-only twins (same recipe and schedule on the 367 train images, "
                   f"{twin_r['n']} seeds, each scored by the mean of its last two of 10 val evaluations). "
                   f"This file itself trained on val, so its own val score is not an estimate |")
        elif twin_r:
            acc = (f"| val mIoU | **{twin_r['mean']:.1f}**: the honest estimate, from its train-only twin "
                   f"(same recipe and schedule on the 367 train images, one seed (so no spread), scored "
                   f"by the mean of its last two of 10 val evaluations). This file itself trained on "
                   f"val, so its own val score is not an estimate |")
        else:
            acc = "| val mIoU | not measured: this file trained on val, and no train-only twin was given |"
    else:
        acc = (f"| val mIoU | **{prov.get('val_miou', float('nan')):.1f}** (CamVid val, 101 images, at {w}×{h} "
               f"upsampled to the 480×360 labels) |")
    L = [f"# Model card: `{model_path.name}`", "",
         f"The model `seg_node` loads when no `model` parameter is given. It segments street scenes into "
         f"the {len(meta.class_names)} CamVid classes.", "",
         "| | |", "|---|---|",
         f"| network | {meta.arch['name']} context-path segmenter"
         + (f" (1/32 feature widened to {recipe.get('model', {}).get('feat32_channels')} inside the backbone)"
            if (recipe.get("model") or {}).get("feat32_channels") else "")
         + (f", with textual guidance (text width {meta.arch['text_dim']}, baked in: no text encoder "
            "at run time) |" if guided else ", without textual guidance (the baseline twin) |"),
         f"| training | {stage}" + (" of the two-stage method" if stage != "baseline" else "")
         + f"; text: {_text_source(prov)}; split: {prov.get('train_split')} |",
         f"| input | {w}×{h} RGB (frames of any size are resized to it; inside the graph the logits are "
         "upsampled bilinearly to the input size before the argmax; for frames of another size the "
         "labels are then resized nearest-neighbour to the frame) |",
         f"| classes | {', '.join(meta.class_names)} (label 255 = unlabeled) |",
         f"| file | {size_mb:.1f} MB: {members}; sha256 `{_sha256(model_path)[:16]}…` |",
         acc,
         f"| provenance | git {prov.get('git_commit')}, exported {prov.get('exported')}, torch {prov.get('torch')} |",
         "", "## Data and licence", "",
         LICENCE.format(data=DATA_TRAINVAL if trained_on_val else DATA_TRAIN,
                        text=TEXT_GUIDED if guided else TEXT_NONE), "",
         "## Recipe", "",
         f"- ImageNet MobileNetV2 backbone (`{Path(str(recipe.get('model', {}).get('pretrained'))).name}`); "
         + (f"{(recipe.get('stage1') or {}).get('iters', '?')} iterations of stage 1 (fixed class-name "
            f"embeddings), then {iters or '?'} of stage 2: backbone frozen (weights and BN statistics), "
            f"learnable prompts ({(recipe.get('prompt') or {}).get('n_ctx')} context tokens, "
            f"{'class-specific' if (recipe.get('prompt') or {}).get('class_specific') else 'shared'}), "
            f"LR {(recipe.get('stage2') or {}).get('lr')}"
            if stage == "stage2" else f"{iters or '?'} iterations of {stage}")
         + (f" ({iters * int(data.get('batch_size') or 1) / (468 if trained_on_val else 367):.0f} epochs)"
            if iters and stage != "stage2" else "")
         + f"; batch {data.get('batch_size')}, crops {data.get('crop_size')} "
         f"(h, w) from frames scaled by {data.get('scale_range')}, flip and photometric jitter.",
         f"- SGD, LR {optim.get('lr')}{' (stage 1)' if stage == 'stage2' else ''} with poly decay and "
         f"{optim.get('warmup_iters')}-iteration warm-up, "
         f"backbone LR ×{optim.get('backbone_lr_mult')}, weight decay {optim.get('weight_decay')}; "
         + _loss_text(recipe, guided, bool((recipe.get("model") or {}).get("detail_head"))) + ".",
         (f"- Final checkpoint, iteration {prov.get('iteration')} (fixed schedule, nothing selected)."
          if trained_on_val else f"- Best validation checkpoint at iteration {prov.get('iteration')}.")]
    if command:
        L += [f"- Reproduce: `{command}`"
              + ("" if "export" in command else f", then `clipseg-export <out>/{stage}/best.pt default.clipseg`")
              + "."]
    if trained_on_val and twin_r:
        ci = twin_r.get("class_iou") or {}
        n_ci = len(ci.get("per_seed") or {})
        who = (f"the train-only twins, CamVid val, mean of {n_ci} seeds" if n_ci > 1
               else "the train-only twin, CamVid val, one seed")
        L += ["", f"## Validation IoU per class ({who}, final weights)", "", "| class | IoU (%) |", "|---|---:|"]
        for name, iou in zip(ci.get("class_names") or [], ci.get("mean") or []):
            L.append(f"| {name} | {iou:.1f} |")
        L.append(f"| **mean** (last two evaluations) | **{twin_r['mean']:.1f}** |")
        if twin_r["n"] > 1:
            L += ["", "Per seed (mean of the last two evaluations): "
                  + ", ".join(f"{v['last2']:.2f}" for v in twin_r["per_seed"].values()) + "."]
    elif not trained_on_val:
        L += ["", "## Validation IoU per class (CamVid val)", "", "| class | IoU (%) |", "|---|---:|"]
        for name, iou in zip(meta.class_names, prov.get("val_per_class_iou") or []):
            L.append(f"| {name} | {100 * iou:.1f} |")
        L.append(f"| **mean** | **{prov.get('val_miou', float('nan')):.1f}** |")
    if peer:
        L += ["", f"The peer users would otherwise build, torchvision's LR-ASPP head on the same ImageNet "
                  f"MobileNetV2, trained the same way (train only, same schedule, crops and data): "
                  f"**{peer['last2']:.1f}** val mIoU (mean of its last two evaluations; best {peer['best']:.1f})."]
    L += _int8_lines(meta.int8)
    if trained_on_val and meta.int8:
        L += ["  The int8 record's val mIoUs were measured on the CamVid val sample bag, which this file "
              "trained on: they compare int8 with fp32, they do not estimate accuracy."]
    if results:
        L += ["", "How this compares with its baseline twin and across seeds: [docs/results.md]"
                  "(../../docs/results.md)."]
    speed = _speed_lines(bench or {})
    live_l = _live_lines(live or {})
    if speed or live_l:
        L += ["", "## Speed on the development machine", ""] + speed + ([""] if speed and live_l else []) + live_l
        if speed_note:
            L += ["", speed_note]
    n_img = "468 images (CamVid train + val)" if trained_on_val else "367 images"
    L += ["", "## Intended use", "",
          "- Forward-facing street scenes like CamVid's (a car driving in a European city by day, "
          "camera at about 1.2 m): road, pavement, sky, buildings, vegetation, cars, pedestrians, "
          "cyclists, poles, signs, fences.",
          "- A starting point and a demonstration: check it on your own bags with `clipseg-bag-eval` "
          "before you rely on it, and train your own weights for your robot's camera and classes.",
          "", "## Limits", "",
          f"- It was trained on {n_img} from 4 video sequences, all from one city in daylight"
          + (". " if trained_on_val else ", and selected on 101 val frames of one of them. ")
          + "Expect lower accuracy at night, in rain, indoors, off-road, from other viewpoints and with "
          "other cameras.",
          "- Thin and small classes (pole, sign, pedestrian, bicyclist, fence) are the weakest. Do not "
          "use it as the only pedestrian detector on a moving robot: it is not a safety component.",
          f"- It runs at {w}×{h}, so objects much smaller than about 8 pixels at that scale are lost.",
          "- Non-commercial data licence (see above)."]
    if trained_on_val:
        L += ["- The CamVid val sample bag (`make demo`) holds frames it trained on: the mIoU printed there "
              "is not an estimate of its accuracy (`clipseg-bag-eval` says so); use the twins' number above."]
    L += [f"- {x}" for x in limits or []]
    L += [""]
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipseg_training.model_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--out", type=Path, help="card to write (default: next to the model, .md)")
    p.add_argument("--bench", type=Path, help="bench.json of clipseg-bench")
    p.add_argument("--live", type=Path, help="results.json of clipseg-bag-eval live")
    p.add_argument("--results", type=Path, help="results.json of the experiment report")
    p.add_argument("--command", help="the clipseg-train command that produced the checkpoint")
    p.add_argument("--twin", type=Path,
                   help="results.json of `decisive report`: the train-only twins' honest val estimate "
                        "(for a model trained on train+val)")
    p.add_argument("--twin-row", default="baseline", help="which row of --twin (default baseline)")
    p.add_argument("--twin-run", type=Path, action="append", default=[], metavar="DIR",
                   help="a train-only twin's clipseg-train run folder (<run>/baseline), one per seed "
                        "(repeatable; instead of --twin, for a recipe outside the decisive rows)")
    p.add_argument("--peer", type=Path, help="the LR-ASPP peer run's folder (<run>/baseline: summary.json / val.csv; "
                        "train only, same schedule)")
    p.add_argument("--limit", action="append", default=[],
                   help="a measured limit of this model, added under Limits (repeatable)")
    p.add_argument("--speed-note",
                   help="a sentence added under the speed numbers (e.g. which file they were measured on)")
    a = p.parse_args(argv)

    def load(path):
        if path is None:
            return None
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            p.error(f"cannot read {path}: {exc}")

    peer = None
    if a.peer is not None:
        from .decisive import history, score

        hist = history(a.peer)
        if len(hist) < 2:
            p.error(f"--peer {a.peer}: needs a clipseg-train run folder with at least two evaluations "
                    f"(summary.json or val.csv), found {len(hist)}")
        peer = {"last2": score(hist), "best": max(m for _, m in hist)}
    try:
        twin_run = twin_from_runs(a.twin_run) if a.twin_run else None
        text = render(a.model, load(a.bench), load(a.live), load(a.results), a.command, a.speed_note,
                      a.limit, load(a.twin), a.twin_row, peer, twin_run)
    except ValueError as exc:
        p.error(str(exc))
    out = a.out or a.model.with_suffix(".md")
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
