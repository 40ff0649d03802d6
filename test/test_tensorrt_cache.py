"""TensorRT engine cache keys (CPU-testable): one folder per model file keyed by its sha256, the
timing cache beside the engines, the first-build notice; the provider itself runs only on GPUs."""
import shutil

import pytest

from clipseg_ros.tensorrt_cache import KEY_DIGITS, file_sha256, tensorrt_cache


def test_each_model_file_gets_its_own_folder(tmp_path):
    a, b = tmp_path / "a.clipseg", tmp_path / "b.clipseg"
    a.write_bytes(b"model one")
    b.write_bytes(b"model two")
    root = tmp_path / "trt"
    ca, cb = tensorrt_cache(a, root), tensorrt_cache(b, root)
    assert ca.folder != cb.folder and ca.folder.parent == root and ca.folder.is_dir()
    assert ca.folder.name == f"a-{file_sha256(a)[:KEY_DIGITS]}"
    # same bytes under another name: same key, different folder name stem only
    c = tmp_path / "copy.clipseg"
    shutil.copy(a, c)
    assert tensorrt_cache(c, root).folder.name.endswith(file_sha256(a)[:KEY_DIGITS])
    # replacing the file's content moves it to a new folder: a stale engine is never reused
    a.write_bytes(b"model one, retrained")
    assert tensorrt_cache(a, root).folder != ca.folder


def test_provider_options_and_engine_detection(tmp_path):
    m = tmp_path / "m.clipseg"
    m.write_bytes(b"x" * 100)
    cache = tensorrt_cache(m, tmp_path / "trt")
    opts = cache.provider_options(device_id=1, fp16=True)
    assert opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"]
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(cache.folder)
    assert opts["device_id"] == 1 and opts["trt_fp16_enable"] is True
    assert not cache.has_engine
    assert "building TensorRT engine for" in cache.build_notice() and str(m) in cache.build_notice()
    (cache.folder / "TensorrtExecutionProvider_TRTKernel_graph_1.engine").write_bytes(b"e")
    assert cache.has_engine


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        tensorrt_cache(tmp_path / "nope.clipseg", tmp_path)


def _trt_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "TensorrtExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(not _trt_available(), reason="needs onnxruntime-gpu with the TensorRT provider and a GPU")
def test_engine_is_built_once_then_loaded_from_its_cache(tmp_path):
    from clipseg_ros.node import DEFAULT_MODEL
    from clipseg_ros.segmenter import Segmenter

    notes = []
    first = Segmenter(DEFAULT_MODEL, device="cuda", backend="onnxruntime", trt_cache_dir=str(tmp_path),
                      log=notes.append)
    assert first.engine_note.startswith("built") and any("building TensorRT engine" in n for n in notes)
    second = Segmenter(DEFAULT_MODEL, device="cuda", backend="onnxruntime", trt_cache_dir=str(tmp_path))
    assert second.engine_note.startswith("loaded from cache")
