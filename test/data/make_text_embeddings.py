"""Write the tiny class-embedding files the tests use (deterministic; re-run to regenerate).

    python test/data/make_text_embeddings.py            # writes next to this script

They have the documented precomputed format (``embeddings``: float32 K x D, rows L2-normalised;
``class_names``: K strings in the dataset's label order), but the rows are **random unit vectors**
from a seeded generator, not CLIP outputs: they exercise the plumbing (loading, name matching,
centring, class-count checks, training with fixed T) and carry no language knowledge.  The real
CLIP files live in the shared data folder (``text_embeddings/``) and are used by the extra tests
that run where it exists.  ``test_text_encoders.py`` checks that the committed files are exactly
what this script writes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIM = 32
CAMVID = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
          "Pedestrian", "Bicyclist")
CITYSCAPES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
              "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
              "motorcycle", "bicycle")
FILES = {  # name: (class names, seed)
    f"camvid11_random_d{DIM}.npz": (CAMVID, 11),
    f"cityscapes19_random_d{DIM}.npz": (CITYSCAPES, 19),
}
NOTE = "random unit vectors for tests (seeded numpy PCG64), NOT CLIP embeddings"


def embeddings(names, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((len(names), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def contents(name: str) -> dict:
    names, seed = FILES[name]
    return {"embeddings": embeddings(names, seed), "class_names": np.array(names), "note": np.array(NOTE)}


def main(out_dir: Path = HERE) -> None:
    for name in FILES:
        np.savez(out_dir / name, **contents(name))
        print(out_dir / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
