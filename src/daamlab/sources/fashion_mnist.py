"""Fashion-MNIST from Debian's `dataset-fashion-mnist` (idx.gz files): the demo stand-in for CIFAR-100.

60,000 train / 10,000 test 28x28 grey images in 10 balanced classes. `data.train_size` /
`data.test_size` take a class-balanced random subset (seeded by `data.subset_seed`; null keeps the
whole split) so the first extraction fits a CPU budget. Items are RGB PIL images (grey copied to
three channels); the encoder does the resizing and scaling. Splits `train` and `test`, as CIFAR's.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FILES = {  # split -> (images, labels), the names the Debian package installs
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
INSTALL_HINT = "install the Debian package: sudo apt-get install dataset-fashion-mnist (or `make run`)"


def read_idx(data: bytes) -> np.ndarray:
    """An idx array (the MNIST format): uint8 images (n, rows, cols) or labels (n,)."""
    ndim = data[3]
    shape = tuple(int(s) for s in np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4"))
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


def balanced_subset(labels: np.ndarray, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices: `size` rows with the classes as equal as `size` allows (all rows if None)."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    per_class = np.full(len(classes), size // len(classes))
    per_class[: size % len(classes)] += 1
    picked = [
        rng.choice(np.flatnonzero(labels == c), n, replace=False)
        for c, n in zip(classes, per_class, strict=True)
    ]
    return np.sort(np.concatenate(picked))


class FashionMnistSource:
    name = "fashion_mnist"
    kind = "image"
    class_names = CLASS_NAMES

    def __init__(self, root: Path, sizes: dict[str, int | None], subset_seed: int) -> None:
        missing = [f for pair in FILES.values() for f in pair if not (root / f).is_file()]
        if missing:
            raise DaamlabError(f"Fashion-MNIST files {missing} are not in {root}; {INSTALL_HINT}")
        self.root, self.sizes, self.subset_seed = root, sizes, subset_seed
        self.skipped: list[tuple[str, str]] = []  # nothing is skipped: the idx files are read whole
        digest = hashlib.sha256()
        for pair in FILES.values():  # the compressed files: cheap, and enough to tell copies apart
            for f in pair:
                digest.update((root / f).read_bytes())
        subset = f"{sizes['train']}-{sizes['test']}-{subset_seed}"
        self.version = f"fashion_mnist-1-{digest.hexdigest()[:12]}-{subset}"
        self._loaded: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def _load(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """split -> (images, labels, the subset's rows); decoded on first use (a cached run needs none)."""
        if self._loaded is None:
            rng = np.random.default_rng(self.subset_seed)
            self._loaded = {}
            for split, (images_file, labels_file) in FILES.items():
                images = read_idx(gzip.decompress((self.root / images_file).read_bytes()))
                labels = read_idx(gzip.decompress((self.root / labels_file).read_bytes()))
                self._loaded[split] = images, labels, balanced_subset(labels, self.sizes[split], rng)
        return self._loaded

    def splits(self) -> list[str]:
        return list(FILES)

    def num_items(self, split: str) -> int | None:
        return len(self._load()[split][2])

    def items(self, split: str) -> Iterator[Item]:
        images, labels, rows = self._load()[split]
        for i in rows:
            image = Image.fromarray(images[i]).convert("RGB")
            yield Item(id=f"{split}_{i:05d}", group=split, label=CLASS_NAMES[labels[i]], input=image)


def build(cfg: DictConfig) -> FashionMnistSource:
    sizes = {"train": cfg.train_size, "test": cfg.test_size}
    return FashionMnistSource(Path(cfg.root), sizes, cfg.subset_seed)
