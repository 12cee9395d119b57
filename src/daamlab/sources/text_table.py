"""data=text_table: your own texts, one table (CSV, TSV, JSONL or parquet) in `data.path`.

Columns: `data.text_column`, `data.label_column`, optional `data.split_column` (used when the table
has it) and `data.group_column` (k-fold). Row ids are `row-<line>`. Empty or whitespace-only texts
are skipped; the encoder's tokenizer truncates long ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig

from daamlab.errors import DaamlabError
from daamlab.sources.generic import GenericSource, Protocol, Row, assign, read_table, require_columns


def read_text(row: Row) -> tuple[list[str] | None, str | None]:
    if row.ref is None or not row.ref.strip():
        return None, "empty text"
    return [row.ref], None


def build(cfg: DictConfig) -> GenericSource:
    """`cfg` is the `data` node (configs/data/text_table.yaml)."""
    if not cfg.get("path"):
        raise DaamlabError(
            "data.path is not set: point it at your table (a .csv, .tsv, .jsonl or .parquet file)"
        )
    path = Path(str(cfg.path)).expanduser()
    if not path.is_file():
        raise DaamlabError(
            f"data.path={path} is not a file: point it at a .csv, .tsv, .jsonl or .parquet table"
        )
    columns, records = read_table(path)
    if not records:
        raise DaamlabError(f"data.path={path} holds no rows")
    text_column, label_column = cfg.get("text_column", "text"), cfg.get("label_column", "label")
    split_column, group_column = cfg.get("split_column"), cfg.get("group_column")
    require_columns(
        columns,
        {
            "data.text_column": text_column,
            "data.label_column": label_column,
            "data.group_column": group_column,
        },
        f"data.path={path}",
    )
    if split_column not in columns:
        split_column = None
    first_line = 1 if path.suffix.lower() in (".jsonl", ".parquet") else 2  # CSV/TSV: line 1 is the header
    rows = [
        Row(
            id=f"row-{number}",
            label=record.get(label_column),
            ref=record.get(text_column),
            split=record.get(split_column) if split_column else None,
            group=record.get(group_column) if group_column else None,
        )
        for number, record in enumerate(records, start=first_line)
    ]
    protocol = Protocol.from_cfg(cfg)
    assignment = assign(rows, protocol, f"data.path={path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return GenericSource(
        name=str(cfg.name),
        kind="text",
        where=f"data.path={path}",
        assignment=assignment,
        read=read_text,
        version_parts=[protocol.describe(), text_column, digest],
    )
