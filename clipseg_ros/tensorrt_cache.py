"""Where ONNX Runtime's TensorRT execution provider keeps its engines, and what to tell the user.

Building a TensorRT engine takes minutes on the first start of a model on a GPU; later starts
load it from the cache in seconds.  Each model file gets its own cache folder, named by the
file's sha256, so replacing a model file can never reuse a stale engine built for another one.
The TensorRT timing cache (kernel timings, reusable across builds) is kept beside the engines.
Plain Python: the key logic is tested on any machine; the provider itself only where a GPU is.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

#: sha256 hex digits in a cache folder's name (64 would be unwieldy; 16 = 64 bits)
KEY_DIGITS = 16


def default_cache_root() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "clipseg_ros" / "trt"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorrtCache:
    model_path: Path
    folder: Path          # engines and the timing cache of this model file

    @property
    def has_engine(self) -> bool:
        """True when an engine was built before (ORT writes ``*.engine`` files)."""
        return self.folder.is_dir() and any(p.suffix == ".engine" for p in self.folder.iterdir())

    def provider_options(self, device_id: int, fp16: bool) -> dict:
        return {
            "device_id": device_id,
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.folder),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(self.folder),
            "trt_fp16_enable": bool(fp16),
        }

    def build_notice(self) -> str:
        return (f"building TensorRT engine for {self.model_path} (first start, may take minutes); "
                f"cached in {self.folder}")


def tensorrt_cache(model_path: str | os.PathLike, root: str | os.PathLike | None = None,
                   create: bool = True) -> TensorrtCache:
    """The cache of ``model_path`` under ``root`` (default ``~/.cache/clipseg_ros/trt``):
    ``<root>/<stem>-<sha256[:16]>/``."""
    model_path = Path(model_path)
    key = file_sha256(model_path)[:KEY_DIGITS]
    folder = Path(root) if root is not None else default_cache_root()
    folder = folder / f"{model_path.stem}-{key}"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return TensorrtCache(model_path, folder)
