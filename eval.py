"""Test a trained head: python eval.py ckpt_path=outputs/train/runs/<run>/checkpoints/<name>.ckpt"""

import hydra
from omegaconf import DictConfig

from daamlab import resolvers
from daamlab.cli import hydra_main, run_cli
from daamlab.training import evaluate

resolvers.register()


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_cli(evaluate, cfg)


if __name__ == "__main__":
    hydra_main(main)  # Hydra's own start-up errors get the exit policy too (daamlab/cli.py)
