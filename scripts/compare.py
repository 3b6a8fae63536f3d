"""`lstm-lab-compare` from a checkout: `python scripts/compare.py --help` (code: modeling/cli/compare.py)."""

from modeling.cli.compare import main

if __name__ == "__main__":
    main()
