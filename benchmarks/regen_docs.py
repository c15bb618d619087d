"""Regenerate the README's `replay` example from a real run (``make docs-examples``).

Starts ``episodic-koopman serve`` on a free port and a fresh data dir, replays the
bike-share file with the command the README shows, asks for a 3-step forecast as the
README's ``curl`` does, and writes the transcript between the README's
``<!-- replay-example -->`` markers. The command lines shown are the user's (default
URL); only the port differs in the run. Needs the bike-share file (data/README.md).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from episodic_koopman.datasets import find_data_file

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- replay-example -->", "<!-- /replay-example -->"
BIKE = "bike_sharing_hourly.csv"
REPLAY_ARGS = [
    *("--target", "cnt", "--time", "dteday+hr", "--series", "bikes"),
    *("--speed", "480", "--batch", "24", "--every", "10", "--limit", "2400"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready in {timeout} s")


def compact_forecast(body: dict) -> str:
    """The forecast JSON as the README shows it: rounded, one recalled episode, no spectrum."""

    def rounded(values: list) -> list:
        return [None if v is None else round(v, 2) for v in values]

    first = body["recalled"][0] if body["recalled"] else None
    if first is not None:
        first = {**first, "distance": round(first["distance"], 3)}
        first["weight"] = round(first["weight"], 3)
    head = {key: body[key] for key in ("series_id", "n_observations", "last_t", "horizon", "level")}
    lines = [
        json.dumps(head, separators=(",", ":"))[:-1] + ",",
        f' "timestamps":{json.dumps(body["timestamps"], separators=(",", ":"))},',
        f' "mean":{json.dumps(rounded(body["mean"]))},'.replace(", ", ","),
        f' "lower":{json.dumps(rounded(body["lower"]))},'.replace(", ", ",")
        + f'"upper":{json.dumps(rounded(body["upper"]))},'.replace(", ", ","),
        f' "recall_applied":{json.dumps(body["recall_applied"])},"recalled":['
        + (json.dumps(first, separators=(",", ":")) + ",...]," if first else "],"),
        ' "spectrum":[...]}',
    ]
    return "\n".join(lines)


def run(data_file: Path) -> str:
    script = Path(sys.executable).with_name("episodic-koopman")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [str(script), "serve", "--port", str(port), "--data-dir", tmp, "--log-level", "warning"]
        )
        try:
            wait_ready(url, server)
            replay = subprocess.run(
                [str(script), "replay", str(data_file), *REPLAY_ARGS, "--url", url],
                capture_output=True,
                text=True,
                env={"COLUMNS": "80", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
                check=True,
            )
            body = httpx.get(f"{url}/v1/series/bikes/forecast", params={"horizon": 3}).json()
        finally:
            server.terminate()
            server.wait(60)
    # The timing line varies from run to run; keep it but say it is one run's.
    shown = " ".join(REPLAY_ARGS[:6]) + " \\\n    " + " ".join(REPLAY_ARGS[6:])
    return "\n".join(
        [
            "```console",
            "$ make serve &",
            f"$ .venv/bin/episodic-koopman replay ../shared/data/{BIKE} {shown}",
            replay.stdout.rstrip(),
            "$ curl -s 'localhost:8000/v1/series/bikes/forecast?horizon=3'",
            compact_forecast(body),
            "```",
        ]
    )


def update_readme(block: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{block}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help=f"Path of {BIKE}.")
    parser.add_argument("--print", action="store_true", help="Print; do not write the README.")
    args = parser.parse_args()
    data_file = args.data or find_data_file(BIKE)
    if data_file is None:
        raise SystemExit(f"{BIKE} not found: see data/README.md (or pass --data)")
    block = run(data_file)
    if args.print:
        print(block)
    else:
        update_readme(block)
        print(block)


if __name__ == "__main__":
    main()
