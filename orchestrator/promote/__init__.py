"""Promotion of a sweep's winning recipe to a full-length run: `python -m orchestrator.promote`.

- source.py: the sweep read back (run folder, spec, trials) and each trial's stored recipe
- pick.py: the pick rules (knee, best, best:<metric>, trial:<id>) ranking the finished trials
- seeds.py: the seed check (is the leader's lead more than re-training luck?)
- tracker.py: the promotion's MLflow run and its registered model version
- run.py: the full run: distil, compare with the teacher, save and register the student
- cli.py: the command line, its console tables and exit statuses
"""
