"""`lstm-lab-finetune` from a checkout: `python scripts/finetune.py --help` (code: modeling/cli/finetune.py)."""

from modeling.cli.finetune import main

if __name__ == "__main__":
    main()
