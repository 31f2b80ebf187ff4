"""`python -m orchestrator.sweep SPEC`: run a recipe sweep from a spec.

    cli.py        the command line: flags, exit codes, what is printed before and after the sweep
    dry_run.py    --dry-run: the resolved spec and the first recipes the sampler proposes
    engine.py     run_sweep: the run folder, the Tuner (Optuna, ASHA, callbacks), resume, the tables
    ray_start.py  joining or starting Ray, its log lines to the run folder
    progress.py   ProgressLines: one console line per trial event
"""
