"""Config resolvers the configs use; registered on `import daamlab`, before any config is resolved."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf


def name_of(where: str | None, fallback: str) -> str:
    """`${name_of:${.root},audio_folder}`: a run on your folder/table/dataset is named after it
    (`/data/birds` -> birds, `reviews.csv` -> reviews, `user/ds` -> ds), so metrics.json names your data."""
    if not where:
        return fallback
    path = Path(str(where).rstrip("/\\"))
    name = path.stem if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json", ".parquet") else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or fallback


OmegaConf.register_new_resolver("name_of", name_of, replace=True)
