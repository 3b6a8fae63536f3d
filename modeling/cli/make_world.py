"""Generate a world and save it: `knowledge_base.json` and `dataset/` (every `WorldConfig` field is a flag).

lstm-lab-make-world --out worlds/default --num_people 1000 --seed 0
python scripts/make_world.py --out worlds/default --num_people 1000 --seed 0    # the same, from a checkout
"""

from dataclasses import dataclass, field
from pathlib import Path

from ..run_config import parse_run_config
from ..world import World, WorldConfig, generate_world, load_world_datasets, save_world, to_dataset_dict
from . import DEBUG_HELP, run_command

PROG = "lstm-lab-make-world"


@dataclass
class OutputArguments:
    out: str = field(metadata={"help": "Folder to write the world into."})


def parse(argv: list[str]) -> tuple[OutputArguments, World]:
    """The output folder (new or empty: a world is never written over another) and the world from `argv`: its config
    checked by `WorldConfig`, its splits by `to_dataset_dict` (none may be empty)."""
    output, config = parse_run_config(
        (OutputArguments, WorldConfig), argv, description=f"{__doc__}\n{DEBUG_HELP}", prog=PROG
    )
    out = Path(output.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} already exists and is not an empty folder; allowed: a new or empty folder")
    world = generate_world(config)
    to_dataset_dict(world)
    return output, world


def make_world(settings: tuple[OutputArguments, World]) -> None:
    output, world = settings
    out_dir = save_world(world, output.out)
    print(f"wrote a world of {world.config.num_people} people to {out_dir}")
    for name, split in load_world_datasets(out_dir).items():
        print(f"  {name}: {split.num_rows} rows")


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, make_world, argv)


if __name__ == "__main__":
    main()
