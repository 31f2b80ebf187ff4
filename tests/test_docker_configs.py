"""docker/: every YAML parses, and the fields that matter hold.

    .venv/bin/python -m pytest tests/test_docker_configs.py

Nothing is built or started: the files are read as data (yaml.safe_load), the `ray up` config goes
through Ray's own config loader.
What matters: one image, built from docker/Dockerfile (CUDA base by default, the project and its tiny
world inside); every published port bound to 127.0.0.1; the job the clusters run is the README's
sweep command; GPU workers ask for GPUs; the MLFLOW_TRACKING_URI the nodes get names the MLflow service.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
KUBE = DOCKER / "kuberay"
IMAGE_USERS = ("mlflow", "ray-head", "ray-worker", "sweep")  # compose services that run our image


def load(path: Path) -> list:
    return list(yaml.safe_load_all(path.read_text()))


def one(path: Path) -> dict:
    (doc,) = load(path)
    return doc


def defaults(text: str) -> str:
    """Compose interpolation with nothing exported: `${VAR:-default}` -> default, `${VAR}` -> ''."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def readme_sweep_command() -> str:
    """The command `make sweep` runs, as README.md's "The two commands" names it."""
    m = re.search(r"^\s*make sweep\s+#.*?(python -m orchestrator\.sweep \S+)\s*$", (ROOT / "README.md").read_text(), re.M)
    assert m, "README.md: the `make sweep` line no longer names its python command"
    return m.group(1)


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(.*)$", (DOCKER / "Dockerfile").read_text(), re.M))


def ray_start(commands: list[str], mode: str) -> dict[str, str]:
    """The flags (`--k=v`, `--k v`, `--flag`) of the `ray start` among shell commands."""
    for command in commands:
        for part in re.split(r";|&&", command):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"] and (mode == "--head") == ("--head" in words):
                flags, i = {}, 2
                while i < len(words):
                    key, eq, value = words[i].partition("=")
                    if not eq and i + 1 < len(words) and not words[i + 1].startswith("--"):
                        value, i = words[i + 1], i + 1
                    flags[key] = value
                    i += 1
                return flags
    raise AssertionError(f"no `ray start` {mode} among {commands}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return one(DOCKER / "compose.yaml")["services"]


@pytest.fixture(scope="module")
def image(compose) -> str:
    """The image name compose builds from docker/Dockerfile; every config runs this one."""
    head = compose["ray-head"]
    assert (DOCKER / head["build"]["context"]).resolve() == ROOT
    assert head["build"]["dockerfile"] == "docker/Dockerfile"
    return defaults(head["image"])


def pod_containers(doc: dict) -> list[dict]:
    """Every container of a RayCluster / RayJob / Deployment's pod templates."""
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])] if "headGroupSpec" in spec else [spec]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# -- every file ---------------------------------------------------------------------------------------


def test_the_files_are_there():
    names = {p.relative_to(DOCKER).as_posix() for p in DOCKER.rglob("*.yaml")}
    assert {"compose.yaml", "compose.gpu.yaml", "ray-up.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml",
            "kuberay/mlflow.yaml", "kuberay/storage.yaml"} <= names


@pytest.mark.parametrize("path", sorted(DOCKER.rglob("*.yaml")), ids=lambda p: p.relative_to(DOCKER).as_posix())
def test_every_yaml_parses(path):
    docs = load(path)
    assert docs and all(isinstance(d, dict) and d for d in docs)


def test_readme_command_is_the_make_default():
    command = readme_sweep_command()
    spec = command.split()[-1]
    assert (ROOT / spec).is_file()
    assert re.search(rf"^SPEC\s*\?=\s*{re.escape(spec)}\s*$", (ROOT / "Makefile").read_text(), re.M)


# -- the image ------------------------------------------------------------------------------------------


def test_dockerfile_base_image_is_an_argument_with_a_cuda_default():
    text = (DOCKER / "Dockerfile").read_text()
    args = dockerfile_args()
    assert "cuda" in args["BASE_IMAGE"]
    assert text.index("ARG BASE_IMAGE=") < text.index("FROM ${BASE_IMAGE}")
    assert len(re.findall(r"^FROM ", text, re.M)) == 1


def test_dockerfile_installs_as_the_readme_says():
    text = (DOCKER / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    (torch_pin,) = re.findall(r'"(torch==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert f'"{torch_pin}" --index-url "${{TORCH_INDEX}}"' in text
    assert re.search(rf"{re.escape(torch_pin)} --index-url {re.escape(dockerfile_args()['TORCH_INDEX'])}\s", readme)
    assert re.search(r"pip install -c requirements\.lock -e '\.\[cluster\]'", text)
    cluster = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cluster"]
    lock = (ROOT / "requirements.lock").read_text()
    for package in ("ray[default]", "psycopg2-binary"):  # the image's extras, pinned by the lock
        assert any(req.startswith(package) for req in cluster), (package, cluster)
        assert re.search(rf"^{re.escape(package.split('[')[0])}==", lock, re.M), package


def test_image_holds_the_project_and_its_tiny_world():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR /app$", text, re.M)
    assert re.search(r"^COPY (--chown=\S+ )?\. /app$", text, re.M)  # the whole build context
    patterns = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)

    def ignored(path: str) -> bool:  # Docker's rules: a pattern that matches a folder drops its contents
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        regexes = [re.escape(p).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
                   for p in patterns]
        return any(re.fullmatch(r, prefix) for r in regexes for prefix in prefixes)

    checkpoints = [p.relative_to(ROOT).as_posix() for p in (ROOT / "trainers/tinyworld/checkpoints").rglob("*")
                   if p.is_file()]
    assert any(p.endswith(".safetensors") for p in checkpoints)
    assert not [p for p in checkpoints if ignored(p)]
    assert not [p for p in ("pyproject.toml", "requirements.lock", "search_spaces/task_ratio.yaml",
                            "orchestrator/sweep/cli.py") if ignored(p)]
    assert all(ignored(p) for p in (".venv/bin/python", "runs/task_ratio/sweep.json", "mlflow.db", ".git/HEAD"))


def test_the_image_tracks_to_its_uri_through_the_environment():
    """MLFLOW_TRACKING_URI (which beats a spec's tracking.uri) comes from the build argument; the shipped
    specs are left as they are (nothing rewrites them any more)."""
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^\s+MLFLOW_TRACKING_URI=\$\{TRACKING_URI\} \\$", text, re.M)
    assert "search_spaces/*.yaml" not in text
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(p for p in DOCKER.rglob("*") if p.is_file())]
    assert not [p for p in docs if "set_tracking_uri" in p.read_text()]


def test_every_node_gets_the_tracking_uri_of_the_mlflow_service(compose):
    uri = dockerfile_args()["TRACKING_URI"]
    for name in ("ray-head", "ray-worker"):  # the driver runs on the head; promote runs on either
        assert defaults(compose[name]["environment"]["MLFLOW_TRACKING_URI"]) == uri, name
    for path in (KUBE / "raycluster.yaml", KUBE / "rayjob.yaml"):
        for container in pod_containers(one(path)):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env["MLFLOW_TRACKING_URI"] == uri, (path.name, container["name"])
    assert f"-e MLFLOW_TRACKING_URI={uri}" in one(DOCKER / "ray-up.yaml")["docker"]["head_run_options"]


# -- one machine: compose ----------------------------------------------------------------------------------


def test_compose_has_the_cluster_services(compose):
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "sweep"} <= set(compose)


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml"])
def test_compose_publishes_ports_on_localhost_only(name):
    for service, config in one(DOCKER / name)["services"].items():
        assert config.get("network_mode") != "host", service
        for port in config.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else defaults(str(port)).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {service} publishes {port!r} beyond this machine"


def test_compose_runs_the_image_built_from_the_dockerfile(compose, image):
    args = dockerfile_args()
    for name in IMAGE_USERS:
        assert defaults(compose[name]["image"]) == image, name
        build = compose[name]["build"]
        assert (DOCKER / build["context"]).resolve() == ROOT and build["dockerfile"] == "docker/Dockerfile"
        assert {k: defaults(v) for k, v in build["args"].items()} == {
            k: args[k] for k in build["args"]}, "compose's build args must default to the Dockerfile's"


def test_compose_submits_the_readme_sweep_as_a_ray_job(compose):
    words = shlex.split(compose["sweep"]["command"])
    assert words[:3] == ["ray", "job", "submit"]
    assert " ".join(words[words.index("--") + 1:]) == readme_sweep_command()
    assert urlsplit(words[words.index("--address") + 1]).hostname == "ray-head"


def test_compose_ray_nodes_share_the_run_folders(compose):
    for name in ("ray-head", "ray-worker"):
        assert "runs:/app/runs" in compose[name]["volumes"], name
    head = ray_start([compose["ray-head"]["command"]], "--head")
    worker = ray_start([defaults(compose["ray-worker"]["command"])], "--address")
    assert worker["--address"] == f"ray-head:{head['--port']}"
    published = [defaults(p).split(":") for p in compose["ray-head"]["ports"]]
    assert ["127.0.0.1", head["--dashboard-port"], head["--dashboard-port"]] in published


def test_compose_mlflow_is_the_server_the_specs_track_to(compose):
    uri = urlsplit(dockerfile_args()["TRACKING_URI"])
    mlflow = compose[uri.hostname]
    words = shlex.split(mlflow["command"])
    assert words[:2] == ["mlflow", "server"]
    assert words[words.index("--port") + 1] == str(uri.port)
    assert words[words.index("--host") + 1] == "0.0.0.0"  # for the compose network; published on 127.0.0.1
    assert f"{uri.hostname}:*" in words[words.index("--allowed-hosts") + 1].split(",")
    backend = mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert backend.startswith("postgresql+psycopg2://") and "@postgres:5432/" in backend
    password = compose["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:-")  # an overridable, documented local default
    assert "${POSTGRES_PASSWORD:-" in backend


def test_compose_gpu_overlay_gives_the_worker_gpus():
    worker = one(DOCKER / "compose.gpu.yaml")["services"]["ray-worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


# -- Kubernetes: KubeRay --------------------------------------------------------------------------------------


def test_raycluster_has_a_gpu_worker_group(image):
    cluster = one(KUBE / "raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    lock_ray = re.search(r"^ray==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M).group(1)
    assert cluster["spec"]["rayVersion"] == lock_ray
    head = cluster["spec"]["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # the CRD's map[string]string
    gpus = [int(c["resources"]["limits"]["nvidia.com/gpu"])
            for g in cluster["spec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})]
    assert gpus and min(gpus) >= 1
    assert {c["image"] for c in pod_containers(cluster)} == {image}


def test_rayjob_runs_the_readme_sweep_on_the_same_cluster():
    job = one(KUBE / "rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["entrypoint"] == readme_sweep_command()
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["rayClusterSpec"] == one(KUBE / "raycluster.yaml")["spec"]


def test_kuberay_volumes_and_services_fit_together(image):
    cluster = one(KUBE / "raycluster.yaml")["spec"]
    claims = {d["metadata"]["name"] for f in ("storage.yaml", "mlflow.yaml") for d in load(KUBE / f)
              if d["kind"] == "PersistentVolumeClaim"}
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (mount,) = [m for c in pod["containers"] for m in c["volumeMounts"] if m["mountPath"] == "/app/runs"]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] in claims
    (runs,) = [d for d in load(KUBE / "storage.yaml") if d["kind"] == "PersistentVolumeClaim"]
    assert runs["spec"]["accessModes"] == ["ReadWriteMany"]  # head and workers mount it together

    mlflow_docs = load(KUBE / "mlflow.yaml")
    uri = urlsplit(dockerfile_args()["TRACKING_URI"])
    services = {d["metadata"]["name"]: d["spec"] for d in mlflow_docs if d["kind"] == "Service"}
    assert [p["port"] for p in services[uri.hostname]["ports"]] == [uri.port]
    assert all(s.get("type", "ClusterIP") == "ClusterIP" for s in services.values())  # nothing exposed
    deployments = {d["metadata"]["name"]: d for d in mlflow_docs if d["kind"] == "Deployment"}
    (server,) = pod_containers(deployments["mlflow"])
    assert server["image"] == image and server["command"][:2] == ["mlflow", "server"]
    (hosts,) = [a.partition("=")[2] for a in server["command"] if a.startswith("--allowed-hosts=")]
    assert f"{uri.hostname}:*" in hosts.split(",")  # the server answers the driver's Host header
    for deployment in deployments.values():  # the database password comes from a Secret, not a file here
        for container in pod_containers(deployment):
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
    backend = urlsplit(next(e["value"] for e in server["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI"))
    assert backend.scheme == "postgresql+psycopg2" and backend.hostname in services


# -- machines of your own: ray up -------------------------------------------------------------------------------


def test_ray_up_config_passes_rays_own_checks(image):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = one(DOCKER / "ray-up.yaml")
    validate_config(prepare_config(config))
    assert config["docker"]["image"] == image


def test_ray_up_keeps_dashboard_and_mlflow_on_localhost_and_workers_on_gpus():
    config = one(DOCKER / "ray-up.yaml")
    head = ray_start(config["head_start_ray_commands"], "--head")
    assert head["--dashboard-host"] == "127.0.0.1"
    assert ray_start(config["worker_start_ray_commands"], "--address")["--address"] == f"$RAY_HEAD_IP:{head['--port']}"
    (mlflow,) = [shlex.split(c) for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1"
    host = urlsplit(dockerfile_args()["TRACKING_URI"]).hostname
    assert f"{host}:*" in mlflow[mlflow.index("--allowed-hosts") + 1].split(",")
    docker = config["docker"]
    assert any(o.startswith("--gpus") for o in docker["worker_run_options"])
    assert any(o.endswith(":/app/runs") for o in docker["run_options"])  # one run folder for every node
    assert f"--add-host={host}:127.0.0.1" in docker["head_run_options"]  # the specs' URI is the head's MLflow
