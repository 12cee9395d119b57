"""W&B filing, read back from an offline run's transaction log (run-<id>.wandb): names, job type,
group, tags, config, summary, the predictions table, the confusion matrix, images and artifacts."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from omegaconf import open_dict

from daamlab.cli import run_cli
from daamlab.tracking import run_id
from daamlab.training import train

SMALL = [
    "data.num_train=200", "data.num_test=40", "trainer.max_epochs=2", "decoder=linear",
    "trainer.enable_progress_bar=false", "logger=wandb", "attention=daam", "seed=2",
    "sweep_name=wandb_test", "tags=[mine]",
]  # fmt: skip


def wandb_records(path: Path):
    """The protobuf records of a .wandb file: a LevelDB-style log (7-byte header ":W&B" + magic +
    version; 32 KiB blocks of chunks, each crc32, length, type = full | first | middle | last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if len(chunk) < length:  # still being written
            return
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_offline_wandb_run_holds_what_answers_which_variant_wins(compose, tmp_path):
    cfg = compose(SMALL)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    metrics = run_cli(train, cfg)
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # wandb.finish returns before its service has written everything: wait for the exit record
    deadline = time.time() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(log)):
        assert time.time() < deadline, f"{log} has no exit record"
        time.sleep(0.5)
    run, config, summary, artifacts, logged = None, {}, {}, {}, set()
    for r in wandb_records(log):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
        elif kind == "config":
            config |= {_key(i): json.loads(i.value_json) for i in r.config.update if _key(i)}
        elif kind == "summary":
            summary |= {_key(i): i.value_json for i in r.summary.update}
        elif kind == "history":
            logged |= {_key(i) for i in r.history.item}
        elif kind == "artifact":
            artifacts[r.artifact.type + ":" + r.artifact.name] = {
                m.path for m in r.artifact.manifest.contents
            }
    assert (run.display_name, run.job_type, run.run_group) == ("daam-s2", "daam", "wandb_test")
    assert run.run_id == run_id(str(tmp_path)) != run_id(str(tmp_path / "other"))  # a resume is this run
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # every epoch, also with logger=wandb
    assert {"modality:toy", "data:toy", "variant:daam", "seed:2", "mine"} <= set(
        run.tags
    )  # added, not replaced
    assert config["variant"] == "daam" and "experiment" in config and config["seed"] == 2
    assert float(summary["val/acc_best"]) == metrics.best_val_acc  # the best epoch's, not the last
    assert float(summary["test/acc"]) == metrics.test["acc"]
    assert {"test/predictions/_type", "importance/_type", "accuracy/_type"} <= logged
    assert any(k.startswith("test/confusion_matrix") for k in logged)
    results = next(v for k, v in artifacts.items() if k.startswith("run-results:"))
    assert results == {"metrics.json", "predictions.csv"}
    tables = {p for k, v in artifacts.items() if k.startswith("run_table:") for p in v}
    assert {"test/predictions.table.json", "test/confusion_matrix_table.table.json"} <= tables


def test_a_bare_tag_is_one_tag_not_its_letters(compose):
    from daamlab.record import RunRecord
    from daamlab.tracking import run_tags

    for given, tags in (("tags=ablation", ["ablation"]), ("tags=7", ["7"]), ("tags=[a,b]", ["a", "b"])):
        cfg = compose([given])
        assert [t for t in run_tags(cfg) if ":" not in t] == tags  # the structured ones hold ':'
        assert RunRecord.identity(cfg)["tags"] == tags
