"""Small examples of every "your own data" layout, for the README's commands and for trying them out.

    python -m daamlab.sources.examples data/examples

writes, under that folder (each a few seconds to train on a CPU):
- my_audio/        class folders of 16 wav/flac/ogg clips each at 8-44.1 kHz, mono and stereo, plus a
                   .DS_Store and an AppleDouble ._ file (both skipped and counted)
- speakers/        wavs + metadata.csv (file_name, label, speaker): 6 speakers for group k-fold
- my_images/       train/ and test/ split folders of class folders, images of mixed sizes and modes
- reviews.csv      a text table (text, label) with no split column: a stratified random split
- moods/           an HF `datasets` save_to_disk folder (sentence, ClassLabel y), one split
Everything is a pure function of the folder (fixed seeds); existing files are overwritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

FORMATS = [("wav", 16000, 1), ("flac", 22050, 2), ("ogg", 44100, 1), ("wav", 8000, 2)]
WORDS = {
    "praise": ["great", "lovely", "superb", "works", "recommend", "happy", "perfect", "fast"],
    "complaint": ["broken", "slow", "refund", "awful", "late", "cracked", "rude", "never"],
}


def clip(rng: np.random.Generator, label: int, rate: int, channels: int) -> np.ndarray:
    """A noisy tone: low pitch for class 0, high for class 1, random length 0.4-1.2 s."""
    seconds = rng.uniform(0.4, 1.2)
    t = np.arange(round(seconds * rate)) / rate
    hz = (220.0, 660.0)[label] * rng.uniform(0.9, 1.1)
    wave = 0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(len(t))
    wave = wave.astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_audio(root: Path, rng: np.random.Generator) -> None:
    for c, label in enumerate(("low", "high")):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(16):
            ext, rate, channels = FORMATS[i % len(FORMATS)]
            sf.write(root / label / f"{label}_{i:02d}.{ext}", clip(rng, c, rate, channels), rate)
    (root / "low" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "high" / "._high_00.wav").write_bytes(b"\0\5\26\7AppleDouble")


def write_speakers(root: Path, rng: np.random.Generator) -> None:
    (root / "clips").mkdir(parents=True, exist_ok=True)
    lines = ["file_name,label,speaker"]
    for s in range(6):
        for i in range(8):
            c = i % 2
            name = f"clips/spk{s}_{i}.wav"
            sf.write(root / name, clip(rng, c, 16000, 1), 16000)
            lines.append(f"{name},{('low', 'high')[c]},spk{s}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")


def write_images(root: Path, rng: np.random.Generator) -> None:
    sizes, modes = [(64, 40), (48, 80), (96, 96), (30, 60)], ["RGB", "L", "RGBA", "P"]
    for split, n in (("train", 16), ("test", 6)):
        for c, label in enumerate(("dark", "bright")):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[i % 4]
                pixels = rng.integers(0, 100, size=(h, w, 3)) + 140 * c
                image = Image.fromarray(pixels.astype(np.uint8)).convert(modes[i % 4])
                image.save(root / split / label / f"{label}_{i:02d}.png")


def write_reviews(path: Path, rng: np.random.Generator) -> None:
    lines = ["text,label"]
    for i in range(40):
        label = ("praise", "complaint")[i % 2]
        words = rng.choice(WORDS[label], size=5)
        lines.append(f"{' '.join(words)} {i},{label}")
    path.write_text("\n".join(lines) + "\n")


def write_moods(path: Path, rng: np.random.Generator) -> None:
    import datasets

    sentences, labels = [], []
    for i in range(40):
        label = i % 2
        sentences.append(" ".join(rng.choice(WORDS[("complaint", "praise")[label]], size=4)))
        labels.append(label)
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["down", "up"])}
    )
    dataset = datasets.Dataset.from_dict({"sentence": sentences, "y": labels}, features=features)
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(path))


def write_examples(root: Path) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    write_audio(root / "my_audio", rng)
    write_speakers(root / "speakers", rng)
    write_images(root / "my_images", rng)
    write_reviews(root / "reviews.csv", rng)
    write_moods(root / "moods", rng)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data/examples")
    write_examples(target)
    print(f"wrote my_audio/ speakers/ my_images/ reviews.csv moods/ under {target}")
