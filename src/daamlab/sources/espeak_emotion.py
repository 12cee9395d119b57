"""Acted-emotion speech synthesised with Debian's espeak-ng: the demo stand-in for IEMOCAP.

Each class is a prosody profile (pitch, speed, amplitude, SSML pitch range: `data.emotions`); every
utterance draws its own jitter around its class's profile (`data.jitter`), so the classes overlap,
and white noise at a random SNR (`data.snr_db`). Many voices (`data.voices`: accent + variant)
say sentences drawn at random from one pool, so the words carry no label. The voices are dealt
into `data.num_groups` voice-disjoint groups (`group1`..), used as folds exactly like IEMOCAP's
sessions: one split `all`, leave one group out.

Generated once, deterministically from `data.seed` (given the espeak-ng build; its version is
recorded), into `<data.root>/<version>/` as 16 kHz 16-bit wavs plus `manifest.jsonl`; the folder is
written under a temporary name and renamed, so an interrupted generation is never mistaken for a
finished one. `version` hashes every generation setting, so a changed setting makes a new set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item, waveform_16k

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the synthesis code changes what it writes
SAMPLE_RATE = 16000
INSTALL_HINT = "install the Debian package: sudo apt-get install espeak-ng (or `make run`, which does it)"


@dataclass(frozen=True)
class Utterance:
    """One planned clip: everything espeak-ng and the noise need, so synthesis is a pure function of it."""

    id: str
    voice: str
    group: str
    label: str
    text: str
    pitch: int  # espeak-ng -p, 0..99
    speed: int  # espeak-ng -s, words per minute
    amplitude: int  # espeak-ng -a, 0..200
    pitch_range: str  # SSML <prosody range>
    snr_db: float
    noise_seed: int


def plan_utterances(
    *,
    voices: Sequence[str],
    sentences: Sequence[str],
    emotions: Mapping[str, Mapping],
    clips_per_voice_and_class: int,
    num_groups: int,
    jitter: Mapping[str, float],
    snr_db: Sequence[float],
    seed: int,
) -> list[Utterance]:
    """Every clip's settings, drawn in a fixed order from one seeded generator."""
    if len(voices) < num_groups:
        raise DaamlabError(
            f"espeak_emotion: {len(voices)} voices cannot fill {num_groups} voice-disjoint groups"
        )
    rng = np.random.default_rng(seed)
    dealt = rng.permutation(len(voices))  # voice k goes to group (position of k in this order) % num_groups
    group_of = {voices[v]: f"group{i % num_groups + 1}" for i, v in enumerate(dealt)}
    plan = []
    for v, voice in enumerate(voices):
        for label, profile in emotions.items():
            for k in range(clips_per_voice_and_class):
                pitch = profile["pitch"] + rng.normal(0, jitter["pitch"])
                speed = profile["speed"] * np.exp(rng.normal(0, jitter["speed"]))  # relative jitter
                amplitude = profile["amplitude"] * np.exp(rng.normal(0, jitter["amplitude"]))
                plan.append(
                    Utterance(
                        id=f"v{v:02d}_{label}_{k:02d}",
                        voice=voice,
                        group=group_of[voice],
                        label=label,
                        text=sentences[rng.integers(len(sentences))],
                        pitch=int(np.clip(round(pitch), 0, 99)),
                        speed=int(np.clip(round(speed), 80, 450)),
                        amplitude=int(np.clip(round(amplitude), 5, 200)),
                        pitch_range=profile["range"],
                        snr_db=float(rng.uniform(*snr_db)),
                        noise_seed=int(rng.integers(2**31)),
                    )
                )
    return plan


def espeak_version() -> str:
    if shutil.which("espeak-ng") is None:
        raise DaamlabError(
            f"data 'espeak_emotion' needs the espeak-ng program, which is not installed; {INSTALL_HINT}"
        )
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()  # e.g. 'eSpeak NG text-to-speech: 1.51'


def synthesise(utt: Utterance) -> np.ndarray:
    """The clip at 16 kHz float32: espeak-ng's 22.05 kHz output, resampled, plus white noise at utt.snr_db."""
    ssml = f'<speak><prosody range="{utt.pitch_range}">{escape(utt.text)}</prosody></speak>'
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        args = ["-m", "-v", utt.voice, "-p", str(utt.pitch), "-s", str(utt.speed), "-a", str(utt.amplitude)]
        done = subprocess.run(["espeak-ng", *args, "-w", str(wav), ssml], capture_output=True, text=True)
        if done.returncode != 0 or not wav.is_file():
            raise DaamlabError(f"espeak-ng failed for voice '{utt.voice}': {done.stderr.strip()}")
        audio, rate = sf.read(str(wav), dtype="float32")
    x = waveform_16k(audio, rate)
    signal_power = float(np.mean(x**2)) + 1e-12
    noise = np.random.default_rng(utt.noise_seed).standard_normal(len(x)).astype(np.float32)
    x = x + noise * np.sqrt(signal_power / 10 ** (utt.snr_db / 10))
    return np.clip(x, -1.0, 1.0)


class EspeakEmotionSource:
    name = "espeak_emotion"
    kind = "audio"

    def __init__(self, root: Path, settings: dict, plan: list[Utterance]) -> None:
        self.root, self.settings, self.plan = root, settings, plan
        self.class_names = list(settings["emotions"])
        digest = hashlib.sha256(
            json.dumps([GENERATOR_VERSION, settings], sort_keys=True).encode()
        ).hexdigest()
        self.version = f"espeak_emotion-{GENERATOR_VERSION}-{digest[:16]}"
        self.skipped: list[tuple[str, str]] = []  # (id, reason); synthesis failures stop instead

    @property
    def folder(self) -> Path:
        return self.root / self.version

    def splits(self) -> list[str]:
        return ["all"]

    def num_items(self, split: str) -> int | None:
        self._check_split(split)
        return len(self.plan)

    def _check_split(self, split: str) -> None:
        if split != "all":
            raise DaamlabError(
                f"espeak_emotion has one split 'all' (folds come from data.fold), not '{split}'"
            )

    def generate(self) -> Path:
        """Write every clip and the manifest once; later calls find the finished folder."""
        if (self.folder / "manifest.jsonl").is_file():
            return self.folder
        version = espeak_version()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.version}-", dir=self.root))
        log.info("espeak_emotion: synthesising %d clips into %s (once)", len(self.plan), self.folder)

        def write(utt: Utterance) -> None:
            sf.write(str(tmp / f"{utt.id}.wav"), synthesise(utt), SAMPLE_RATE, subtype="PCM_16")

        try:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # espeak-ng runs as processes
                done = pool.map(write, self.plan)
                bar = tqdm(done, total=len(self.plan), desc="synthesise", unit="clip", mininterval=1.0)
                for _ in bar:  # clips/s and ETA; map yields in order, so the bar follows the slowest
                    pass
            with open(tmp / "manifest.jsonl", "w") as f:
                for utt in self.plan:
                    f.write(json.dumps({**asdict(utt), "espeak_ng": version}) + "\n")
            os.replace(tmp, self.folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.folder

    def items(self, split: str) -> Iterator[Item]:
        self._check_split(split)
        folder = self.generate()
        for utt in self.plan:
            audio, rate = sf.read(str(folder / f"{utt.id}.wav"), dtype="float32")
            yield Item(id=utt.id, group=utt.group, label=utt.label, input=waveform_16k(audio, rate))


PLAN_KEYS = ("voices", "sentences", "emotions", "clips_per_voice_and_class", "num_groups", "jitter", "snr_db")


def plan_settings(cfg: DictConfig) -> dict:
    """The data config's keys that decide the clips (plain values), without the seed."""
    return {
        k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in PLAN_KEYS
    }


def build(cfg: DictConfig) -> EspeakEmotionSource:
    if cfg.get("root") is None:
        raise DaamlabError("data.root is not set: the folder for the generated espeak_emotion clips")
    settings = {**plan_settings(cfg), "seed": cfg.seed}
    plan = plan_utterances(**settings)
    return EspeakEmotionSource(Path(cfg.root), settings, plan)
