"""`lstm-lab-sweep` from a checkout: `python scripts/sweep.py --help` (code: modeling/cli/sweep.py)."""

from modeling.cli.sweep import main

if __name__ == "__main__":
    main()
