"""How the service is run: the CLI commands, the replay client, the Dockerfile, make serve."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from episodic_koopman.cli import app

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, rest = line.partition(" ")
            out.append((name.upper(), rest.strip()))
    return out


def test_dockerfile_runs_the_serve_entry_point_as_a_non_root_user():
    instructions = dockerfile_instructions()
    get = lambda name: [rest for n, rest in instructions if n == name]  # noqa: E731
    assert re.fullmatch(r"python:3\.11-slim(@sha256:[0-9a-f]+)?", get("FROM")[0])
    entrypoint = json.loads(get("ENTRYPOINT")[-1])
    assert entrypoint == ["episodic-koopman", "serve", "--host", "0.0.0.0"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["episodic-koopman"] == "episodic_koopman.cli:main"
    # The entry point and its default arguments parse as the real CLI's `serve` command.
    command = typer.main.get_command(app)
    cmd = json.loads(get("CMD")[-1])
    serve = command.commands["serve"]  # type: ignore[attr-defined]
    context = serve.make_context("serve", [*entrypoint[2:], *cmd])
    assert context.params["host"] == "0.0.0.0" and str(context.params["data_dir"]) == "/data"
    users = get("USER")
    assert users and users[-1] not in ("root", "0")
    assert '"/data"' in get("VOLUME")[0]
    assert any("EPISODIC_KOOPMAN_DATA_DIR=/data" in env for env in get("ENV"))
    healthcheck = get("HEALTHCHECK")[0]
    assert "/healthz" in healthcheck and "8000" in healthcheck
    assert "service" in " ".join(get("RUN")) and any("COPY" == n for n, _ in instructions)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git"} <= set(ignored)


def test_make_serve_runs_the_service():
    makefile = (ROOT / "Makefile").read_text()
    serve = makefile.split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert "episodic-koopman serve --data-dir ./var" in serve
    assert "service" in makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]


def test_cli_has_serve_and_replay():
    runner = CliRunner()
    for name in ("serve", "replay"):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
    assert "--data-dir" in runner.invoke(app, ["serve", "--help"]).output


def test_replay_streams_a_csv_and_prints_live_forecasts(live_server, tmp_path):
    server = live_server()
    csv = tmp_path / "hourly.csv"
    rows = ["dteday,hr,cnt"] + [
        f"2011-01-{1 + i // 24:02d},{i % 24},{int(50 + 40 * ((i % 24) / 23))}" for i in range(120)
    ]
    csv.write_text("\n".join(rows) + "\n")
    args = f"replay {csv} --target cnt --time dteday+hr --url {server.url} --speed 0 --batch 10"
    result = CliRunner().invoke(app, [*shlex.split(args), "--every", "3", "--horizon", "4"])
    assert result.exit_code == 0, result.output
    assert "final forecast" in result.output
    assert "after t=2011-01-05T23:00:00" in result.output
    assert "120 accepted, 0 duplicates" in result.output
    stored = httpx.get(f"{server.url}/v1/series/cnt/observations", params={"limit": 2}).json()
    assert stored["total"] == 120
    assert [o["t"] for o in stored["items"]] == ["2011-01-01T00:00:00", "2011-01-01T01:00:00"]
    # A second replay is idempotent: every row is a duplicate.
    again = CliRunner().invoke(app, [*shlex.split(args), "--every", "100"])
    assert "0 accepted, 120 duplicates" in again.output


def test_dockerfile_copies_everything_the_package_build_reads():
    """pip install in the image fails if the readme or a licence file was not copied."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {project["readme"], *project.get("license-files", []), "pyproject.toml", "src"}
    copied = set()
    for name, rest in dockerfile_instructions():
        if name == "COPY":
            copied.update(p.rstrip("/").removeprefix("./") for p in shlex.split(rest)[:-1])
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"


def test_docker_compose_runs_the_api_ray_and_postgresql_with_real_flags():
    """docker-compose.yml cannot run here (no docker engine): check it against the CLI."""
    yaml = pytest.importorskip("yaml", reason="pyyaml is not installed (ray brings it)")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "ray-head", "ray-worker", "api"}
    # Every image but PostgreSQL's is this project's Dockerfile with the ray extra.
    for name in ("ray-head", "ray-worker", "api"):
        assert "ray" in services[name]["build"]["args"]["EXTRAS"].split(",")
    instructions = dockerfile_instructions()
    entrypoint = json.loads([rest for n, rest in instructions if n == "ENTRYPOINT"][-1])
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    context = serve.make_context("serve", [*entrypoint[2:], *services["api"]["command"]])
    assert context.params["engine"] == "ray"
    assert context.params["database"].startswith("postgresql://")
    assert context.params["database"].split("@")[1].startswith("postgres:")
    head_port = next(
        a.split("=")[1] for a in services["ray-head"]["command"] if a.startswith("--port=")
    )
    assert context.params["ray_address"] == f"ray-head:{head_port}"
    assert services["ray-head"]["entrypoint"] == ["ray"]
    assert services["ray-head"]["command"][:2] == ["start", "--head"]
    worker = services["ray-worker"]["command"]
    assert worker[0] == "start" and f"--address=ray-head:{head_port}" in worker
    assert "--block" in worker and "--block" in services["ray-head"]["command"]
