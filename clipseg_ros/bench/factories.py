"""Model preparation: export each selected network once, derive one model file per size."""
from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic_files import atomic_write_bytes
from ..conventions import IMAGENET_MEAN, IMAGENET_STD
from .catalogue import PACKAGED_DEFAULT, BenchError, ModelSpec, size_name


def _class_names_palette():
    from ..visualize import CAMVID_CLASSES, CAMVID_PALETTE

    return list(CAMVID_CLASSES), np.asarray(CAMVID_PALETTE).tolist()


def _random_network(arch: str, text_dim: int | None, num_classes: int, feat32: int | None = None,
                    skip4: bool = False):
    import torch

    from ..networks import create_model

    net = create_model(arch, num_classes, text_dim, feat32_channels=feat32, skip4=skip4)
    if net.text_guidance is not None:
        net.text_guidance.set_text_embeddings(torch.randn(num_classes, text_dim))
    return net.eval()


def with_input_size(src: Path, dst: Path, input_hw, label: str | None = None) -> Path:
    """Copy a model file with another ``input_size`` in its metadata.

    The ONNX graph has dynamic height/width and the weights do not depend on the size, so one
    export serves every size.  A scratch file: stored uncompressed and not fsynced (deflating and
    syncing the members again took seconds per copy).  Checked by loading it (``ModelFile``
    verifies the metadata and every member's sha256).
    """
    from ..model_file import META_NAME, ModelFile

    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(members[META_NAME])
    meta["input_size"] = [int(input_hw[0]), int(input_hw[1])]
    if label:
        meta.setdefault("provenance", {})["bench_label"] = label
    members[META_NAME] = json.dumps(meta, indent=2).encode()
    dst = Path(dst)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    atomic_write_bytes(dst, buf.getvalue())
    ModelFile(dst)
    return dst


class _TVAdapter:
    """torchvision segmentation model -> ``{"logits": 1/8-scale logits}`` (what DeployWrapper expects).

    The model's own final upsampling is skipped: DeployWrapper upsamples once, as for our models.
    """

    @staticmethod
    def build(tv_name: str, num_classes: int):
        import torch
        from torch import nn
        from torchvision.models import segmentation as tvseg

        model = getattr(tvseg, tv_name)(weights=None, weights_backbone=None, num_classes=num_classes).eval()

        class Adapter(nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m
                self.lraspp = isinstance(m, tvseg.LRASPP)

            def forward(self, x: torch.Tensor):
                feats = self.m.backbone(x)
                out = self.m.classifier(feats if self.lraspp else feats["out"])
                return {"logits": out}

        return Adapter(model).eval()


@dataclass
class PreparedModel:
    spec: ModelSpec
    label: str
    files: dict = field(default_factory=dict)       # size name -> model file (clipseg models)
    network: Any = None                             # deploy network (torch-raw rows; tv adapter)
    onnx_bytes: bytes | None = None                 # tv models
    onnx_path: Path | None = None                   # tv models: the graph written to a file
    mean: list | None = None
    std: list | None = None
    params: int | None = None
    note: str = ""
    error: str | None = None
    native: bool = False                            # default-native: keeps the file's input size


class ModelFactory:
    """Exports each selected model once (per architecture), then derives one file per size."""

    def __init__(self, workdir: Path, want_onnx: bool, default_path: Path | None, log: Callable[[str], None]):
        self.workdir = Path(workdir)
        self.want_onnx = want_onnx
        self.log = log
        self.class_names, self.palette = _class_names_palette()
        self._base: dict[tuple, Path] = {}
        self.default_path, self.default_label = self._default(default_path)

    # the default model -------------------------------------------------------------------
    @staticmethod
    def _default(override: Path | None) -> tuple[Path, str]:
        if override is None:
            if not PACKAGED_DEFAULT.is_file():
                raise BenchError(f"no default model at {PACKAGED_DEFAULT}; pass --model PATH")
            return PACKAGED_DEFAULT, "default (packaged)"
        from ..model_file import ModelFile, ModelFileError

        p = Path(override)
        if not p.is_file():
            raise BenchError(f"--model {p}: no such file")
        try:
            ModelFile(p)
        except ModelFileError as exc:
            raise BenchError(str(exc)) from None
        return p, f"default ({p.name})"

    # clipseg exports -----------------------------------------------------------------------
    def _export(self, arch: str, text_dim: int | None, input_hw, feat32: int | None = None,
                skip4: bool = False) -> Path:
        key = (arch, text_dim, feat32, skip4)
        if key not in self._base:
            import torch

            from ..model_file import save_model_file

            torch.manual_seed(0)
            net = _random_network(arch, text_dim, len(self.class_names), feat32, skip4)
            wide = (f"-f{feat32}" if feat32 else "") + ("-skip4" if skip4 else "")
            path = self.workdir / f"{arch}{wide}-{'enh' if text_dim else 'base'}.clipseg"
            t0 = time.perf_counter()
            save_model_file(path, net, self.class_names, palette=self.palette,
                            input_size=list(input_hw), onnx=self.want_onnx,
                            provenance={"bench": "random weights"})
            self.log(f"exported {path.name} ({time.perf_counter() - t0:.1f} s)")
            self._base[key] = path
        return self._base[key]

    def prepare(self, spec: ModelSpec, sizes: list[tuple[int, int]]) -> PreparedModel:
        from ..model_file import ModelFile

        # the graphs have dynamic height / width: the first size only sets the export's trace size
        trace_hw = (sizes[0][1], sizes[0][0])
        if spec.tv:
            return self._prepare_tv(spec, trace_hw)
        if spec.family == "default":
            base, label = self.default_path, self.default_label
        else:
            base, label = self._export(spec.arch, spec.text_dim, trace_hw, spec.feat32, spec.skip4), spec.key
        pm = PreparedModel(spec, label)
        mf = ModelFile(base)
        pm.mean, pm.std = mf.meta.mean, mf.meta.std
        if spec.family == "default" and self.want_onnx and mf.onnx_bytes is None:
            pm.note = "file has no ONNX graph"
        if spec.variant == "deployed":
            hw = mf.meta.input_size
            pm.label = f"{label} native {hw[1]}x{hw[0]}" if hw else f"{label} native"
            if spec.precision:
                pm.label += f" {spec.precision}"
            pm.native = True
            for wh in sizes:
                pm.files[size_name(wh)] = base
        else:
            for wh in sizes:
                dst = self.workdir / f"{spec.key}-{size_name(wh)}.clipseg"
                pm.files[size_name(wh)] = with_input_size(base, dst, (wh[1], wh[0]))
        if mf.has_torch_weights:
            pm.network = mf.build_network()
            pm.params = int(sum(p.numel() for p in pm.network.parameters()))
        return pm

    def _prepare_tv(self, spec: ModelSpec, trace_hw) -> PreparedModel:
        import torch

        from ..model_file import export_onnx_bytes
        from ..networks import DeployWrapper

        torch.manual_seed(0)
        pm = PreparedModel(spec, spec.key, note="torchvision, random weights")
        pm.network = _TVAdapter.build(spec.tv, len(self.class_names))
        pm.params = int(sum(p.numel() for p in pm.network.parameters()))
        pm.mean, pm.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        if self.want_onnx:
            t0 = time.perf_counter()
            try:
                pm.onnx_bytes = export_onnx_bytes(DeployWrapper(pm.network, pm.mean, pm.std).eval(),
                                                  trace_hw)
                # a file of its own: it names the graph in errors and keys the TensorRT cache
                pm.onnx_path = self.workdir / f"{spec.key}.onnx"
                pm.onnx_path.write_bytes(pm.onnx_bytes)
                self.log(f"exported {spec.key} to ONNX ({time.perf_counter() - t0:.1f} s)")
            except Exception as exc:  # noqa: BLE001 - reported in the rows
                pm.note += f"; ONNX export failed: {exc}"
        return pm
