"""The training data pipeline: datasets from the config, the deterministic resumable sampler, loaders.

:func:`build_data` builds the train / val datasets (with their transforms, limits, index check and
decoded-image cache); :class:`EpochSampler` and :class:`SeededItems` make each item's order and
augmentation depend only on (seed, epoch, position), so resume and multi-worker loading reproduce
an uninterrupted run; :func:`make_loader` / :func:`make_val_loader` wrap them in DataLoaders.
"""
from __future__ import annotations

import numpy as np
import torch


# --------------------------------------------------------------------------- sampling
class EpochSampler(torch.utils.data.Sampler):
    """Deterministic shuffled order per (seed, epoch), sharded across ranks, resumable mid-epoch.

    Yields ``(index, item_seed)`` so augmentation randomness depends only on the seed, the epoch
    and the position, never on worker scheduling: resume and multi-worker loading reproduce it.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch, self.start_batch = 0, 0
        self.batches_per_epoch = size // (batch_size * world)
        if self.batches_per_epoch < 1:
            raise ValueError(f"{size} training images are fewer than one batch of {batch_size} x {world} ranks")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        per_rank = self.batches_per_epoch * self.batch_size
        mine = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        for pos in range(self.start_batch * self.batch_size, per_rank):
            yield mine[pos], (self.seed, self.epoch, self.rank, pos)


class SeededItems(torch.utils.data.Dataset):
    """Indexes the dataset with ``(index, seed_tuple)``: each item's augmentation uses its own
    ``numpy.random.Generator`` seeded from that tuple."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        idx, seed = key
        return self.dataset.get_item(idx, rng=np.random.default_rng(list(seed) + [idx]))


# --------------------------------------------------------------------------- data
def build_data(cfg: dict, rank: int, world: int, validate: bool):
    """The (train, val) datasets the config names; val is None without ``data.val_split``."""
    from .datasets import build_dataset, validate_index
    from .transforms import eval_preset, train_preset

    d = cfg["data"]
    common = {"classes_file": d["classes_file"]}
    train_set = build_dataset(
        d["dataset"], d["root"], d["train_split"],
        train_preset(crop_size=tuple(d["crop_size"]), scale_range=tuple(d["scale_range"]),
                     mean=d["mean"], std=d["std"], cat_max_ratio=d["cat_max_ratio"],
                     scale_step=d["scale_step"]), **common)
    val_set = None
    if d["val_split"]:
        val_set = build_dataset(d["dataset"], d["root"], d["val_split"],
                                eval_preset(size=d["eval_size"], mean=d["mean"], std=d["std"]), **common)
    if d["limit_train"]:
        train_set.limit(int(d["limit_train"]))
    if val_set is not None and d["limit_val"]:
        val_set.limit(int(d["limit_val"]))
    if validate and d["validate_index"]:
        validate_index(train_set, progress=cfg["run"]["progress"])
        if val_set is not None:
            validate_index(val_set, progress=cfg["run"]["progress"])
    if d["cache_mb"]:
        budget = float(d["cache_mb"])
        for ds in (train_set, val_set):
            if ds is None:
                continue
            info = ds.cache(budget, progress=cfg["run"]["progress"] and rank == 0)
            budget -= info["mb"]
            if rank == 0:
                note = "" if info["cached"] == info["total"] else \
                    f" (data.cache_mb={d['cache_mb']} reached; the rest is decoded per epoch)"
                print(f"data cache: {ds.split or ds.name} {info['cached']}/{info['total']} images, "
                      f"{info['mb']:.0f} MB{note}", flush=True)
    return train_set, val_set


def make_loader(dataset, sampler, batch_size, workers, device):
    return torch.utils.data.DataLoader(
        SeededItems(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=False)


def collate_same_size(items: list[dict]):
    """Stack a validation batch when its images share one size; otherwise a list of one-image
    batches (datasets whose frames differ in size still validate at native resolution)."""
    default = torch.utils.data.default_collate
    if len({tuple(i["image"].shape) for i in items}) == 1 and len({tuple(i["label"].shape) for i in items}) == 1:
        return default(items)
    return [default([i]) for i in items]


def make_val_loader(dataset, rank, world, workers, batch_size=1):
    indices = list(range(rank, len(dataset), world))
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                       shuffle=False, num_workers=workers, collate_fn=collate_same_size)
