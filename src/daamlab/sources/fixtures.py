"""Miniature copies of the paper's datasets in their real on-disk formats, for tests and offline demos.

None of IEMOCAP, CIFAR-100 or AG News can be downloaded here, so the tests read these instead:
- `write_iemocap`: an `IEMOCAP_full_release` tree (Session*/dialog/EmoEvaluation/*.txt in the official
  label format, with its header, evaluator lines and per-evaluator subfolders; Session*/sentences/wav)
  holding the cases the protocol must handle: exc (merged into hap), labels outside the 4 classes, a
  long utterance to chunk, a wav at another rate, a stereo wav, and an empty and an unreadable wav.
- `write_cifar100` / `write_agnews`: tiny stand-ins with the hub datasets' columns and features, saved
  with `save_to_disk` or as parquet files laid out like the hub repos.
Everything is a pure function of the arguments (fixed seeds).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
# The evaluator lines that follow every turn in the official files (categorical, then attribute ratings).
EVALUATOR_LINES = (
    "C-E2:\tNeutral;\t()\nC-E3:\tNeutral;\t()\nC-E4:\tNeutral;\t()\nC-F1:\tNeutral;\t(curious)\n"
    "A-E3:\tval 3; act 2; dom  2;\t()\n"
    "A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated but staying polite, attitude)\n"
    "A-F1:\tval 3; act 2; dom  1;\t()\n"
)
# Per session: two dialogs (an improvisation and a script), each a list of (emotion, seconds).
IMPRO_TURNS = [("neu", 0.4), ("hap", 0.5), ("exc", 0.3), ("ang", 0.6), ("sad", 0.4), ("fru", 0.3)]
SCRIPT_TURNS = [("sad", 0.5), ("xxx", 0.3), ("neu", 0.5), ("ang", 0.4), ("sur", 0.3)]
LONG_SECONDS = 11.5  # Session1's script neu turn: 5 s + 5 s + 1.5 s at the paper's 5 s chunks
OTHER_RATE = 22050  # Session2's impro neu turn is stored at this rate
TONE_HZ = 440.0  # the resampled turn is a pure tone, so resampling can be checked by its pitch


@dataclass
class IemocapTurn:
    turn: str  # e.g. Ses01F_impro01_F000
    session: str  # Session1..
    dialog: str
    emotion: str  # as written in the label file (before any merge)
    seconds: float
    wav: Path
    rate: int = 16000
    channels: int = 1
    problem: str | None = None  # "empty" | "unreadable": the source must skip it


@dataclass
class IemocapFixture:
    root: Path  # the IEMOCAP_full_release folder: pass it as data.root
    turns: list[IemocapTurn] = field(default_factory=list)

    def turn(self, **where) -> IemocapTurn:
        """The one turn whose attributes equal `where` (e.g. problem="empty")."""
        found = [t for t in self.turns if all(getattr(t, k) == v for k, v in where.items())]
        if len(found) != 1:
            raise LookupError(f"{len(found)} turns match {where}")
        return found[0]


def _tone(seconds: float, rate: int, hz: float) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _label_line(start: float, seconds: float, turn: str, emotion: str) -> str:
    return f"[{start:.4f} - {start + seconds:.4f}]\t{turn}\t{emotion}\t[2.5000, 2.5000, 2.5000]\n"


def write_iemocap(root: Path, *, sessions: int = 5, with_problems: bool = True) -> IemocapFixture:
    """Write `root/IEMOCAP_full_release` (sessions 1..`sessions`) and describe what it holds.

    Special turns (all in kept classes, so the protocol must deal with them): Session1's script `neu`
    lasts 11.5 s; Session2's impro `neu` is stored at 22,050 Hz (a 440 Hz tone) and its impro `ang` is
    stereo; with `with_problems`, Session3's impro `neu` is an empty wav and its impro `sad` is not a wav.
    """
    release = root / "IEMOCAP_full_release"
    fixture = IemocapFixture(release)
    for k in range(1, sessions + 1):
        session = f"Session{k}"
        label_dir = release / session / "dialog" / "EmoEvaluation"
        for dialog, plan in ((f"Ses0{k}F_impro01", IMPRO_TURNS), (f"Ses0{k}M_script01_1", SCRIPT_TURNS)):
            wav_dir = release / session / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True, exist_ok=True)
            lines, start = [IEMOCAP_HEADER], 2.0
            for index, (emotion, seconds) in enumerate(plan):
                speaker = "FM"[index % 2]
                turn = IemocapTurn(
                    f"{dialog}_{speaker}{index // 2:03d}", session, dialog, emotion, seconds, Path()
                )
                turn.wav = wav_dir / f"{turn.turn}.wav"
                is_impro, first_of = "impro" in dialog, [e for e, _ in plan].index(emotion) == index
                if k == 1 and not is_impro and emotion == "neu":
                    turn.seconds = LONG_SECONDS
                if k == 2 and is_impro and emotion == "neu" and first_of:
                    turn.rate = OTHER_RATE
                if k == 2 and is_impro and emotion == "ang":
                    turn.channels = 2
                if k == 3 and is_impro and with_problems and emotion in ("neu", "sad"):
                    turn.problem = "empty" if emotion == "neu" else "unreadable"
                _write_wav(turn, seed=k * 100 + index)
                lines += [_label_line(start, turn.seconds, turn.turn, emotion), EVALUATOR_LINES, "\n"]
                start += turn.seconds + 0.5
                fixture.turns.append(turn)
            label_dir.mkdir(parents=True, exist_ok=True)
            (label_dir / f"{dialog}.txt").write_text("".join(lines))
            # per-evaluator files live in subfolders of EmoEvaluation; a reader must not take them as labels
            for sub, suffix, text in (
                ("Categorical", "e2_cat", f"{dialog}_F000 :Neutral state; ()\n"),
                ("Attribute", "e3_atr", f"{dialog}_F000 :val 3; act 2; dom  2; ()\n"),
                ("Self-evaluation", "sel", f"[2.0000 - 2.4000]\t{dialog}_F000\tang\t[1.0, 1.0, 1.0]\n"),
            ):
                (label_dir / sub).mkdir(exist_ok=True)
                (label_dir / sub / f"{dialog}_{suffix}.txt").write_text(text)
    return fixture


def _write_wav(turn: IemocapTurn, seed: int) -> None:
    if turn.problem == "unreadable":
        turn.wav.write_bytes(b"RIFF\x00\x00\x00\x00not a wav file")
        return
    if turn.problem == "empty":
        sf.write(turn.wav, np.zeros(0, dtype=np.float32), turn.rate, subtype="PCM_16")
        return
    if turn.rate != 16000:
        wave = _tone(turn.seconds, turn.rate, TONE_HZ)
    else:
        rng = np.random.default_rng(seed)
        wave = _tone(turn.seconds, turn.rate, 200.0 + 20 * (seed % 10)) + 0.05 * rng.standard_normal(
            round(turn.seconds * turn.rate)
        ).astype(np.float32)
    if turn.channels == 2:
        wave = np.stack([wave, 0.5 * wave], axis=1)  # the mix-down is 0.75 * wave
    sf.write(turn.wav, wave, turn.rate, subtype="PCM_16")  # IEMOCAP's wavs are 16-bit PCM


# ---- HF datasets stand-ins ----------------------------------------------------------------------------

CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
    "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
    "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
    "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
    "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
    "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman "
    "worm"
).split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals "
    "trees vehicles_1 vehicles_2"
).split()
AGNEWS_CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
AGNEWS_TEXTS = [
    "Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers are seeing green again.",
    "Phelps Wins Fourth Gold in Athens Pool Michael Phelps won his fourth gold medal on Tuesday.",
    "Oil Prices Climb on Supply Worries Crude oil rose above $45 a barrel on Wednesday.",
    "New Chip Doubles Laptop Battery Life A chipmaker unveiled a low-power processor on Monday.",
    "UN Envoy Meets Leaders in Sudan The envoy held talks on the crisis in Darfur.",
    "Yankees Beat Red Sox in Extra Innings A walk-off single settled the game in the 11th.",
]


def _png(image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _save(dataset_dict, out: Path, fmt: str, parquet_dir: str) -> Path:
    """`disk`: save_to_disk folder; `parquet`: `<out>/<parquet_dir>/<split>-00000-of-00001.parquet` (hub)."""
    if fmt == "disk":
        dataset_dict.save_to_disk(str(out))
    elif fmt == "parquet":
        for split, dataset in dataset_dict.items():
            path = out / parquet_dir / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(path))
    else:
        raise ValueError(f"fmt must be 'disk' or 'parquet', not {fmt!r}")
    return out


def write_cifar100(
    out: Path, *, fmt: str = "disk", train: int = 12, test: int = 6, with_problems: bool = True
):
    """A CIFAR-100 stand-in with `uoft-cs/cifar100`'s columns (img, fine_label, coarse_label): 32x32 PNGs.

    With `with_problems`, train rows 0, 1, 2 are grayscale (L), RGBA and undecodable bytes.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature
    from PIL import Image

    features = Features(
        {
            "img": ImageFeature(),
            "fine_label": ClassLabel(names=CIFAR100_FINE),
            "coarse_label": ClassLabel(names=CIFAR100_COARSE),
        }
    )
    rng = np.random.default_rng(0)

    def split(n: int, problems: bool) -> Dataset:
        images = [_png(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))) for _ in range(n)]
        if problems:
            images[0] = _png(Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L"))
            rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
            rgba[:16, :, 3] = 0  # the top half fully transparent
            images[1] = _png(Image.fromarray(rgba, mode="RGBA"))
            images[2] = {"bytes": b"\x89PNG\r\n\x1a\n truncated", "path": None}
        fine = [i % len(CIFAR100_FINE) for i in range(n)]
        return Dataset.from_dict(
            {"img": images, "fine_label": fine, "coarse_label": [i % 20 for i in fine]}, features=features
        )

    data = DatasetDict({"train": split(train, with_problems), "test": split(test, False)})
    return _save(data, out, fmt, "cifar100")


def write_agnews(out: Path, *, fmt: str = "disk", train: int = 12, test: int = 8, with_problems: bool = True):
    """An AG News stand-in with `fancyzhx/ag_news`'s columns (text, label: World/Sports/Business/Sci/Tech).

    With `with_problems`, train rows 0 and 1 are an empty and a whitespace-only text.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=AGNEWS_CLASSES)})

    def split(n: int, problems: bool) -> Dataset:
        texts = [f"{AGNEWS_TEXTS[i % len(AGNEWS_TEXTS)]} ({i})" for i in range(n)]
        if problems:
            texts[0], texts[1] = "", "  \n\t "
        return Dataset.from_dict({"text": texts, "label": [i % 4 for i in range(n)]}, features=features)

    data = DatasetDict({"train": split(train, with_problems), "test": split(test, False)})
    return _save(data, out, fmt, "data")
