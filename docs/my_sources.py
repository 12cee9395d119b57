import numpy as np

from daamlab.sources.base import Item, Source


class Tones(Source):
    kind, class_names = "audio", ["low", "high"]

    def __init__(self, cfg):
        self.name, self.n = cfg.name, int(cfg.get("per_class", 12))
        self.version = f"tones-1-{self.n}"  # changes whenever the items would

    def splits(self):
        return ["train", "test"]

    def num_items(self, split):
        return 2 * self.n

    def items(self, split):
        t = np.arange(4000) / 16000
        for i in range(self.n):
            for c, hz in enumerate((220, 880)):
                wave = np.sin(2 * np.pi * hz * (1 + i / 50) * t).astype(np.float32)
                yield Item(f"{split}-{c}-{i}", split, self.class_names[c], wave)
