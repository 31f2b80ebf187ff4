"""Ray for the sweep's driver (orchestrator/sweep/ray_start.py): joined or started, its logs to a file.

Run: .venv/bin/python -m pytest tests/test_ray_start.py -q
`ray.init` is replaced by a recorder: no Ray starts.
"""

from __future__ import annotations

import logging

import pytest

from orchestrator.sweep import ray_start


@pytest.fixture()
def inits(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(ray_start.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_start.ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield calls
    for name in ("ray", "mlflow", "optuna", "alembic"):  # leave the loggers as other tests expect them
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True


def test_a_local_ray_is_started_on_loopback_without_dashboard(inits, tmp_path):
    assert ray_start.start_ray(None, tmp_path / "driver.log") is True
    assert inits == [{"include_dashboard": False, "_node_ip_address": "127.0.0.1", "log_to_driver": False,
                      "logging_level": logging.WARNING, "configure_logging": False}]


def test_an_address_or_ray_address_is_joined(inits, tmp_path, monkeypatch):
    ray_start.start_ray("ray://head:10001", tmp_path / "driver.log")
    monkeypatch.setenv("RAY_ADDRESS", "ray://other:10001")
    ray_start.start_ray(None, tmp_path / "driver.log")
    assert [call["address"] for call in inits] == ["ray://head:10001", "ray://other:10001"]


def test_a_running_ray_is_used_as_is(inits, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_start.ray, "is_initialized", lambda: True)
    assert ray_start.start_ray(None, tmp_path / "driver.log") is False and inits == []


def test_driver_log_lines_go_to_the_file_not_the_console(inits, tmp_path, capsys):
    ray_start.log_to(tmp_path / "driver.log")
    logging.getLogger("mlflow.store").warning("schema migrated")
    logging.getLogger("ray.tune").error("a trial failed")
    text = (tmp_path / "driver.log").read_text()
    assert "WARNING mlflow.store: schema migrated" in text and "ERROR ray.tune: a trial failed" in text
    assert capsys.readouterr().err == ""
