"""Train an attention head: python train.py [modality=...] [attention=...] [key=value ...] (-m to sweep)."""

import hydra
from omegaconf import DictConfig

from daamlab.runs import run_cli
from daamlab.training import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_cli(train, cfg)
    return metrics.get("best_val_acc")  # what a Hydra sweeper would optimise


if __name__ == "__main__":
    main()
