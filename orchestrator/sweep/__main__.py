"""`python -m orchestrator.sweep`: see orchestrator/sweep/cli.py."""

from orchestrator.sweep.cli import main

if __name__ == "__main__":
    main()
