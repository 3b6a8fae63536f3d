"""`lstm-lab-study` from a checkout: `python scripts/study.py --help` (code: modeling/cli/study.py)."""

from modeling.cli.study import main

if __name__ == "__main__":
    main()
