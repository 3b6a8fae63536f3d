"""`lstm-lab-make-world` from a checkout: `python scripts/make_world.py --help` (code: modeling/cli/make_world.py)."""

from modeling.cli.make_world import main

if __name__ == "__main__":
    main()
