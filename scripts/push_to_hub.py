"""`lstm-lab-push` from a checkout: `python scripts/push_to_hub.py --help` (code: modeling/cli/push_to_hub.py)."""

from modeling.cli.push_to_hub import main

if __name__ == "__main__":
    main()
