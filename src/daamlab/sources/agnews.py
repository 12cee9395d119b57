"""AG News via HF `datasets` (hub `fancyzhx/ag_news` or a local copy in data.path): the paper's text data.

120,000 train / 7,600 test articles (title + description in one `text` field), 4 classes. Items are the
raw strings; the encoder's tokenizer truncates them (its `max_length`). Empty or whitespace-only texts
are skipped and listed in `skipped`.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from daamlab.sources._hub import HubSource, load_splits


def text_or_reason(cell: Any) -> tuple[str | None, str | None]:
    if not isinstance(cell, str):
        return None, f"text is {type(cell).__name__}, not a string"
    if not cell.strip():
        return None, "empty text"
    return cell, None


def build(cfg: DictConfig) -> HubSource:
    """`cfg` is the `data` config node (configs/data/agnews.yaml)."""
    dataset, where = load_splits(cfg, "AG News")
    return HubSource(
        name="agnews",
        kind="text",
        dataset=dataset,
        where=where,
        input_column=cfg.input_column,
        label_column=cfg.label_column,
        convert=text_or_reason,
        protocol={"input_column": cfg.input_column, "label_column": cfg.label_column},
    )
