"""MLflow: one parent run per sweep, one child run per trial, written from the Ray driver only.

    callback.py   MlflowTracker, the driver's Tune callback: every trial event as an outbox entry
    outbox.py     the journal the entries wait in (runs/<name>/mlflow_pending.jsonl) until delivered
    writer.py     MlflowWriter: delivers an entry to MLflow, idempotently
    store.py      the store: its default URI, creating it, telling "away" from "wrong"
    view.py       the saved runs-page view that compares a sweep's trials, and its address
    pending.py    what a sweep still has to write, in one line for the console

Why not Ray's `MLflowLoggerCallback`: on `Tuner.restore` it opens a second run for every resumed
trial, leaves the killed one RUNNING forever and logs one `log_metric` call per key (DESIGN §10).
Here runs are found by tags (`sweep_id`, `trial_id`) in MLflow itself, so a restarted driver
re-attaches to the runs it made before, whatever state it lost; metrics go in one `log_batch` per
report; a report whose step was already logged (a trial resumed from a checkpoint repeats the steps
after it) is skipped. Only the driver writes, so parallel trials never contend for a sqlite store.

A tracking server that goes away mid-sweep stops nothing: every write is first kept in the sweep's
outbox and delivered in order when the store answers again; what is still pending at the end is
delivered by `--resume`. Since entries name trials by Tune id and every delivery is idempotent (runs
found by tags, logged steps skipped), a replay creates the runs the store never saw and duplicates nothing.
"""
