"""Ray for the sweep's driver: joined (a cluster address) or started locally, its log lines to a file.

    owns_ray = start_ray(address, run.driver_log)    # then ray.shutdown() if owns_ray
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import optuna
import ray


def start_ray(address: str | None, log: Path) -> bool:
    """Join `address` / RAY_ADDRESS, or start a local Ray on 127.0.0.1 without dashboard.

    Ray's own log lines go to `log` (runs/<name>/driver.log), not the console. Returns whether we
    started it (and so must shut it down); an already initialised Ray (tests, notebooks) is used as is.
    """
    log_to(log)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    common = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **common)
    return True


def log_to(path: Path) -> None:
    """Driver-side log lines of Ray, MLflow and Optuna go to `path` (the console shows our lines only)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "mlflow", "optuna", "alembic"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    optuna.logging.disable_default_handler()
