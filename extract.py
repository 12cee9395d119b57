"""Build the layer-wise feature cache: python extract.py [modality=...] [cache.shard=i cache.num_shards=k]."""

import hydra
from omegaconf import DictConfig

from daamlab import resolvers
from daamlab.cli import hydra_main, run_cli
from daamlab.features.extract import extract

resolvers.register()


@hydra.main(version_base="1.3", config_path="configs", config_name="extract")
def main(cfg: DictConfig) -> None:
    run_cli(extract, cfg)


if __name__ == "__main__":
    hydra_main(main)  # Hydra's own start-up errors get the exit policy too (daamlab/cli.py)
