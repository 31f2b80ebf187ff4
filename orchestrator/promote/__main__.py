"""`python -m orchestrator.promote RUN_DIR ...`: the CLI of orchestrator/promote/cli.py."""

from orchestrator.promote.cli import main

if __name__ == "__main__":
    main()
