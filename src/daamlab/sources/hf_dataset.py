"""data=hf_dataset: any HF `datasets` dataset, by hub id or local path, with the generic protocol.

`data.dataset` is a hub id (with HF_HUB_OFFLINE=1 only the HF cache is used), a `save_to_disk`
folder, or a local folder / file `datasets.load_dataset` reads (parquet, csv, json, imagefolder...);
`data.config` its configuration name. `data.splits` picks splits (null: all); their names are
normalised (train, validation/valid/dev, test) and the protocol (generic.py) applies as to a split
column: a dataset with one split gets a random split or folds. The input column's feature decides
the kind: Image -> image, Audio -> audio (16 kHz mono, chunked by `data.chunk_seconds`), string ->
text; `data.kind` overrides it. ClassLabel labels are read by name, any other label as a string.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from daamlab.errors import DaamlabError
from daamlab.sources._hub import _first_line
from daamlab.sources.audio_folder import AudioReader, chunk_seconds_of
from daamlab.sources.cifar100 import ImageDecoder
from daamlab.sources.generic import GenericSource, Protocol, Row, assign, require_columns

log = logging.getLogger(__name__)
KINDS = ("audio", "image", "text")


def load(cfg: DictConfig):
    """The DatasetDict named by data.dataset (+ data.config)."""
    import datasets

    name = cfg.get("dataset")
    if not name:
        raise DaamlabError("data.dataset is not set: give a hub id (data.dataset=user/name) or a local path")
    local = Path(str(name)).expanduser()
    config = cfg.get("config")
    try:
        if (local / "dataset_dict.json").is_file() or (local / "dataset_info.json").is_file():
            dataset = datasets.load_from_disk(str(local))
        elif local.is_file():
            builder = {
                ".csv": "csv",
                ".tsv": "csv",
                ".jsonl": "json",
                ".json": "json",
                ".parquet": "parquet",
            }.get(local.suffix.lower())
            if builder is None:
                raise DaamlabError(
                    f"data.dataset={local}: a file must be .csv, .tsv, .jsonl, .json or .parquet"
                )
            extra = {"delimiter": "\t"} if local.suffix.lower() == ".tsv" else {}
            dataset = datasets.load_dataset(builder, data_files=str(local), **extra)
        else:
            dataset = datasets.load_dataset(str(local) if local.exists() else str(name), config)
    except DaamlabError:
        raise
    except (OSError, ValueError, FileNotFoundError) as e:
        offline = (
            " (HF_HUB_OFFLINE=1: only datasets already in the HF cache can be loaded)"
            if not local.exists()
            else ""
        )
        raise DaamlabError(f"data.dataset={name} could not be loaded{offline}: {_first_line(e)}") from None
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    return dataset


def detect_kind(feature: Any, column: str, where: str) -> str:
    from datasets import Audio, Image, Value

    if isinstance(feature, Image):
        return "image"
    if isinstance(feature, Audio):
        return "audio"
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "text"
    raise DaamlabError(
        f"{where}: input column '{column}' holds {feature}, which is not Image, Audio or text; "
        "set data.kind=audio|image|text if it can be read as one"
    )


class HFReader:
    """Row (split, index) -> the model input of the input column, decoded per row."""

    def __init__(self, dataset, column: str, kind: str, chunk_seconds: float) -> None:
        self.dataset, self.column, self.kind = dataset, column, kind
        self.images, self.audio = ImageDecoder(), AudioReader(chunk_seconds)

    def __call__(self, row: Row) -> tuple[list[Any] | None, str | None]:
        split, index = row.ref
        value = self.dataset[split][index][self.column]
        if self.kind == "image":
            image, reason = self.images(value)
            return ([image], None) if image is not None else (None, reason)
        if self.kind == "audio":
            if not isinstance(value, dict) or not (value.get("bytes") or value.get("path")):
                return None, "no audio data"
            wave, reason = self.audio.decode(
                io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
            )
            if wave is None:
                return None, reason
            return self.audio.chunk(wave), None
        if not isinstance(value, str) or not value.strip():
            return None, "empty text"
        return [value], None


def build(cfg: DictConfig) -> GenericSource:
    """`cfg` is the `data` node (configs/data/hf_dataset.yaml)."""
    from datasets import Audio, ClassLabel, Image

    dataset = load(cfg)
    where = f"data.dataset={cfg.dataset}" + (f" (config {cfg.config})" if cfg.get("config") else "")
    wanted = cfg.get("splits")
    if wanted is not None:
        wanted = [wanted] if isinstance(wanted, str) else [str(s) for s in wanted]
        missing = [s for s in wanted if s not in dataset]
        if missing:
            raise DaamlabError(f"{where} has the splits {sorted(dataset)}, not {missing}; set data.splits")
        dataset = dataset.__class__({s: dataset[s] for s in wanted})
    input_column, label_column = cfg.get("input_column"), cfg.get("label_column", "label")
    group_column = cfg.get("group_column")
    first = next(iter(dataset.values()))
    require_columns(
        first.column_names,
        {
            "data.input_column": input_column,
            "data.label_column": label_column,
            "data.group_column": group_column,
        },
        where,
    )
    kind = cfg.get("kind") or detect_kind(first.features[input_column], input_column, where)
    if kind not in KINDS:
        raise DaamlabError(f"data.kind={kind!r} must be one of {', '.join(KINDS)}")
    if kind == "image":
        dataset = dataset.cast_column(input_column, Image(decode=False))  # decoded per row, skips counted
    elif kind == "audio":
        dataset = dataset.cast_column(input_column, Audio(decode=False))  # soundfile decodes; 16 kHz mono
    one_split = len(dataset) == 1
    rows = []
    for split, part in dataset.items():
        feature = part.features[label_column]
        labels = part[label_column]
        if isinstance(feature, ClassLabel):
            labels = [feature.int2str(v) if v is not None and v >= 0 else None for v in labels]
        groups = part[group_column] if group_column else [None] * len(part)
        rows += [
            Row(
                id=f"{split}-{i:06d}",
                label=None if label is None else str(label),
                ref=(split, i),
                split=None if one_split else split,  # one split: the protocol splits it
                group=None if group is None else str(group),
            )
            for i, (label, group) in enumerate(zip(labels, groups, strict=True))
        ]
    protocol = Protocol.from_cfg(cfg)
    assignment = assign(rows, protocol, where)
    chunk_seconds = chunk_seconds_of(cfg)
    reader = HFReader(dataset, input_column, kind, chunk_seconds)
    fingerprints = sorted((s, len(d), d._fingerprint) for s, d in dataset.items())
    return GenericSource(
        name=str(cfg.name),
        kind=kind,
        where=where,
        assignment=assignment,
        read=reader,
        version_parts=[protocol.describe(), input_column, kind, chunk_seconds, fingerprints],
    )
