"""Train an attention head: python train.py [modality=...] [attention=...] [key=value ...] (-m to sweep)."""

import hydra
from omegaconf import DictConfig

from daamlab import resolvers
from daamlab.cli import hydra_main, run_cli
from daamlab.training import train

resolvers.register()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    record = run_cli(train, cfg)
    return record.best_val_acc if record is not None else None  # what a Hydra sweeper optimises


if __name__ == "__main__":
    hydra_main(main)  # Hydra's own start-up errors get the exit policy too (daamlab/cli.py)
