"""Comparing a sweep's trials in MLflow the way a user does: a real `mlflow server`, its REST API, its UI.

The `micro_sweep` store is served by `mlflow server` on 127.0.0.1 (tests/mlflow_server.py). The REST
test checks what every client of the server sees: one parent run per sweep, one nested child run per
trial with its swept and recipe params, `score` histories by step, and the artifacts the sweep logged.
The browser test saves a comparison view (trials as rows, swept params and objectives as columns) as
the UI's Share button does, opens it in Debian's headless chromium driven by playwright, waits until
the rendered page lists every trial with its swept value, and screenshots it.

    .venv/bin/python -m pytest tests/test_mlflow_ui.py -q -s     # -s prints the screenshot's path
    MLFLOW_UI_SCREENSHOT=docs/images/mlflow_runs.png .venv/bin/python -m pytest tests/test_mlflow_ui.py

Other tests may add runs to the experiment (a promotion run): runs are told apart by their `role` tag.
Both checks take any server and sweep (`check_rest_api`, `check_runs_page`): tests/test_tracking_postgres.py
runs them against a server on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from mlflow_server import Server, mlflow_server
from PIL import Image, ImageStat

from orchestrator.spec import load_spec
from orchestrator.tracking.view import VIEW_KEY, view_url

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Headless, no sandbox (root in a container), and nothing that reaches beyond 127.0.0.1.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WINDOW = (1600, 1000)
# The page is awaited until it shows what is checked; the limit only turns a hang into a failure.
RENDER_TIMEOUT_S = 180
ERROR_TEXTS = ("Something went wrong", "Error loading", "Failed to load", "does not exist", "Page not found")


@dataclass(frozen=True)
class SweepRuns:
    """What the server says about a sweep's experiment: its id, the parent run, the trial runs."""

    experiment_id: str
    parent: dict
    children: list[dict]


@pytest.fixture(scope="module")
def server(micro_sweep):
    with mlflow_server(micro_sweep.parent / "mlflow.db") as running:
        yield running


# -- REST ---------------------------------------------------------------------------------------------


def api(server: Server, endpoint: str, body: dict | None = None, **params) -> dict:
    """GET (or POST `body`) /api/2.0/mlflow/<endpoint>; fails with the answer and the server log."""
    url = f"{server.url}/api/2.0/mlflow/{endpoint}"
    if body is None:
        response = requests.get(url, params=params, timeout=60)
    else:
        response = requests.post(url, json=body, timeout=60)
    if response.status_code != 200:
        pytest.fail(f"{endpoint}: HTTP {response.status_code} {response.text[:500]}\n{server.log_tail()}")
    return response.json()


def tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


def params(run: dict) -> dict[str, str]:
    return {param["key"]: param["value"] for param in run["data"].get("params", [])}


def sweep_runs(server: Server, name: str) -> SweepRuns:
    experiment = api(server, "experiments/get-by-name", experiment_name=name)["experiment"]
    found = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000})
    runs = found.get("runs", [])
    parents = [run for run in runs if tags(run).get("role") == "sweep"]
    assert len(parents) == 1, f"expected one sweep run, found {[tags(run) for run in parents]}"
    children = [run for run in runs if tags(run).get("role") == "trial"]
    return SweepRuns(experiment["experiment_id"], parents[0], children)


def artifact_paths(server: Server, run: dict) -> set[str]:
    listed = api(server, "artifacts/list", run_id=run["info"]["run_id"])
    return {entry["path"] for entry in listed.get("files", [])}


def artifact_text(server: Server, run: dict, path: str) -> str:
    """An artifact as the UI downloads it (`/get-artifact`), read from where the sweep logged it."""
    response = requests.get(
        f"{server.url}/get-artifact", params={"run_uuid": run["info"]["run_id"], "path": path}, timeout=60
    )
    assert response.status_code == 200, f"{path}: HTTP {response.status_code} {response.text[:300]}"
    return response.text


def check_child(server: Server, child: dict, parent_id: str, base: dict, bounds: list[float]) -> None:
    """One trial's run: nested under the sweep, swept + flattened recipe params, `score` by step, artifacts."""
    name = child["info"]["run_name"]
    assert tags(child)["mlflow.parentRunId"] == parent_id, name
    assert child["info"]["status"] == "FINISHED", name
    logged = params(child)
    ratio = float(logged["t2i_edit_ratio"])
    assert bounds[0] - 1e-9 <= ratio <= bounds[1] + 1e-9, (name, ratio)
    assert {key: logged.get(key) for key in base} == {key: str(value) for key, value in base.items()}, name
    assert any(key.startswith("category_mix.") for key in logged), f"{name}: no flattened mapping params"

    history = api(server, "metrics/get-history", run_id=child["info"]["run_id"], metric_key="score")
    steps = [int(point["step"]) for point in history.get("metrics", [])]
    assert steps, f"{name}: no `score` history"
    assert steps == sorted(set(steps)) and steps[-1] == base["steps"], (name, steps)
    latest = {metric["key"]: metric for metric in child["data"]["metrics"]}["score"]
    assert int(latest["step"]) == steps[-1], name

    assert {"recipe.yaml", "samples.png"} <= artifact_paths(server, child), name
    recipe = yaml.safe_load(artifact_text(server, child, "recipe.yaml"))
    assert recipe["t2i_edit_ratio"] == pytest.approx(ratio), name


def check_rest_api(server: Server, spec_path: Path) -> SweepRuns:
    """The sweep of `spec_path` as the server shows it: one parent, one checked child per trial."""
    spec = load_spec(spec_path)
    runs = sweep_runs(server, spec.name)
    parent_id = runs.parent["info"]["run_id"]
    assert runs.parent["info"]["run_name"] == spec.name
    assert len(runs.children) == spec.budget.trials
    assert len({tags(child)["trial_id"] for child in runs.children}) == spec.budget.trials
    bounds = spec.search["t2i_edit_ratio"].bounds
    for child in runs.children:
        check_child(server, child, parent_id, dict(spec.base), bounds)
    assert {"spec.yaml", "trials.parquet"} <= artifact_paths(server, runs.parent)
    assert yaml.safe_load(artifact_text(server, runs.parent, "spec.yaml"))["name"] == spec.name
    return runs


def test_rest_api_shows_the_sweep_as_nested_runs(server, micro_sweep):
    check_rest_api(server, micro_sweep)


# -- browser ------------------------------------------------------------------------------------------


def saved_view_url(server: Server, experiment_id: str) -> str:
    """The runs page with the comparison view the sweep saved with its experiment (checked here)."""
    experiment = api(server, "experiments/get", experiment_id=experiment_id)["experiment"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    key = f"mlflow.sharedViewState.{VIEW_KEY}"
    assert key in tags, f"the sweep saved no comparison view: experiment tags {sorted(tags)}"
    view = json.loads(tags[key])
    assert view["searchFilter"].endswith("and tags.role = 'trial'") and "tags.sweep_id = '" in view["searchFilter"]
    return view_url(server.url, experiment_id)


# True once document.body.innerText shows the expected "N matching runs", every expected word (a
# whitespace-separated token: trial names, swept values) and phrase (column headers), and no error
# text: the same conditions `page_problems` checks, so the page is read only once it has rendered.
RENDERED_JS = """({count, words, phrases, errors}) => {
    const text = document.body ? document.body.innerText : "";
    const lower = text.toLowerCase();
    if (errors.some((phrase) => lower.includes(phrase.toLowerCase()))) return false;
    const seen = text.match(/(\\d+) matching runs/);
    if (!seen || Number(seen[1]) !== count) return false;
    const tokens = new Set(text.split(/\\s+/));
    return words.every((word) => tokens.has(word)) && phrases.every((phrase) => text.includes(phrase));
}"""


def browse(url: str, screenshot: Path, trials: list[dict], headers: list[str]) -> str:
    """Load `url` in headless chromium, wait until the page lists `trials` under `headers`, screenshot
    the window and return the page's visible text (or fail with what it still lacks)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    expected = {
        "count": len(trials),
        "words": [w for t in trials for w in (t["info"]["run_name"], params(t)["t2i_edit_ratio"])],
        "phrases": headers,
        "errors": list(ERROR_TEXTS),
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=[*CHROMIUM_FLAGS, f"--window-size={WINDOW[0]},{WINDOW[1]}"],
        )
        try:
            page = browser.new_page(viewport={"width": WINDOW[0], "height": WINDOW[1]})
            page.goto(url, wait_until="load", timeout=RENDER_TIMEOUT_S * 1000)
            try:
                page.wait_for_function(
                    RENDERED_JS, arg=expected, polling=250, timeout=RENDER_TIMEOUT_S * 1000
                )
            except PlaywrightTimeout:
                text = page.inner_text("body")
                pytest.fail(
                    f"{url} not rendered within {RENDER_TIMEOUT_S} s: {page_problems(text, trials, headers)}"
                    f"\npage text: {text[:2000]}"
                )
            text = page.inner_text("body")
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return text


def page_problems(text: str, trials: list[dict], headers: list[str]) -> list[str]:
    """What is wrong with the rendered runs page; empty when it lists exactly the trials, with the
    view's columns and each trial's swept value."""
    problems = [f"shows {phrase!r}" for phrase in ERROR_TEXTS if phrase.lower() in text.lower()]
    problems += [f"no {header!r} column" for header in headers if header not in text]
    words = set(text.split())
    for trial in trials:
        name, value = trial["info"]["run_name"], params(trial)["t2i_edit_ratio"]
        if name not in words:
            problems.append(f"no row for {name}")
        if value not in words:
            problems.append(f"no t2i_edit_ratio {value} (of {name})")
    count = re.search(r"(\d+) matching runs", text)
    if not count or int(count.group(1)) != len(trials):
        problems.append(f"expected '{len(trials)} matching runs', saw {count.group(0) if count else 'none'}")
    return problems


def check_screenshot(path: Path) -> None:
    """A real PNG of the window's size that is not one flat colour."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        assert image.size == WINDOW, image.size
        spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 5.0, f"{path} looks blank (grey-level std {spread:.1f})"


def skip_without_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            "chromium not installed: `make test` installs it with apt-get (Debian package chromium); "
            "run it or apt-get install chromium"
        )


def check_runs_page(server: Server, spec_path: Path, screenshot: Path) -> None:
    """The sweep's saved comparison view, rendered by chromium, lists every trial; screenshot saved."""
    spec = load_spec(spec_path)
    runs = sweep_runs(server, spec.name)
    url = saved_view_url(server, runs.experiment_id)
    headers = [*spec.search, *(objective.metric for objective in spec.objectives)]
    text = browse(url, screenshot, runs.children, headers)
    problems = page_problems(text, runs.children, headers)
    assert not problems, f"{url}: {problems}\npage text: {text[:2000]}"
    check_screenshot(screenshot)
    print(f"\nMLflow runs page screenshot: {screenshot}")


def test_runs_page_lists_the_trials_in_a_browser(server, micro_sweep, tmp_path):
    skip_without_chromium()
    screenshot = tmp_path / "mlflow_runs.png"
    check_runs_page(server, micro_sweep, screenshot)
    target = os.environ.get("MLFLOW_UI_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target)
        print(f"copied to {target}")
