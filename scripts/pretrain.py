"""`lstm-lab-pretrain` from a checkout: `python scripts/pretrain.py --help` (code: modeling/cli/pretrain.py)."""

from modeling.cli.pretrain import main

if __name__ == "__main__":
    main()
