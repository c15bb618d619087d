"""A Python client for the episodic-koopman HTTP service (``episodic-koopman serve``).

It needs ``httpx`` (in the ``service`` extra), imported when a `Client` is made, so
importing this module costs nothing beyond the library itself. Forecasts come back
as the library's own `Forecast` (a `ServedForecast`, which adds where the forecast
stands; see `episodic_koopman.served_forecast`), so code written against a local
`EpisodicKoopman` reads served ones alike.

With a server running (``make serve``)::

    >>> from episodic_koopman.client import Client
    >>> with Client("http://127.0.0.1:8000") as ek:                      # doctest: +SKIP
    ...     ek.push("room-1", [("2024-05-01T00:00:00Z", 21.4), ("2024-05-01T01:00:00Z", 21.1)])
    ...     f = ek.forecast("room-1", horizon=12, level=0.8)
    ...     for live in ek.stream("room-1", horizon=12):  # a Forecast per accepted batch
    ...         print(live.n_observations, live.mean[:3])

What a served forecast turns into, without a server:

    >>> payload = {
    ...     "series_id": "room-1", "n_observations": 2, "last_t": "2024-05-01T01:00:00",
    ...     "horizon": 2, "level": 0.9, "channels": None,
    ...     "timestamps": ["2024-05-01T02:00:00", "2024-05-01T03:00:00"],
    ...     "mean": [21.1, 21.1], "lower": [None, None], "upper": [None, None],
    ...     "fallback": True, "recall_applied": False, "recalled": [], "spectrum": [],
    ... }
    >>> f = parse_forecast(payload)
    >>> f.mean.tolist(), f.lower.tolist(), f.fallback, f.spectrum is None
    ([21.1, 21.1], [nan, nan], True, True)
    >>> f.timestamps[0], f.n_observations
    ('2024-05-01T02:00:00', 2)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .served_forecast import ServedForecast, parse_forecast, spectrum_from_rows

__all__ = [
    "API_KEY_VARIABLE",
    "Client",
    "ClientError",
    "PushResult",
    "ServedForecast",
    "ServerUnavailable",
    "parse_forecast",
    "spectrum_from_rows",
]

if TYPE_CHECKING:
    import httpx

#: The environment variable holding the bearer key (the server reads it too, as a list).
API_KEY_VARIABLE = "EPISODIC_KOOPMAN_API_KEY"
_FORMER_API_KEY_VARIABLE = "EPISODIC_KOOPMAN_API_KEYS"


class ClientError(Exception):
    """A request failed. ``status`` is the HTTP status (None when the server was not
    reached), ``detail`` the server's explanation, and ``acknowledged`` the observations
    of the failed `Client.push` call that the server had acknowledged (durably stored)
    before the failure."""

    def __init__(
        self, message: str, status: int | None = None, detail: Any = None, acknowledged: int = 0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.acknowledged = acknowledged


class ServerUnavailable(ClientError):
    """The server could not be reached, or kept answering 503, through every retry."""


@dataclass(frozen=True)
class PushResult:
    """What the server acknowledged: every row sent (``accepted`` new + ``duplicates``)."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    last_t: str | float | None = None
    n_observations: int = 0


def _key_from_environment() -> str | None:
    for name in (API_KEY_VARIABLE, _FORMER_API_KEY_VARIABLE):
        keys = [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]
        if keys:
            return keys[0]  # the server's variable may list several; any one will do
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _observation(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return {"t": _jsonable(item["t"]), "y": _jsonable(item["y"])}
    t, y = item
    return {"t": _jsonable(t), "y": _jsonable(y)}


class Client:
    """Push observations to the service and read its forecasts, memory and series.

    ``api_key`` defaults to ``$EPISODIC_KOOPMAN_API_KEY`` (the first key, if the
    variable lists several for the server). Connection errors, cut-off responses and
    503s (the server starting, or its apply backlog full) are retried ``retries``
    times with exponential backoff from ``backoff`` seconds (or the server's
    ``Retry-After``). Any other error status raises `ClientError` at once.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.25,
        batch_size: int = 1000,
        page_size: int = 100,
    ) -> None:
        import httpx  # the service extra; imported here to keep `import` light

        if retries < 0 or batch_size < 1 or page_size < 1:
            raise ValueError("retries must be >= 0, batch_size and page_size >= 1")
        key = api_key if api_key is not None else _key_from_environment()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.batch_size = batch_size
        self.page_size = page_size
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def _request(self, method: str, path: str, acknowledged: int = 0, **kwargs: Any) -> Any:
        """One request with retries; the decoded JSON body (None for 204)."""
        import httpx

        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem, wait = f"cannot reach {self.url}: {exc or type(exc).__name__}", None
            else:
                if response.status_code < 400:
                    return response.json() if response.content else None
                if response.status_code != 503:
                    raise _error(response, acknowledged)
                problem = f"{self.url} is unavailable (503): {_detail(response)}"
                wait = _retry_after(response)
            if attempt >= self.retries:
                raise ServerUnavailable(problem, None, None, acknowledged)
            time.sleep(wait if wait is not None else min(self.backoff * 2**attempt, 5.0))
            attempt += 1

    def push(
        self,
        series_id: str,
        observations: Iterable[Any],
        *,
        batch_size: int | None = None,
    ) -> PushResult:
        """Send observations, ``batch_size`` per request, in order.

        ``observations`` are ``(t, y)`` pairs or ``{"t": ..., "y": ...}`` dicts: ``t`` an
        ISO-8601 string, a datetime or a number; ``y`` a number or a dict of channel to
        number. The first push creates the series with default parameters.

        Retrying is safe because the service is idempotent on ``(series, t)``: a batch
        whose response was lost is sent again and its stored rows count as duplicates,
        never twice. Raises `ClientError` (`ServerUnavailable` once retries are spent)
        whose ``acknowledged`` counts the rows of this call the server had stored.
        """
        size = batch_size or self.batch_size
        total = PushResult()
        chunk: list[dict[str, Any]] = []

        def send(rows: list[dict[str, Any]], total: PushResult) -> PushResult:
            body = self._request(
                "POST",
                f"/v1/series/{series_id}/observations",
                acknowledged=total.sent,
                json={"observations": rows},
            )
            return PushResult(
                sent=total.sent + len(rows),
                accepted=total.accepted + int(body["accepted"]),
                duplicates=total.duplicates + int(body["duplicates"]),
                last_t=body["last_t"],
                n_observations=int(body["n_observations"]),
            )

        for item in observations:
            chunk.append(_observation(item))
            if len(chunk) >= size:
                total, chunk = send(chunk, total), []
        if chunk:
            total = send(chunk, total)
        return total

    def configure(self, series_id: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Create a series or set its model parameters (`EpisodicKoopman` keywords)."""
        return self._request("PUT", f"/v1/series/{series_id}", json={"params": dict(params or {})})

    def delete(self, series_id: str) -> None:
        self._request("DELETE", f"/v1/series/{series_id}")

    def info(self, series_id: str) -> dict[str, Any]:
        """Parameters, counts, memory size, coverage and spectrum of one series."""
        return self._request("GET", f"/v1/series/{series_id}")

    def forecast(
        self, series_id: str, horizon: int = 24, level: float | None = None
    ) -> ServedForecast:
        """The forecast from every observation acknowledged so far (read-your-writes).

        ``level`` defaults to the series' ``level`` parameter.
        """
        params: dict[str, Any] = {"horizon": horizon}
        if level is not None:
            params["level"] = level
        return parse_forecast(
            self._request("GET", f"/v1/series/{series_id}/forecast", params=params)
        )

    def stream(
        self, series_id: str, horizon: int = 24, level: float | None = None
    ) -> Iterator[ServedForecast]:
        """Forecasts from the server-sent event stream: one at once, then one per accepted
        batch. Ends when the series is deleted; raises `ClientError` if the connection
        fails (it does not reconnect: a forecast missed meanwhile would go unnoticed)."""
        import httpx

        params: dict[str, Any] = {"horizon": horizon}
        if level is not None:
            params["level"] = level
        timeout = httpx.Timeout(self.timeout, read=None)  # heartbeats keep it alive
        try:
            with self._http.stream(
                "GET", f"/v1/series/{series_id}/forecast/stream", params=params, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response, 0)
                event, data = "message", []
                for line in response.iter_lines():
                    if line:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if field == "event":
                            event = value
                        elif field == "data":
                            data.append(value)
                        continue
                    if event == "forecast" and data:
                        yield parse_forecast(json.loads("\n".join(data)))
                    elif event == "deleted":
                        return
                    event, data = "message", []
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"the forecast stream from {self.url} broke: {exc}") from None

    def _pages(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._request(
                "GET", path, params={"offset": len(items), "limit": self.page_size}
            )
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items

    def series(self) -> list[dict[str, Any]]:
        """Every series (id, observation count, last ``t``, channels...), ordered by id."""
        return self._pages("/v1/series")

    def episodes(self, series_id: str) -> list[dict[str, Any]]:
        """The series' episodic memory, oldest first: each episode's span, spectrum,
        what it forecast and what happened."""
        return self._pages(f"/v1/series/{series_id}/episodes")


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text


def _error(response: httpx.Response, acknowledged: int) -> ClientError:
    detail = _detail(response)
    return ClientError(
        f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}",
        response.status_code,
        detail,
        acknowledged,
    )


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("retry-after", "")), 30.0)
    except ValueError:
        return None
