"""`lstm-lab-push-world` from a checkout: `python scripts/push_world.py --help` (code: modeling/cli/push_world.py)."""

from modeling.cli.push_world import main

if __name__ == "__main__":
    main()
