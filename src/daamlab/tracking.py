"""What a run sends to its experiment trackers beyond Lightning's per-epoch metrics, and how it is
filed there.

Every logger gets the resolved config (plus `experiment`, the chosen experiment config, to compare
across sweeps) and the parameter counts (W&B: the run's config; CSV: hparams.yaml). W&B files a run
so that "which variant wins" is one grouping away (configs/logger/wandb.yaml):
- group: the sweep; job_type: the variant (DAAM and MHSA runs of one sweep apart); name: variant,
  fold and seed (`daam-f1-s1`, `daam-s2`, `daam-trial3`); id: from the run's folder, so a resumed
  run is the same W&B run;
- tags: the structured ones (experiment, modality, data, variant, fold, seed, search role) *plus*
  the config's `tags` (an experiment's, or `tags=[...]` on the command line: added, not replacing);
- summary: `val/acc_best` (the best epoch's, not the last), the test metrics and parameter counts;
- per run: metrics.json and predictions.csv as an artifact, the test predictions as a wandb.Table,
  a confusion matrix, and the run's figures (accuracy per epoch and per class, the Importance Factor,
  occlusion per layer) as images.
Nothing here imports wandb at module level: with `logger=csv` it is never loaded.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from daamlab.record import RunRecord, config_tags


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run keeps its history.

    Lightning deletes metrics.csv when a logger starts in a directory that has one, so a run resumed
    from last.ckpt would lose the epochs before the fault. This one reads the old rows first and,
    once the resumed run logs its first epoch, writes back those of earlier epochs (later ones, if a
    kill came between logging and checkpointing, are logged again by the resumed run).
    """

    _previous: list[dict[str, str]] | None = None

    @property
    def experiment(self):
        if self._experiment is None:
            path = Path(self.log_dir) / "metrics.csv"
            if path.is_file():
                with path.open(newline="") as f:
                    self._previous = list(csv.DictReader(f))
        return super().experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._previous is not None and "epoch" in metrics:
            first = float(metrics["epoch"])
            kept = [row for row in self._previous if row.get("epoch") and float(row["epoch"]) < first]
            self.experiment.metrics[:0] = kept
            self._previous = None
        super().log_metrics(metrics, step)


# the attention configs whose defaults name a variant: mhsa_paper with layer=22 is "mhsa_paper[layer=22]"
ATTENTION_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "attention"


def variant_label(cfg: DictConfig) -> str:
    """The attention name, plus the options that differ from its config file's defaults (those
    resolved against the run's own config, e.g. a modality's `daam_heads`)."""
    attention = OmegaConf.to_container(cfg.attention, resolve=True)
    name = attention["name"]
    defaults_path = ATTENTION_CONFIGS / f"{name}.yaml"
    if not defaults_path.is_file():
        return name
    context = cfg.copy()
    context.attention = OmegaConf.load(defaults_path)
    defaults = OmegaConf.to_container(context.attention, resolve=True)
    changed = [f"{k}={_fmt(v)}" for k, v in sorted(attention.items()) if k != "name" and defaults.get(k) != v]
    return f"{name}[{','.join(changed)}]" if changed else name


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def experiment_name(cfg: DictConfig) -> str | None:
    """The experiment config the run was composed with (`experiment=paper_iemocap`), else the
    `experiment:<name>` tag; None for a plain run."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("experiment")
        if choice:
            return str(choice)
    return next((t.split(":", 1)[1] for t in config_tags(cfg) if t.startswith("experiment:")), None)


def variant(cfg: DictConfig) -> str:
    """The variant's name in every table (sweep table, report, W&B config): attention + the options
    changed from its config; a search's runs by their role, since their options are the search's:
    `daam trial 3` (one configuration each), `daam (tuned)` (the best trial's, re-run)."""
    role = OmegaConf.select(cfg, "search.role")
    if role == "trial":
        return f"{cfg.attention.name} trial {OmegaConf.select(cfg, 'search.trial')}"
    if role == "tuned":
        return f"{cfg.attention.name} (tuned)"
    pick = ablation_pick(cfg)
    return f"{variant_label(cfg)} · {pick} IF" if pick else variant_label(cfg)


def ablation_pick(cfg: DictConfig) -> str | None:
    """`high` | `low` for a run of the layer ablation (experiment=paper_layer_ablation), else None."""
    if OmegaConf.select(cfg, "ablation.from_run", default=None) is None:
        return None
    return str(OmegaConf.select(cfg, "ablation.pick"))


def run_name(cfg: DictConfig) -> str:
    """`daam-f1-s1`, `none-s2`; a search trial `daam-trial3`, a re-run of the best `daam-tuned-s1`,
    the layer ablation's `daam_v2-high-f1-s1`."""
    name = str(cfg.attention.name)
    role = OmegaConf.select(cfg, "search.role")
    if role == "trial":
        return f"{name}-trial{OmegaConf.select(cfg, 'search.trial')}"
    fold, pick = OmegaConf.select(cfg, "data.fold"), ablation_pick(cfg)
    parts = [name, *(["tuned"] if role == "tuned" else []), *([pick] if pick else [])]
    parts += [f"f{fold}"] if fold is not None else []
    return "-".join([*parts, f"s{cfg.seed}"])


def run_id(run_dir: str) -> str:
    """The W&B id of the run in run_dir: the same for every start of that run (a resume continues
    it instead of filing a second run), another for every other folder."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def run_tags(cfg: DictConfig) -> list[str]:
    """The structured tags, then the config's `tags` (command line or experiment), each once."""
    structured = [
        f"experiment:{experiment_name(cfg)}" if experiment_name(cfg) else None,
        f"modality:{OmegaConf.select(cfg, 'modality_name')}",
        f"data:{OmegaConf.select(cfg, 'data.name')}",
        f"variant:{cfg.attention.name}",
        f"fold:{cfg.data.fold}" if OmegaConf.select(cfg, "data.fold") is not None else None,
        f"seed:{cfg.seed}",
        f"search:{OmegaConf.select(cfg, 'search.role')}" if OmegaConf.select(cfg, "search.role") else None,
    ]
    structured = [t[:64] for t in structured if t]  # W&B's limit; a long data name is cut, not refused
    return list(dict.fromkeys(structured + config_tags(cfg)))


def log_config(loggers: list[Logger], cfg: DictConfig, params: dict[str, int]) -> None:
    hparams = {
        **OmegaConf.to_container(cfg, resolve=True),
        "experiment": experiment_name(cfg),  # W&B: group by it to compare the runs of several sweeps
        "variant": variant(cfg),
        "params": params,
    }
    for logger in loggers:
        logger.log_hyperparams(hparams)


def log_results(loggers: list[Logger], record: RunRecord, figures: dict[str, Path], out_dir: Path) -> None:
    """The run's final numbers and files; `out_dir` holds its metrics.json and predictions.csv."""
    summary = {
        "val/acc_best": record.best_val_acc,  # val/acc in the summary is the last epoch's
        "best_val_acc": record.best_val_acc,
        "best_epoch": record.best_epoch,
        **{f"params/{k}": v for k, v in record.params.items()},
        **{f"test/{k}": v for k, v in record.test.items()},
    }
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            _wandb_results(logger, summary, figures, out_dir)


def _wandb_results(
    logger: WandbLogger, summary: dict[str, Any], figures: dict[str, Path], out_dir: Path
) -> None:
    import wandb

    run = logger.experiment
    run.summary.update(summary)
    predictions = out_dir / "predictions.csv"
    logged: dict[str, Any] = {}
    if predictions.is_file():
        with predictions.open(newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        classes = [c.removeprefix("p_") for c in header if c.startswith("p_")]
        logged["test/predictions"] = wandb.Table(columns=header, data=body)
        index = {c: i for i, c in enumerate(classes)}
        logged["test/confusion_matrix"] = wandb.plot.confusion_matrix(
            y_true=[index[r[3]] for r in body], preds=[index[r[4]] for r in body], class_names=classes
        )
    for key, path in figures.items():
        logged[key] = wandb.Image(str(path))
    if logged:
        run.log(logged)
    artifact = wandb.Artifact(f"results-{run.id}", type="run-results", metadata={"name": run.name})
    for name in ("metrics.json", "predictions.csv"):
        if (out_dir / name).is_file():
            artifact.add_file(str(out_dir / name))
    run.log_artifact(artifact)


def log_report(out_dir: Path, groups: list[str], project: str = "daamlab") -> Path:
    """`python -m daamlab.report ... --wandb`: the report's tables (report.csv, paired.csv) and figures
    in a W&B run of the runs' group (job_type `report`; the group "report" when the runs span several
    sweeps, with those in its config). Offline unless DAAMLAB_WANDB_OFFLINE=false, as the runs' logger.
    Returns the W&B run's folder."""
    import os

    import wandb

    offline = os.environ.get("DAAMLAB_WANDB_OFFLINE", "true").lower() != "false"
    group = groups[0] if len(groups) == 1 else "report"
    save_dir = out_dir.resolve().parent  # not inside the report folder: the next report replaces it
    run = wandb.init(
        project=project, group=group, job_type="report", name=f"report-{out_dir.name}",
        dir=str(save_dir), mode="offline" if offline else "online", config={"groups": groups},
        tags=["report"],
    )  # fmt: skip
    try:
        logged: dict[str, Any] = {}
        for name in ("report.csv", "paired.csv"):
            path = out_dir / name
            if path.is_file():
                with path.open(newline="") as f:
                    rows = list(csv.reader(f))
                if rows:
                    logged[f"report/{path.stem}"] = wandb.Table(columns=rows[0], data=rows[1:])
        for png in sorted(out_dir.glob("*.png")):
            logged[f"report/figures/{png.stem}"] = wandb.Image(str(png))
        run.log(logged)
        # one artifact per set of sweeps compared; W&B names take [A-Za-z0-9_.-] only
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "report-" + "+".join(groups or [group]))[:128]
        artifact = wandb.Artifact(name, type="report")
        artifact.add_dir(str(out_dir))
        run.log_artifact(artifact)
        return Path(run.dir).parent
    finally:
        run.finish()
