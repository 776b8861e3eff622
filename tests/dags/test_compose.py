"""docker-compose.yml: the local Airflow 3 + PostgreSQL stack is complete and valid."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
AIRFLOW_SERVICES = {
    "airflow-init": None,
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
MOUNTS = {
    "./dags": "/opt/ctdc/dags",
    "./plugins": "/opt/ctdc/plugins",
    "./schemas": "/opt/ctdc/schemas",
    "./mappings": "/opt/ctdc/mappings",
    "./data/landing": "/opt/ctdc/data/landing",
    "./data/releases": "/opt/ctdc/data/releases",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _mounts(service: dict) -> dict[str, tuple[str, str]]:
    """host path -> (container path, mode) for the bind mounts of a service."""
    out = {}
    for entry in service.get("volumes", []):
        host, container, *mode = entry.split(":")
        out[host] = (container, mode[0] if mode else "rw")
    return out


def _airflow_pin() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    deps = project["optional-dependencies"]["airflow"]  # not a core dependency (check-delivery)
    (pin,) = [d for d in deps if d.startswith("apache-airflow==")]
    return pin.split("==")[1]


CELERY_SERVICES = {"redis", "airflow-worker", "minio", "minio-init"}


def test_services_exist(compose):
    assert set(compose["services"]) == {"postgres", *AIRFLOW_SERVICES, *CELERY_SERVICES}
    for name, command in AIRFLOW_SERVICES.items():
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        if command:
            assert service["command"] == command
            assert "healthcheck" in service
            assert service["depends_on"]["airflow-init"]["condition"] == (
                "service_completed_successfully"
            )
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "8080" in compose["services"]["airflow-apiserver"]["ports"][0]


def test_airflow_services_mount_the_project_folders(compose):
    for name in AIRFLOW_SERVICES:
        mounts = _mounts(compose["services"][name])
        for host, container in MOUNTS.items():
            assert mounts[host][0] == container, (name, host)
        assert mounts["./data/landing"][1] == "ro"  # extracts are only ever read
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["CTDC_LANDING"] == MOUNTS["./data/landing"]
        assert env["CTDC_OUT"] == MOUNTS["./data/releases"]
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == MOUNTS["./dags"]
        # Airflow imports every module of its plugins folder by file name: the package's
        # modules are left out by plugins/.airflowignore, only the report plugin is loaded.
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == MOUNTS["./plugins"]
    ignored = (ROOT / "plugins" / ".airflowignore").read_text(encoding="utf-8").split()
    assert {"ctdc_harmonizer/", "ctdc_release_report/"} <= set(ignored)


def test_environment(compose):
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}"
    # The lock file's drivers: psycopg 3 (sync) and asyncpg (async), as the README documents.
    sync, async_ = (env[f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN{s}"] for s in ("", "_ASYNC"))
    assert sync.startswith("postgresql+psycopg://") and async_.startswith("postgresql+asyncpg://")
    assert sync.endswith("@postgres:5432/airflow") and async_.endswith("@postgres:5432/airflow")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" in readme and "asyncpg" in readme
    assert env["AIRFLOW_CONN_CTDC_SMTP"] and env["CTDC_ALERT_TO"]
    assert env["CTDC_WAREHOUSE_URL"].startswith("postgresql+psycopg://")
    assert env["CTDC_WAREHOUSE_URL"].endswith("@postgres:5432/ctdc")
    assert env["GX_ANALYTICS_ENABLED"] == "false"
    init_env = compose["services"]["airflow-init"]["environment"]
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true"


def test_celery_variant_is_a_profile_with_two_workers_and_redis(compose):
    services = compose["services"]
    for name in CELERY_SERVICES:
        assert services[name]["profiles"] == ["celery"]
    worker = services["airflow-worker"]
    assert worker["command"] == "celery worker"
    assert worker["deploy"]["replicas"] == 2
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert "postgres:5432/airflow" in env["AIRFLOW__CELERY__RESULT_BACKEND"]


def test_celery_workers_share_intermediates_through_a_private_minio_bucket(compose):
    """Profile celery: the workers' CTDC_WORK_URL names a bucket of the MinIO service, with no
    credential in it (the URL is in XCom); endpoint and keys come from botocore's variables, of
    a user limited to that bucket, made by minio-init with the bucket (private, encrypted,
    expiring). The release folder and its lock stay in the shared ./data/releases mount."""
    from urllib.parse import urlsplit

    services = compose["services"]
    worker = services["airflow-worker"]
    env = worker["environment"]
    url = urlsplit(env["CTDC_WORK_URL"])
    assert url.scheme == "s3" and "@" not in url.netloc and not url.query
    bucket = url.netloc
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    assert worker["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert _mounts(worker)["./data/releases"][0] == MOUNTS["./data/releases"]
    minio = services["minio"]
    assert minio["image"].startswith("quay.io/minio/minio:RELEASE.")  # pinned, not latest
    assert "ports" not in minio  # reachable from the compose network only
    assert minio["environment"]["MINIO_KMS_SECRET_KEY"]
    init = services["minio-init"]
    script = init["command"][-1]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    for step in (
        f"mc mb --ignore-existing ctdc/{bucket}",
        f"mc anonymous set none ctdc/{bucket}",
        f"mc encrypt set sse-s3 ctdc/{bucket}",
        f"mc ilm import ctdc/{bucket}",
        '"Expiration": {"Days": 1}',
        f"arn:aws:s3:::{bucket}/*",
    ):
        assert step in script, step
    # The workers' user is the one minio-init creates, not MinIO's root.
    assert init["environment"]["CTDC_S3_ACCESS_KEY"] == env["AWS_ACCESS_KEY_ID"]
    assert init["environment"]["CTDC_S3_SECRET_KEY"] == env["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_ACCESS_KEY_ID"] != minio["environment"]["MINIO_ROOT_USER"]
    # Only the workers get the work URL: without Celery, intermediates stay in <out>/.work.
    assert all("CTDC_WORK_URL" not in services[name]["environment"] for name in AIRFLOW_SERVICES)


def test_the_image_installs_the_s3_extra():
    assert "--extra s3" in DOCKERFILE.read_text(encoding="utf-8")
    assert "--extra airflow" in DOCKERFILE.read_text(encoding="utf-8")  # not a core dependency
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert any(d.startswith("s3fs") for d in extras["optional-dependencies"]["s3"])


def test_postgres_creates_the_warehouse(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "healthcheck" in postgres
    mounts = _mounts(postgres)
    script = "./docker/postgres/init-ctdc-warehouse.sh"
    assert mounts[script][0].startswith("/docker-entrypoint-initdb.d/")
    assert "CREATE DATABASE ctdc" in (ROOT / script).read_text(encoding="utf-8")


def test_image_matches_the_airflow_pin():
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.M).group(1)
    assert base == f"apache/airflow:{_airflow_pin()}-python3.11"


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("profile", [[], ["--profile", "celery"]], ids=["local", "celery"])
def test_docker_compose_config_is_valid(profile):
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, *profile, "--project-directory", str(ROOT), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
