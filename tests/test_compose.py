"""compose.yaml and the Dockerfile line up with the settings: every service is there with a
health check, each flexdb service's environment is a valid configuration, and the ports,
URLs and health checks point at where the services really listen. (No Docker engine runs
here: the files are checked, not started.)"""
from __future__ import annotations

import re

import yaml

from rpc_server.config import load_settings

from .conftest import ROOT

SERVICES = {"postgres", "redis", "rpc_server", "rest_facade", "sandbox_worker"}
INTERPOLATION = re.compile(r"\$\{([A-Z_]+)(?::[?-][^}]*)?\}")


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def environment(service: dict) -> dict[str, str]:
    """The service's environment with ${VAR:?...} filled in as an operator would."""
    filled = {"POSTGRES_PASSWORD": "pw", "FLEXDB_SECRET_KEY": "k" * 40,
              "FLEXDB_SANDBOX_SECRET": "s" * 40, "FLEXDB_CORS_ORIGINS": ""}
    return {k: INTERPOLATION.sub(lambda m: filled[m.group(1)], str(v))
            for k, v in service.get("environment", {}).items()}


def health_url(service: dict) -> str:
    test = " ".join(service["healthcheck"]["test"])
    return re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", test).group(0)


def test_every_service_is_there_with_a_health_check():
    services = compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), name


def test_each_flexdb_service_has_a_valid_configuration_that_lines_up():
    services = compose()["services"]
    server = load_settings(environment(services["rpc_server"]))
    facade = load_settings(environment(services["rest_facade"]))
    worker = load_settings(environment(services["sandbox_worker"]))

    # rpc_server: listens where it is published and checked, on the compose database.
    assert server.host == "0.0.0.0"
    assert f"{server.port}:{server.port}" in services["rpc_server"]["ports"]
    assert health_url(services["rpc_server"]) == f"http://127.0.0.1:{server.port}/ready"
    assert "@postgres:5432/" in server.database_url
    assert server.redis_url.startswith("redis://redis:6379/")
    assert server.sandbox_secret and server.secret_key
    # The facade and the worker reach rpc_server by its service name and port.
    assert facade.rpc_url == worker.rpc_url == f"http://rpc_server:{server.port}/jsonrpc"
    assert facade.facade_host == "0.0.0.0"
    assert f"{facade.facade_port}:{facade.facade_port}" in services["rest_facade"]["ports"]
    assert health_url(services["rest_facade"]) == f"http://127.0.0.1:{facade.facade_port}/health"
    # rpc_server reaches the worker where it listens; both sign with the same secret.
    assert server.sandbox_url == f"http://sandbox_worker:{worker.sandbox_port}"
    assert worker.sandbox_host == "0.0.0.0"
    assert str(worker.sandbox_port) in services["sandbox_worker"]["expose"]
    assert "ports" not in services["sandbox_worker"]  # never published
    assert health_url(services["sandbox_worker"]) == \
        f"http://127.0.0.1:{worker.sandbox_port}/health"
    assert worker.sandbox_secret == server.sandbox_secret
    # Start order follows health.
    assert services["rpc_server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["rest_facade"]["depends_on"]["rpc_server"]["condition"] == "service_healthy"


def test_secrets_are_required_not_defaulted():
    text = (ROOT / "compose.yaml").read_text()
    for name in ("FLEXDB_SECRET_KEY", "FLEXDB_SANDBOX_SECRET", "POSTGRES_PASSWORD"):
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), name


def test_the_image_runs_unprivileged_and_exposes_the_service_ports():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert any(line.startswith("FROM python:3.11") for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    exposed = {p for line in lines if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert {"5000", "5001", "8000"} <= exposed
    assert any("FLEXDB_MIGRATIONS_DIR=/app/sql" in line for line in lines)
    assert any(line.startswith("COPY sql") for line in lines)
