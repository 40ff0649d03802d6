"""Networks: every architecture forward/backward with and without guidance; the score map is the
cosine similarity; the deploy graph; losses use tau; model files round-trip and reject bad files."""
import json
import zipfile

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from clipseg_ros.model_file import ModelFile, ModelFileError, save_model_file
from clipseg_ros.networks import ARCHITECTURES, DeployWrapper, arch_spec, build_from_spec, create_model
from clipseg_ros.segmenter import Segmenter, SegmenterConfigError

torch.set_num_threads(2)


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("text_dim", [None, 64])
def test_forward_backward_every_network(name, text_dim):
    torch.manual_seed(0)
    net = create_model(name, 5, text_dim).train()
    if text_dim:
        net.text_guidance.set_text_embeddings(torch.randn(5, text_dim))
    x = torch.randn(2, 3, 64, 96)
    out = net(x)
    assert out["logits"].shape == (2, 5, 8, 12)            # 1/8 scale
    assert out["aux16"].shape == (2, 5, 8, 12)
    assert out["aux32"].shape == (2, 5, 4, 6)
    assert out["detail"].shape == (2, 1, 8, 12)
    assert ("score_map" in out) == bool(text_dim)
    if text_dim:
        assert out["score_map"].shape == (2, 5, 2, 3)      # 1/32 scale
    loss = sum(v.float().pow(2).mean() for v in out.values())
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    net.eval()
    with torch.no_grad():
        assert set(net(x)) == ({"logits", "score_map"} if text_dim else {"logits"})


def test_baseline_and_guided_twins_differ_only_by_guidance():
    base = create_model("stdc1", 11, None)
    enh = create_model("stdc1", 11, 1024)
    b, e = base.state_dict(), enh.state_dict()
    extra = set(e) - set(b)
    assert extra == {"text_guidance.text_embeddings"}      # C = D = 1024: identity projection
    changed = {k for k in b if b[k].shape != e[k].shape}
    # only the layers fed by [f, S] (last ARM and global context) grow by K input channels
    assert changed == {"arm32.conv.0.weight", "conv_avg.0.weight"}
    assert e["arm32.conv.0.weight"].shape[1] == b["arm32.conv.0.weight"].shape[1] + 11
    mob = create_model("mobilenetv2", 11, 1024).state_dict()
    assert "text_guidance.proj.weight" in mob                 # C = 320 != D = 1024 -> 1x1 projection


def test_score_map_is_cosine_similarity():
    torch.manual_seed(1)
    net = create_model("mobilenetv2", 4, 16).eval()
    text = torch.randn(4, 16)
    feat = torch.randn(2, 320, 3, 5)
    score = net.text_guidance(feat, text)
    proj = net.text_guidance.proj(feat)                       # (2,16,3,5)
    expected = torch.einsum("kd,bdhw->bkhw", F.normalize(text, dim=1), F.normalize(proj, dim=1))
    assert torch.allclose(score, expected, atol=1e-5)
    # a cosine: every value in [-1, 1] and the argument order of T does not matter for scale
    assert score.abs().max() <= 1 + 1e-5
    assert torch.allclose(net.text_guidance(feat, text * 7.0), score, atol=1e-5)
    # the buffer is used when no T is passed
    net.text_guidance.set_text_embeddings(text)
    assert torch.allclose(net.text_guidance(feat), score, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(4, 16\)"):
        net.text_guidance.set_text_embeddings(torch.randn(3, 16))


def test_textual_loss_uses_temperature():
    from clipseg_training.losses import OhemCrossEntropy, SegmentationCriterion

    torch.manual_seed(2)
    score = torch.rand(1, 3, 4, 4) * 2 - 1
    labels = torch.randint(0, 3, (1, 16, 16))
    for tau in (0.07, 0.5):
        crit = SegmentationCriterion(tau=tau)
        expected = OhemCrossEntropy(0.7, 16)(score / tau, labels)
        assert torch.allclose(crit.textual_loss(score, labels), expected)
    assert not torch.allclose(SegmentationCriterion(tau=0.07).textual_loss(score, labels),
                              SegmentationCriterion(tau=1.0).textual_loss(score, labels))


def test_ohem_keeps_hard_pixels_and_min_kept():
    from clipseg_training.losses import OhemCrossEntropy

    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0] = 5.0                     # class 0 very confident everywhere
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, :2] = 1                   # two hard pixels (p(gt) tiny)
    labels[0, 3, 3] = 255                  # ignored
    loss = OhemCrossEntropy(thresh=0.7, min_kept_div=16)(logits, labels)
    hard = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")[0, 0, :2].mean()
    assert torch.allclose(loss, hard)      # only the hard pixels (>= min_kept = 1) count
    # min_kept larger than the hard set: easy pixels are added
    loss_all = OhemCrossEntropy(thresh=0.7, min_kept_div=1)(logits, labels)
    assert loss_all < loss


def test_deploy_wrapper_matches_network():
    torch.manual_seed(3)
    net = create_model("mobilenetv2", 6, None).eval()
    mean, std = [120.0, 110.0, 100.0], [50.0, 60.0, 70.0]
    wrapper = DeployWrapper(net, mean, std).eval()
    img = torch.randint(0, 256, (1, 64, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        labels, conf = wrapper(img)
        x = (img.permute(0, 3, 1, 2).float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        logits = F.interpolate(net(x)["logits"], size=(64, 96), mode="bilinear", align_corners=False)
        prob = logits.softmax(1)
    assert labels.dtype == torch.uint8 and labels.shape == (1, 64, 96)
    assert torch.equal(labels.long(), prob.argmax(1))
    assert torch.allclose(conf, prob.max(1).values, atol=1e-5)


def _known_net(k=4, cls=2):
    net = create_model("mobilenetv2", k, 8)
    net.text_guidance.set_text_embeddings(torch.randn(k, 8))
    with torch.no_grad():
        net.head.conv_out.weight.zero_()
        bias = torch.full((k,), -3.0)
        bias[cls] = 3.0
        net.head.conv_out.bias.copy_(bias)
    return net.eval()


def test_model_file_round_trip_both_backends(tmp_path):
    torch.manual_seed(4)
    net = create_model("mobilenetv2", 5, 32)
    net.text_guidance.set_text_embeddings(torch.randn(5, 32))
    net.eval()
    path = tmp_path / "m.clipseg"
    meta = save_model_file(path, net, ["a", "b", "c", "d", "e"], input_size=[64, 96],
                           provenance={"note": "test"})
    mf = ModelFile(path)
    assert mf.meta.class_names == ["a", "b", "c", "d", "e"] and mf.meta.input_size == [64, 96]
    assert mf.meta.provenance["note"] == "test" and meta.members
    with zipfile.ZipFile(path) as zf:
        assert set(zf.namelist()) == {"meta.json", "weights.pt", "model.onnx"}
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    r_torch = Segmenter(path, device="cpu", backend="torch")(img, want_confidence=True)
    r_ort = Segmenter(path, device="cpu", backend="onnxruntime")(img, want_confidence=True)
    assert r_torch.labels.shape == (120, 160) and r_torch.labels.dtype == np.uint8
    assert (r_torch.labels == r_ort.labels).mean() > 0.999
    assert np.abs(r_torch.confidence - r_ort.confidence).max() < 1e-4
    # training-only heads are not in the deployed file; T is
    state = mf.state_dict()
    assert "text_guidance.text_embeddings" in state and not any(k.startswith(("aux", "detail")) for k in state)


def test_known_output_model(tmp_path):
    path = tmp_path / "known.clipseg"
    save_model_file(path, _known_net(4, 2), ["w", "x", "y", "z"], input_size=[32, 48])
    for backend in ("torch", "onnxruntime"):
        labels = Segmenter(path, device="cpu", backend=backend)(np.zeros((50, 70, 3), np.uint8)).labels
        assert labels.shape == (50, 70) and (labels == 2).all()


def _rewrite(path, out, mutate_meta=None, drop=None, corrupt=None):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    if mutate_meta:
        meta = json.loads(members["meta.json"])
        mutate_meta(meta)
        members["meta.json"] = json.dumps(meta).encode()
    for n in drop or []:
        members.pop(n)
    if corrupt:
        members[corrupt] = members[corrupt][:-10] + b"0123456789"
    with zipfile.ZipFile(out, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return out


def test_bad_model_files_name_the_file_and_problem(tmp_path):
    good = tmp_path / "good.clipseg"
    save_model_file(good, _known_net(), ["w", "x", "y", "z"], input_size=[32, 48])
    cases = {
        "missing": (tmp_path / "nope.clipseg", "does not exist"),
        "truncated": (tmp_path / "trunc.clipseg", "truncated"),
        "classes": (_rewrite(good, tmp_path / "cls.clipseg",
                             lambda m: m.__setitem__("class_names", ["a", "b", "c"])), "3 class names"),
        "palette": (_rewrite(good, tmp_path / "pal.clipseg",
                             lambda m: m.__setitem__("palette", [[0, 0, 0]] * 3)), "palette"),
        "corrupt": (_rewrite(good, tmp_path / "cor.clipseg", corrupt="weights.pt"), "sha256"),
        "meta": (_rewrite(good, tmp_path / "nometa.clipseg", drop=["meta.json"]), "meta.json"),
        "std": (_rewrite(good, tmp_path / "std.clipseg",
                         lambda m: m.__setitem__("std", [1.0, 0.0, 1.0])), "std"),
        "version": (_rewrite(good, tmp_path / "ver.clipseg",
                             lambda m: m.__setitem__("format_version", 99)), "format_version"),
    }
    data = good.read_bytes()
    (tmp_path / "trunc.clipseg").write_bytes(data[: len(data) // 2])
    for name, (path, needle) in cases.items():
        with pytest.raises(ModelFileError) as info:
            Segmenter(path, device="cpu", backend="torch")
        assert str(path) in str(info.value), name
        assert needle in str(info.value), (name, str(info.value))


def test_weights_that_do_not_match_the_architecture(tmp_path):
    good = tmp_path / "good.clipseg"
    save_model_file(good, _known_net(), ["w", "x", "y", "z"], input_size=[32, 48])
    bad = _rewrite(good, tmp_path / "arch.clipseg",
                   lambda m: (m["arch"].__setitem__("name", "stdc1"), m.__setitem__("members", {})))
    with pytest.raises(ModelFileError, match="do not match"):
        Segmenter(bad, device="cpu", backend="torch")


def test_onnx_graph_must_output_the_classes_the_metadata_names(tmp_path):
    """meta.json says 10 classes (names, palette, arch) but the network outputs 11: refused when
    the file is opened, with the file and the mismatch named, for both backends."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from ros_helpers import inconsistent_model

    bad = inconsistent_model(tmp_path / "eleven_as_ten.clipseg")
    for backend in ("onnxruntime", "torch"):
        with pytest.raises(ModelFileError) as info:
            Segmenter(bad, device="cpu", backend=backend)
        msg = str(info.value)
        assert str(bad) in msg and "model.onnx outputs 11 classes" in msg and "describes 10" in msg, msg
    # without the ONNX member the torch weights are what disagrees
    noonnx = _rewrite(bad, tmp_path / "eleven_as_ten_noonnx.clipseg", drop=["model.onnx"],
                      mutate_meta=lambda m: m["members"].pop("model.onnx"))
    with pytest.raises(ModelFileError, match="do not match"):
        Segmenter(noonnx, device="cpu", backend="torch")
    from clipseg_ros.model_file import onnx_num_classes

    # the reader finds the classifier of a guided STDC too (an unguided MobileNetV2 above; the
    # bundled default model, a guided MobileNetV2, is opened by test_default_model.py)
    for name, text_dim in (("stdc1", 16),):
        net = create_model(name, 6, text_dim).eval()
        if text_dim:
            net.text_guidance.set_text_embeddings(torch.randn(6, text_dim))
        path = tmp_path / f"{name}.clipseg"
        save_model_file(path, net, [f"c{i}" for i in range(6)], input_size=[32, 32])
        with zipfile.ZipFile(path) as zf:
            k, weight, dims = onnx_num_classes(zf.read("model.onnx"))
        assert k == 6 and dims[0] == 6 and weight, (name, weight, dims)
    with pytest.raises(ValueError, match="no graph"):
        onnx_num_classes(b"")


def test_onnx_graph_with_other_inputs_or_outputs_is_refused(tmp_path):
    import hashlib

    import onnx

    good = tmp_path / "good.clipseg"
    save_model_file(good, _known_net(), ["w", "x", "y", "z"], input_size=[32, 48])
    with zipfile.ZipFile(good) as zf:
        graph = onnx.load_from_string(zf.read("model.onnx"))
    for node in graph.graph.node:
        node.output[:] = ["conf" if o == "confidence" else o for o in node.output]
    graph.graph.output[1].name = "conf"
    data = graph.SerializeToString()
    bad = tmp_path / "renamed.clipseg"
    with zipfile.ZipFile(good) as zf, zipfile.ZipFile(bad, "w") as out:
        for name in zf.namelist():
            if name == "meta.json":
                meta = json.loads(zf.read(name))
                meta["members"]["model.onnx"] = hashlib.sha256(data).hexdigest()
                out.writestr(name, json.dumps(meta))
            else:
                out.writestr(name, data if name == "model.onnx" else zf.read(name))
    with pytest.raises(ModelFileError) as info:
        Segmenter(bad, device="cpu", backend="onnxruntime")
    assert str(bad) in str(info.value) and "expected 'confidence'" in str(info.value), str(info.value)
    assert (Segmenter(bad, device="cpu", backend="torch")(np.zeros((8, 8, 3), np.uint8)).labels == 2).all()


def test_segmenter_config_errors(tmp_path):
    path = tmp_path / "m.clipseg"
    save_model_file(path, _known_net(), ["w", "x", "y", "z"], input_size=[32, 48])
    with pytest.raises(SegmenterConfigError, match="gpu7"):
        Segmenter(path, device="gpu7")
    with pytest.raises(SegmenterConfigError, match="fp16"):
        Segmenter(path, device="cpu", precision="fp16")
    with pytest.raises(SegmenterConfigError, match="backend"):
        Segmenter(path, device="cpu", backend="tensorflow")
    if not torch.cuda.is_available():
        with pytest.raises(SegmenterConfigError, match="CUDA"):
            Segmenter(path, device="cuda", backend="torch")


def test_arch_spec_round_trip():
    net = create_model("stdc2", 7, 512, detail_head=False, aux_heads=False)
    spec = arch_spec(net)
    assert spec == {"name": "stdc2", "num_classes": 7, "text_dim": 512, "detail_head": False, "aux_heads": False}
    assert arch_spec(build_from_spec(spec)) == spec
    with pytest.raises(ValueError, match="resnet"):
        create_model("resnet", 3)


def _check_mobilenetv2_weights_load(path):
    import torchvision

    net = create_model("mobilenetv2", 3, None, pretrained=str(path))
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(net.backbone.x16[6].conv[0][0].weight, ref.features[13].conv[0][0].weight)
    assert torch.equal(net.backbone.x8[0][0].weight, ref.features[0][0].weight)
    # every backbone tensor, batch-norm statistics included, is the file's features.0-17 tensor
    own = net.backbone.state_dict()
    stage = {**dict.fromkeys(range(7), "x8"), **dict.fromkeys(range(7, 14), "x16"),
             **dict.fromkeys(range(14, 18), "x32")}
    used = {f"{stage[int(k.split('.')[0])]}.{k}": v for k, v in ref.features.state_dict().items()
            if int(k.split(".")[0]) < 18}
    assert set(own) == set(used)
    for key, value in used.items():
        assert torch.equal(own[key], value), key
    with pytest.raises(FileNotFoundError, match="not-there"):
        create_model("mobilenetv2", 3, None, pretrained="/not-there.pth")
    return net


def test_mobilenetv2_weights_load_from_a_torchvision_state_dict(tmp_path):
    """The loader reads torchvision's naming: a randomly initialised torchvision MobileNetV2, saved
    as its state dict (what the ImageNet file is), ends up in our backbone tensor for tensor."""
    import torchvision

    torch.manual_seed(3)
    src = torchvision.models.mobilenet_v2()
    with torch.no_grad():       # non-default batch-norm statistics, so that they are checked too
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "mobilenet_v2-random.pth"
    torch.save(src.state_dict(), path)
    net = _check_mobilenetv2_weights_load(path)
    fresh = create_model("mobilenetv2", 3, None)
    assert not torch.equal(net.backbone.x8[0][0].weight, fresh.backbone.x8[0][0].weight)
    partial = src.state_dict()
    del partial["features.3.conv.1.0.weight"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial.pth do not match the backbone: missing \['x8.3.conv.1.0.weight'\]"):
        create_model("mobilenetv2", 3, None, pretrained=str(tmp_path / "partial.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read MobileNetV2 weights from .*junk.pth"):
        create_model("mobilenetv2", 3, None, pretrained=str(tmp_path / "junk.pth"))


def test_mobilenetv2_imagenet_weights_load(shared_data):
    """Extra, where the shared data exists: the real ImageNet file."""
    _check_mobilenetv2_weights_load(shared_data / "pretrained" / "mobilenet_v2-b0353104.pth")


@pytest.mark.parametrize("backend", ["auto", "onnxruntime"])
def test_cpu_onnxruntime_segmenter_does_not_import_torch(tmp_path, backend):
    """device auto on a machine without an NVIDIA driver: the CPU backend auto picks (OpenVINO
    bf16 on a CPU with native bf16 and OpenVINO installed, else ONNX Runtime), and ONNX Runtime
    asked for by name, never import torch (~0.5 GB RSS, seconds of start-up)."""
    import importlib.util
    import subprocess
    import sys

    from clipseg_ros.devices import cpu_has_native_bf16_flag
    from clipseg_ros.devices import nvidia_driver_present as _nvidia_driver_present

    if _nvidia_driver_present():
        pytest.skip("an NVIDIA driver is present: auto may rightly probe CUDA through torch")
    want = "onnxruntime"
    if backend == "auto" and cpu_has_native_bf16_flag() and importlib.util.find_spec("openvino"):
        want = "openvino"
    path = tmp_path / "known.clipseg"
    save_model_file(path, _known_net(4, 2), ["w", "x", "y", "z"], input_size=[32, 48])
    code = ("import sys, numpy as np\n"
            "from clipseg_ros.segmenter import Segmenter\n"
            f"s = Segmenter({str(path)!r}, backend={backend!r})\n"
            "assert (s(np.zeros((50, 70, 3), np.uint8)).labels == 2).all()\n"
            "print(s.backend, s.device, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [want, "cpu", "False"]


def test_onnxruntime_spinning_is_off_by_default_and_can_be_enabled(tmp_path):
    path = tmp_path / "known.clipseg"
    save_model_file(path, _known_net(4, 2), ["w", "x", "y", "z"], input_size=[32, 48])
    def spinning_entry(seg):
        try:
            return seg._backend._labels_session.get_session_options().get_session_config_entry(
                "session.intra_op.allow_spinning")
        except Exception:  # noqa: BLE001 - unset: ORT's default, spinning on
            return None

    off = Segmenter(path, device="cpu", backend="onnxruntime")
    on = Segmenter(path, device="cpu", backend="onnxruntime", ort_spinning=True)
    assert spinning_entry(off) == "0" and spinning_entry(on) != "0"
    off.want_confidence_soon()          # the full graph's session gets the same options
    assert off._backend.session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning") == "0"
    for seg in (off, on):
        assert (seg(np.zeros((50, 70, 3), np.uint8)).labels == 2).all()


def test_model_file_is_readable_by_others(tmp_path):
    """Written atomically through mkstemp, but with open()'s mode (0666 & ~umask), not 0600."""
    import os
    import stat

    from clipseg_ros.atomic_files import current_umask

    path = tmp_path / "m.clipseg"
    save_model_file(path, _known_net(4, 2), ["w", "x", "y", "z"], input_size=[32, 48])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~current_umask()


@pytest.mark.parametrize("arch,text_dim", [("mobilenetv2", 1024), ("mobilenetv2", 64), ("stdc1", 512)])
def test_folded_text_guidance_is_exact_and_cheaper(arch, text_dim):
    """Inference folds P = QR: S = (T Q)(R f) / ||R f|| equals cos(T, P f), with a C x C conv
    instead of D x C whenever D > C; otherwise nothing changes."""
    from clipseg_ros.networks import inference_network
    from clipseg_ros.networks.text_guidance import FoldedTextGuidance, TextGuidance

    torch.manual_seed(1)
    net = create_model(arch, 6, text_dim).eval()
    net.text_guidance.set_text_embeddings(torch.randn(6, text_dim))
    c = net.text_guidance.in_channels
    x = torch.randn(2, 3, 96, 128)
    folded = inference_network(net)
    with torch.no_grad():
        ref, got = net(x), folded(x)
    if text_dim > c:
        assert folded is not net and isinstance(folded.text_guidance, FoldedTextGuidance)
        assert isinstance(net.text_guidance, TextGuidance), "the caller's network must not change"
        assert folded.text_guidance.reduce.weight.shape == (c, c, 1, 1)
        with pytest.raises(RuntimeError, match="baked in"):
            folded(x, torch.randn(6, text_dim))
    else:
        assert folded is net
    torch.testing.assert_close(got["score_map"], ref["score_map"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["logits"], ref["logits"], atol=1e-4, rtol=1e-4)
    # the deployed graph uses it, and still reproduces the network's labels
    wrapper = DeployWrapper(net, [0.0] * 3, [1.0] * 3).eval()
    img = torch.randint(0, 256, (1, 96, 128, 3), dtype=torch.uint8)
    with torch.no_grad():
        labels, _ = wrapper(img)
        want = F.interpolate(net(img.permute(0, 3, 1, 2).float())["logits"], size=(96, 128),
                             mode="bilinear", align_corners=False).argmax(1)
    assert (labels.long() == want).float().mean() > 0.999


@pytest.mark.parametrize("name", ["stdc1", "mobilenetv2", "lraspp_mobilenetv2"])
def test_deploy_state_dict_drops_exactly_the_training_only_heads(name):
    # The networks own what is training-only; the deployed keys are the full keys minus the
    # auxiliary and detail heads (the literal filter model_file used before the move).
    from clipseg_ros.model_file import deploy_network

    text_dim = None if name.startswith("lraspp") else 16
    net = create_model(name, 5, text_dim)
    full = set(net.state_dict())
    want = {k for k in full if not k.startswith(("aux16.", "aux32.", "detail."))}
    assert set(net.deploy_state_dict()) == want
    assert set(deploy_network(net).state_dict()) == want
    if not name.startswith("lraspp"):
        assert want != full and net.TRAINING_ONLY == ("aux16", "aux32", "detail")


def test_pretrained_file_errors_name_the_file(tmp_path):
    # One reader (networks.pretrained) for both backbones; the messages keep naming the file.
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="MobileNetV2 ImageNet weights not found: .*nowhere.pth"):
        create_model("mobilenetv2", 3, None, pretrained=str(missing))
    with pytest.raises(FileNotFoundError, match="STDC pretrained weights not found: .*nowhere.pth"):
        create_model("stdc1", 3, None, pretrained=str(missing))


def test_cpu_onnxruntime_runs_a_labels_only_graph_when_no_confidence_is_asked(tmp_path):
    """ONNX Runtime computes every output of a graph whatever run() asks for; on CPU the frames
    without confidence run the deploy graph minus its confidence branch: the same labels, bit for
    bit, and the full graph is built only when confidence is first wanted."""
    import onnx

    from clipseg_ros.model_file import ONNX_OUTPUTS
    from clipseg_ros.segmenter import labels_only_graph

    torch.manual_seed(5)
    net = create_model("mobilenetv2", 5, 32)
    net.text_guidance.set_text_embeddings(torch.randn(5, 32))
    path = tmp_path / "m.clipseg"
    save_model_file(path, net.eval(), ["a", "b", "c", "d", "e"], input_size=[64, 96])
    full = ModelFile(path).onnx_bytes
    pruned = onnx.load_from_string(labels_only_graph(full))
    whole = onnx.load_from_string(full)
    assert [o.name for o in pruned.graph.output] == [ONNX_OUTPUTS[0]]
    ops = lambda m: [n.op_type for n in m.graph.node]                    # noqa: E731
    assert "Exp" in ops(whole) and "Exp" not in ops(pruned) and len(ops(pruned)) < len(ops(whole))

    seg = Segmenter(path, device="cpu", backend="onnxruntime", threads=2)
    assert seg._backend.session is None and seg._backend.graph_note
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(3)]
    fast = [seg(f).labels for f in frames]
    assert seg._backend.session is None                   # no confidence asked yet: no full graph
    both = [seg(f, want_confidence=True) for f in frames]
    assert seg._backend.session is not None
    for a, b in zip(fast, both):
        np.testing.assert_array_equal(a, b.labels)
        assert b.confidence is not None and b.confidence.shape == a.shape
    batch = seg.segment_batch(frames)
    for a, r in zip(fast, batch):
        np.testing.assert_array_equal(a, r.labels)
    # the torch backend gives the same labels (the graph is the same network)
    ref = Segmenter(path, device="cpu", backend="torch")
    assert np.mean([(ref(f).labels == a).mean() for f, a in zip(frames, fast)]) > 0.999
    # not the deploy graph's interface: no pruning (the full graph's checks then report it)
    assert labels_only_graph(b"not a graph") is None
    other = onnx.load_from_string(full)
    other.graph.output[1].name = "conf"
    assert labels_only_graph(other.SerializeToString()) is None


def test_skip4_branch_gives_quarter_scale_logits_and_round_trips(tmp_path):
    """model.skip4: the stride-4 refinement adds a classifier on the 1/4 feature; it trains
    (gradients reach it and the 1/4 backbone layers), survives arch_spec and a model file, and
    the two backends agree.  Off, the network is exactly the old one (same parameter names)."""
    torch.manual_seed(5)
    net = create_model("mobilenetv2", 5, 16, skip4=True).train()
    net.text_guidance.set_text_embeddings(torch.randn(5, 16))
    out = net(torch.randn(2, 3, 64, 96))
    assert out["logits"].shape == (2, 5, 16, 24)                 # 1/4 scale
    assert out["detail"].shape == (2, 1, 8, 12) and out["aux16"].shape == (2, 5, 8, 12)
    out["logits"].float().pow(2).mean().backward()
    assert net.skip4.conv_out.weight.grad.abs().sum() > 0
    assert net.backbone.x8[3].conv[0][0].weight.grad.abs().sum() > 0
    plain = create_model("mobilenetv2", 5, 16)
    extra = set(net.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("skip4.") for k in extra)
    assert set(plain.state_dict()) <= set(net.state_dict())
    spec = arch_spec(net)
    assert spec["skip4"] is True and "skip4" not in arch_spec(plain)
    assert arch_spec(build_from_spec(spec)) == spec
    with pytest.raises(ValueError, match="skip4"):
        create_model("stdc1", 5, None, skip4=True)
    net.eval()
    path = tmp_path / "s4.clipseg"
    save_model_file(path, net, list("abcde"), input_size=[64, 96], provenance={})
    assert ModelFile(path).meta.arch["skip4"] is True
    img = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    r_torch = Segmenter(path, device="cpu", backend="torch")(img, want_confidence=True)
    r_ort = Segmenter(path, device="cpu", backend="onnxruntime")(img, want_confidence=True)
    assert (r_torch.labels == r_ort.labels).mean() > 0.999
