"""Generates a world and saves it, e.g. `python scripts/make_world.py --out worlds/default --num-people 1000 --seed 0`.

Every `WorldConfig` field is a flag (`--help` lists them). The folder gets `knowledge_base.json` and `dataset/`.
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from modeling.world import WorldConfig, generate_world, load_world_datasets, save_world


@dataclass
class OutputArguments:
    out: str = field(metadata={"help": "Folder to write the world into."})


def main() -> None:
    output, config = HfArgumentParser((OutputArguments, WorldConfig)).parse_args_into_dataclasses()
    world = generate_world(config)
    out_dir = save_world(world, output.out)
    print(f"wrote a world of {config.num_people} people to {out_dir}")
    for name, split in load_world_datasets(out_dir).items():
        print(f"  {name}: {split.num_rows} rows")


if __name__ == "__main__":
    main()
