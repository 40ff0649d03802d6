"""clipseg_training.datasets and .transforms: CamVid (real frames from the sample bag; the shared
CamVid as an extra), tiny broken/fake trees, augmentations."""
import cv2
import numpy as np
import pytest
import torch

from clipseg_training.datasets import (
    ADE20K_CLASSES, CAMVID_CLASSES, CITYSCAPES_CLASSES, DatasetError, SegmentationDataset, ade20k,
    build_dataset, camvid, cityscapes, folder, validate_index)
from clipseg_training.transforms import (
    IMAGENET_MEAN, IMAGENET_STD, Compose, Normalize, PhotometricDistortion, RandomCrop,
    RandomHorizontalFlip, RandomScale, Resize, ToTensor, default_rng, eval_preset, seed_worker,
    train_preset)

IGN = 255


# ------------------------------------------------------------------------------ helpers
def write_pair(img_path, lab_path, h=24, w=32, label_value=0, seed=0):
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(img_path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    lab = np.full((h, w), label_value, np.uint8) if np.isscalar(label_value) else label_value
    assert cv2.imwrite(str(lab_path), lab)


def tiny_camvid(root, n=3, split="train", with_txt=True):
    lines = []
    for i in range(n):
        write_pair(root / split / f"f{i}.png", root / f"{split}annot" / f"f{i}.png", label_value=i % 12, seed=i)
        lines.append(f"{split}/f{i}.png {split}annot/f{i}.png")
    if with_txt:
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def check_fails(ds, *needles):
    with pytest.raises(DatasetError) as exc:
        validate_index(ds, progress=False)
    msg = str(exc.value)
    for needle in needles:
        assert str(needle) in msg, msg
    return msg


# ------------------------------------------------------------------------------ CamVid layout
# The tiny CamVid that conftest makes from the sample bag's real frames (16 train / 32 val at
# 160x120) on every machine; the real shared CamVid (367 / 101 at 480x360) as an extra.
def check_camvid_index(root, n_train, n_val):
    train, val = camvid(root, "train", train_preset(crop_size=(96, 128))), camvid(root, "val", eval_preset())
    assert (len(train), len(val)) == (n_train, n_val)
    assert train.class_names == list(CAMVID_CLASSES) and train.num_classes == 11
    for ds, split in ((train, "train"), (val, "val")):
        img, lab = ds.pairs[0]
        assert img.parent == root / split and lab.parent == root / f"{split}annot"
        assert img.is_file() and lab.is_file()
    return train, val


def check_camvid_items(train, val, hw):
    item = val[0]
    assert item["image"].shape == (3, *hw) and item["image"].dtype == torch.float32
    assert item["label"].shape == hw and item["label"].dtype == torch.int64
    assert item["path"].endswith(".png")
    values = set(item["label"].unique().tolist())
    assert values <= set(range(11)) | {IGN}
    assert abs(float(item["image"].mean())) < 3                       # normalised
    t = train.get_item(0, rng=np.random.default_rng(0))
    assert t["image"].shape == (3, 96, 128) and t["label"].shape == (96, 128)
    assert set(t["label"].unique().tolist()) <= set(range(11)) | {IGN}
    assert torch.equal(t["image"], train.get_item(0, rng=np.random.default_rng(0))["image"])


def check_validate_index_subset(root, hw):
    ds = camvid(root, "val").limit(12)
    assert len(ds) == 12
    validate_index(ds, progress=False)
    validate_index(ds, progress=True, decode_images=True, workers=2)
    image, label = ds.load(0)
    assert image.dtype == np.uint8 and image.shape == (*hw, 3)
    assert label.dtype == np.uint8 and 11 not in np.unique(label)     # 11 (void) -> 255
    return ds


def test_camvid_layout_from_the_sample_bag(camvid_root):
    train, val = check_camvid_index(camvid_root, 16, 32)
    check_camvid_items(train, val, (120, 160))
    ds = check_validate_index_subset(camvid_root, (120, 160))
    # the void id 11 of the files is the ignore index, pixel for pixel, and the other ids stay
    voids = 0
    for i in range(len(ds)):
        raw = cv2.imread(str(ds.pairs[i][1]), cv2.IMREAD_UNCHANGED)
        _, label = ds.load(i)
        np.testing.assert_array_equal(label == IGN, raw == 11)
        np.testing.assert_array_equal(label[raw != 11], raw[raw != 11])
        voids += int((raw == 11).sum())
    assert voids > 0
    # the images are the sample bag's frames (not noise): CamVid street scenes have sky on top
    _, label = ds.load(0)
    assert (label[:10] == 0).mean() > (label[-10:] == 0).mean()


def test_camvid_real_index(shared_camvid_root):
    train, val = check_camvid_index(shared_camvid_root, 367, 101)
    check_camvid_items(train, val, (360, 480))
    check_validate_index_subset(shared_camvid_root, (360, 480))


# ------------------------------------------------------------------------------ broken datasets
def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="no-such-root"):
        camvid(tmp_path / "no-such-root", "train")
    with pytest.raises(DatasetError, match="no-such-root"):
        build_dataset("folder", tmp_path / "no-such-root", "train")
    ds = camvid(tiny_camvid(tmp_path / "cv"), "train")
    ds.root = tmp_path / "gone"
    check_fails(ds, "gone")


def test_empty_split(tmp_path):
    root = tiny_camvid(tmp_path / "cv")
    with pytest.raises(DatasetError, match="'test'") as exc:
        camvid(root, "test")
    assert str(root) in str(exc.value)
    (root / "val.txt").write_text("\n")
    with pytest.raises(DatasetError, match="'val'"):
        camvid(root, "val")
    (root / "images" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DatasetError, match="empty"):
        folder(root, "train")
    with pytest.raises(DatasetError, match="empty"):
        validate_index(SegmentationDataset([], ["a"]), progress=False)


def test_missing_and_corrupt_files(tmp_path):
    root = tiny_camvid(tmp_path / "cv", n=4)
    (root / "train" / "f0.png").unlink()
    (root / "train" / "f1.png").write_bytes(b"this is not a png")
    full = (root / "train" / "f2.png").read_bytes()
    (root / "train" / "f2.png").write_bytes(full[: len(full) // 2])          # truncated PNG
    (root / "trainannot" / "f3.png").write_bytes(b"")                       # empty label file
    ds = camvid(root, "train")
    msg = check_fails(ds, "4 problem(s)", "missing image file", "f0.png", "unreadable image", "f1.png",
                      "f2.png", "unreadable label", "f3.png")
    assert msg.count("\n  - ") == 4
    with pytest.raises(DatasetError, match="f1.png"):
        ds[1]


def test_size_mismatch(tmp_path):
    root = tiny_camvid(tmp_path / "cv", n=2)
    cv2.imwrite(str(root / "trainannot" / "f1.png"), np.zeros((20, 32), np.uint8))
    ds = camvid(root, "train")
    check_fails(ds, "size mismatch", "f1.png", "32x24", "32x20")
    with pytest.raises(DatasetError, match="size mismatch"):
        ds[1]
    # also when only headers are read (labels not decoded), and for JPEG images
    cv2.imwrite(str(root / "train" / "f0.jpg"), np.zeros((30, 32, 3), np.uint8))
    jds = SegmentationDataset([(root / "train" / "f0.jpg", root / "trainannot" / "f0.png")], ["a"])
    with pytest.raises(DatasetError, match="32x30"):
        validate_index(jds, check_values=False, progress=False)


def test_out_of_range_label_values(tmp_path):
    root = tiny_camvid(tmp_path / "cv", n=2)
    lab = np.zeros((24, 32), np.uint8)
    lab[0, :3] = [12, 40, 11]                               # 11 is void (-> 255), 12 and 40 are not classes
    cv2.imwrite(str(root / "trainannot" / "f1.png"), lab)
    ds = camvid(root, "train")
    msg = check_fails(ds, "f1.png", "12, 40")
    # the reported values only (the message's paths hold tmp_path, e.g. ".../pytest-11/...")
    assert msg.split(" has values ")[1].split(" outside")[0] == "12, 40"
    with pytest.raises(DatasetError, match="12, 40"):
        ds[1]
    validate_index(ds, check_values=False, progress=False)  # sizes only: passes


def test_many_problems_are_summarised(tmp_path):
    pairs = [(tmp_path / f"i{i}.png", tmp_path / f"l{i}.png") for i in range(15)]
    msg = check_fails(SegmentationDataset(pairs, ["a"], root=tmp_path), "30 problem(s)", "and 20 more")
    assert msg.count("\n  - ") == 10


def test_camvid_segnet_paths_and_folder_fallback(tmp_path):
    root = tiny_camvid(tmp_path / "cv", n=2, with_txt=False)
    ds = camvid(root, "train")                                 # no train.txt: list the folders
    assert [p[0].name for p in ds.pairs] == ["f0.png", "f1.png"]
    (root / "train.txt").write_text("/SegNet/CamVid/train/f1.png /SegNet/CamVid/trainannot/f1.png\n")
    ds = camvid(root, "train")
    assert ds.pairs == [(root / "train" / "f1.png", root / "trainannot" / "f1.png")]
    validate_index(ds, progress=False)
    (root / "train.txt").write_text("train/f1.png\n")
    with pytest.raises(DatasetError, match="train.txt:1"):
        camvid(root, "train")


# ------------------------------------------------------------------------------ other layouts
def test_folder_builder(tmp_path):
    root = tmp_path / "fold"
    write_pair(root / "images" / "train" / "b.jpg", root / "labels" / "train" / "b.png", label_value=2)
    write_pair(root / "images" / "train" / "a.png", root / "labels" / "train" / "a.png", label_value=IGN)
    (root / "my_classes.txt").write_text("# comment\ncat\n\ndog\nbird\n")
    ds = build_dataset("folder", root, "train", eval_preset(), classes_file=root / "my_classes.txt")
    assert ds.class_names == ["cat", "dog", "bird"] and [p[0].name for p in ds.pairs] == ["a.png", "b.jpg"]
    validate_index(ds, progress=False)
    assert set(ds[1]["label"].unique().tolist()) == {2} and set(ds[0]["label"].unique().tolist()) == {IGN}
    with pytest.raises(DatasetError, match="classes file not found"):
        folder(root, "train")                                      # default root/classes.txt missing
    (root / "classes.txt").write_text("only\n")
    ds1 = folder(root, "train")
    check_fails(ds1, "b.png", "2")                                 # 1 class: label 2 is out of range


def test_cityscapes_builder(tmp_path):
    root = tmp_path / "cs"
    lab = np.array([[0, 5], [18, 255]], np.uint8).repeat(8, 0).repeat(8, 1)
    for city, stem in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        write_pair(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png",
                   root / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png", 16, 16, lab)
    ds = build_dataset("cityscapes", root, "val", None)
    assert len(ds) == 2 and ds.class_names == list(CITYSCAPES_CLASSES) and len(CITYSCAPES_CLASSES) == 19
    assert ds.pairs[1][1].name == "bonn_000001_000019_gtFine_labelTrainIds.png"
    validate_index(ds, progress=False)
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and set(item["label"].unique().tolist()) == {0, 5, 18, IGN}
    # labelIds only: mapped through the official id -> trainId table
    root2 = tmp_path / "cs2"
    ids = np.array([[7, 26], [0, 33]], np.uint8).repeat(8, 0).repeat(8, 1)
    write_pair(root2 / "leftImg8bit" / "train" / "x" / "x_0_0_leftImg8bit.png",
               root2 / "gtFine" / "train" / "x" / "x_0_0_gtFine_labelIds.png", 16, 16, ids)
    lab2 = cityscapes(root2, "train")[0]["label"]
    assert lab2[0, 0] == 0 and lab2[0, 15] == 13 and lab2[15, 0] == IGN and lab2[15, 15] == 18


def test_ade20k_builder(tmp_path):
    base = tmp_path / "ade" / "ADEChallengeData2016"
    lab = np.array([[0, 1], [150, 151]], np.uint8).repeat(4, 0).repeat(4, 1)
    write_pair(base / "images" / "validation" / "ADE_val_00000001.jpg",
               base / "annotations" / "validation" / "ADE_val_00000001.png", 8, 8, lab)
    for root in (tmp_path / "ade", base):
        ds = ade20k(root, "val")
        assert len(ds) == 1 and ds.class_names == list(ADE20K_CLASSES) and len(ADE20K_CLASSES) == 150
    check_fails(ds, "151 (-> 150)", "ADE_val_00000001.png")
    lab[lab == 151] = 7
    cv2.imwrite(str(ds.pairs[0][1]), lab)
    validate_index(ds, progress=False)
    _, mapped = ds.load(0)
    assert mapped[0, 0] == IGN and mapped[0, 7] == 0 and mapped[7, 0] == 149 and mapped[7, 7] == 6
    with pytest.raises(DatasetError, match="no ade20k images|empty"):
        ade20k(tmp_path / "ade", "train")
    with pytest.raises(DatasetError, match="splits"):
        ade20k(tmp_path / "ade", "test")
    with pytest.raises(DatasetError, match="unknown dataset"):
        build_dataset("pascal", tmp_path, "train")


# ------------------------------------------------------------------------------ transforms
def coded_pair(h=40, w=56, k=6, seed=0):
    """Image whose red channel encodes the x coordinate; label = x // 10 (ignore in one corner)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
    lab = (np.arange(w)[None, :] // 10 % k).repeat(h, 0).astype(np.uint8)
    lab[:5, :5] = IGN
    return img, lab


@pytest.mark.parametrize("seed", range(5))
def test_scale_crop_keep_label_values(seed):
    img, lab = coded_pair()
    rng = np.random.default_rng(seed)
    for t in (RandomScale(0.3, 2.7), RandomCrop(64, 48, IGN, cat_max_ratio=0.75),
              train_preset(crop_size=(32, 32), scale_range=(0.4, 2.5))):
        out_img, out_lab = t(img, lab, rng)
        assert set(np.unique(np.asarray(out_lab)).tolist()) <= set(np.unique(lab).tolist()) | {IGN}
        assert tuple(out_img.shape[-2:] if isinstance(out_img, torch.Tensor) else out_img.shape[:2]) \
            == tuple(out_lab.shape)
    out_img, out_lab = RandomCrop(64, 48, IGN)(img, lab, rng)         # 40 rows padded to 64
    assert out_img.shape == (64, 48, 3) and out_lab.shape == (64, 48)
    assert (out_lab[40:] == IGN).all() and (out_img[40:] == 0).all()
    s_img, s_lab = RandomScale(2.0, 2.0)(img, lab, rng)
    assert s_img.shape == (80, 112, 3) and s_lab.shape == (80, 112) and s_lab.dtype == np.uint8


def test_flip_and_crop_keep_image_and_label_aligned():
    img, lab = coded_pair()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        out_img, out_lab = Compose([RandomCrop(30, 40, IGN), RandomHorizontalFlip(0.5)])(img, lab, rng)
        code = out_lab != IGN
        np.testing.assert_array_equal(out_lab[code], (out_img[..., 0] // 10 % 6)[code])
    f_img, f_lab = RandomHorizontalFlip(1.0)(img, lab)
    np.testing.assert_array_equal(f_img, img[:, ::-1])
    np.testing.assert_array_equal(f_lab, lab[:, ::-1])
    n_img, n_lab = RandomHorizontalFlip(0.0)(img, lab)
    assert n_img is img and n_lab is lab


def test_photometric_resize_normalize_totensor():
    img, lab = coded_pair()
    rng = np.random.default_rng(0)
    p_img, p_lab = PhotometricDistortion(p=1.0)(img, lab, rng)
    assert p_img.dtype == np.uint8 and p_img.shape == img.shape and p_lab is lab and not np.array_equal(p_img, img)
    same, _ = PhotometricDistortion(p=0.0)(img, lab, rng)
    np.testing.assert_array_equal(same, img)
    r_img, r_lab = Resize(20, 28)(img, lab)
    assert r_img.shape == (20, 28, 3) and r_lab.shape == (20, 28)
    assert set(np.unique(r_lab).tolist()) <= set(np.unique(lab).tolist())
    n_img, _ = Normalize(IMAGENET_MEAN, IMAGENET_STD)(img, lab)
    assert n_img.dtype == np.float32
    np.testing.assert_allclose(n_img[1, 2], (img[1, 2] - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rtol=1e-5)
    t_img, t_lab = ToTensor()(n_img, lab)
    assert t_img.shape == (3, 40, 56) and t_lab.dtype == torch.int64
    # eval preset: native by default; with a size only the image is resized
    e_img, e_lab = eval_preset()(img, lab)
    assert e_img.shape == (3, 40, 56) and torch.equal(e_lab, torch.from_numpy(lab).long())
    e_img, e_lab = eval_preset(size=[20, 24])(img, lab)
    assert e_img.shape == (3, 20, 24) and e_lab.shape == (40, 56)


def test_augmentation_is_reproducible():
    img, lab = coded_pair(60, 80)
    t = train_preset(crop_size=(32, 40), scale_range=(0.5, 2.0))
    a = t(img, lab, np.random.default_rng(123))
    b = t(img, lab, np.random.default_rng(123))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outs = {t(img, lab, np.random.default_rng(s))[0].sum().item() for s in range(8)}
    assert len(outs) > 1
    # without an explicit generator: the per-process one, which follows torch.initial_seed()
    torch.manual_seed(7)
    c = t(img, lab)
    torch.manual_seed(8)
    e = t(img, lab)
    torch.manual_seed(7)
    d = t(img, lab)
    assert torch.equal(c[0], d[0]) and torch.equal(c[1], d[1]) and not torch.equal(c[0], e[0])
    torch.manual_seed(11)
    seed_worker(0)
    x = default_rng().random(3)
    seed_worker(0)                                         # explicit reseed, same torch seed
    np.testing.assert_array_equal(x, default_rng().random(3))


def test_dataloader_workers_are_reproducible(tmp_path):
    root = tiny_camvid(tmp_path / "cv", n=4)
    ds = camvid(root, "train", train_preset(crop_size=(16, 16), scale_range=(0.5, 1.5)))

    def run():
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, worker_init_fn=seed_worker,
                                             generator=torch.Generator().manual_seed(3))
        return [b["image"] for b in loader]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_joined_splits_train_on_train_and_val(tmp_path):
    """``data.train_split: train+val`` (the shipped model's fixed schedule): both splits, in order,
    as one dataset; overlapping or malformed joins are errors naming the split."""
    from clipseg_training.datasets import build_dataset

    root = tiny_camvid(tmp_path / "cv", n=3)
    tiny_camvid(tmp_path / "cv", n=2, split="val")
    train, val = build_dataset("camvid", root, "train"), build_dataset("camvid", root, "val")
    both = build_dataset("camvid", root, "train+val")
    assert len(both) == len(train) + len(val) == 5
    assert both.pairs == train.pairs + val.pairs and both.split == "train+val"
    image, label = both.load(4)
    want_image, want_label = val.load(1)
    np.testing.assert_array_equal(image, want_image)
    np.testing.assert_array_equal(label, want_label)
    with pytest.raises(DatasetError, match=r"'train\+train'.*distinct"):
        build_dataset("camvid", root, "train+train")
    with pytest.raises(DatasetError, match=r"'train\+'"):
        build_dataset("camvid", root, "train+")
    # a listing that puts a train image into val too
    first_train = (root / "train.txt").read_text().splitlines()[0]
    (root / "val.txt").write_text((root / "val.txt").read_text() + first_train + "\n")
    with pytest.raises(DatasetError, match=r"is in both 'train' and 'val'"):
        build_dataset("camvid", root, "train+val")
