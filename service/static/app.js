// The live web view of episodic-koopman: reads the /v1 API of the server that served it.
// The series list polls /v1/overview; the chosen series follows its SSE forecast stream.
// Nothing is stored but the API key, and that only in this tab (see api.js).

import { AuthError, GoneError, RequestError, api, eventStream, hasKey, setKey } from "./api.js";
import { EPISODE_COLOURS, clearCharts, drawForecast, drawSpectrum } from "./charts.js";
import { $, addCell, fmt, fmtT, pct } from "./format.js";

const LIST_REFRESH_MS = 5000;
const LIST_LIMIT = 200;
// The chart overlays the most-weighted episodes (negligible ones would only add noise);
// the panel lists every recalled episode.
const TOP_EPISODES = EPISODE_COLOURS.length;
const MIN_DRAWN_WEIGHT = 0.02;
const MAX_VIEW = 600;

// ------------------------------------------------------------------ status and the key
function setStatus(state, text) {
  document.body.dataset.stream = state;
  $("status").textContent = text;
}

function needKey(message) {
  setStatus("key", "API key needed");
  if (message || $("key-panel").hidden) $("key-message").textContent = message;
  $("key-panel").hidden = false;
  $("key-input").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault(); // the key never goes into a URL
  setKey($("key-input").value.trim());
  $("key-input").value = "";
  $("key-panel").hidden = true;
  start();
});

/** Ask for a key on a 401 (true if handled). */
function handleAuth(error) {
  if (!(error instanceof AuthError)) return false;
  const rejected = hasKey();
  setKey("");
  needKey(rejected ? "That key was not accepted." : "");
  return true;
}

// ------------------------------------------------------------------ series list
let listTimer = null;
let listRefreshQueued = false;
let overview = new Map();

async function refreshList() {
  clearTimeout(listTimer);
  try {
    const page = await api(`/v1/overview?limit=${LIST_LIMIT}`);
    overview = new Map(page.items.map((item) => [item.id, item]));
    renderList(page);
    if (current) renderFacts();
    else if (!selectedFromHash() && page.items.length) {
      // Nothing chosen yet: show the first series (replacing, not adding, a history entry).
      history.replaceState(null, "", `#series=${encodeURIComponent(page.items[0].id)}`);
      select(page.items[0].id);
    }
  } catch (error) {
    if (handleAuth(error)) return;
  }
  listTimer = setTimeout(refreshList, LIST_REFRESH_MS);
}

/** Refresh the list soon, at most once a second (memory and coverage follow the stream). */
function queueListRefresh() {
  if (listRefreshQueued) return;
  listRefreshQueued = true;
  setTimeout(() => {
    listRefreshQueued = false;
    refreshList();
  }, 1000);
}

function renderList(page) {
  const body = $("series-table").tBodies[0];
  body.replaceChildren();
  const partial = page.items.length < page.total ? `first ${page.items.length} of ` : "";
  $("series-total").textContent = page.total ? `(${partial}${page.total})` : "";
  $("series-empty").hidden = page.total > 0;
  for (const item of page.items) {
    const row = body.insertRow();
    row.dataset.seriesId = item.id;
    row.setAttribute("aria-selected", String(current !== null && current.id === item.id));
    const link = document.createElement("a");
    link.href = `#series=${encodeURIComponent(item.id)}`;
    link.textContent = item.id;
    row.insertCell().append(link);
    addCell(row, String(item.n_observations), "num");
    addCell(row, fmtT(item.last_t), "t");
    addCell(row, item.memory_size === null ? "…" : String(item.memory_size), "num");
    addCell(row, pct(item.coverage), "num");
    row.addEventListener("click", () => {
      location.hash = `series=${encodeURIComponent(item.id)}`;
    });
  }
}

// ------------------------------------------------------------------ one series
// `current` is the chosen series: its parameters (`info`), the newest forecast, the one
// drawn (`shown`), and an abort controller that ends its stream and fetches on a switch.
let current = null;

function selectedFromHash() {
  const match = /^#series=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

async function select(id) {
  if (current) current.abort.abort();
  current = null;
  $("series-view").hidden = id === null;
  $("no-selection").hidden = id !== null;
  for (const row of $("series-table").tBodies[0].rows) {
    row.setAttribute("aria-selected", String(row.dataset.seriesId === id));
  }
  if (id === null) return;
  const state = { id, abort: new AbortController(), info: null, forecast: null, shown: null, drawn: 0 };
  current = state;
  clearSeriesView(id);
  try {
    state.info = await api(`/v1/series/${encodeURIComponent(id)}`, state.abort.signal);
  } catch (error) {
    if (handleAuth(error) || state.abort.signal.aborted) return;
    setStatus("idle", error instanceof GoneError ? `no series ${id}` : String(error));
    return;
  }
  $("horizon").value = String(state.info.params.episode_horizon);
  const channels = state.info.channels || [];
  $("channel-label").hidden = channels.length === 0;
  $("channel").replaceChildren(
    ...channels.map((c) => Object.assign(document.createElement("option"), { value: c, textContent: c })),
  );
  renderFacts();
  follow(state);
}

/** Nothing of the previous series may linger while this one loads. */
function clearSeriesView(id) {
  $("series-title").textContent = id;
  for (const fact of ["forecast-n", "fact-last-t", "fact-memory", "fact-coverage", "fact-mode"]) {
    $(fact).textContent = "–";
  }
  $("episodes").replaceChildren();
  $("episodes-note").textContent = "";
  $("spectrum-table").tBodies[0].replaceChildren();
  clearCharts();
}

$("horizon").addEventListener("change", () => {
  if (current && current.info) {
    current.abort.abort();
    const state = { ...current, abort: new AbortController(), forecast: null };
    current = state;
    follow(state);
  }
});
$("channel").addEventListener("change", () => current && current.forecast && draw(current));
window.addEventListener("hashchange", () => select(selectedFromHash()));

// ------------------------------------------------------------------ the forecast stream
/** Follow the series' forecast stream until another series is chosen; reconnect on loss. */
async function follow(state) {
  const horizon = Math.max(1, Math.round(Number($("horizon").value)) || 24);
  const path = `/v1/series/${encodeURIComponent(state.id)}/forecast/stream?horizon=${horizon}`;
  let delay = 500;
  while (!state.abort.signal.aborted) {
    try {
      const events = await eventStream(path, state.abort.signal);
      setStatus("live", "live");
      delay = 500;
      for await (const [event, data] of events) {
        if (event === "forecast") onForecast(state, JSON.parse(data));
        else if (event === "deleted") throw new GoneError(state.id);
      }
    } catch (error) {
      if (state.abort.signal.aborted || handleAuth(error)) return;
      if (error instanceof GoneError) {
        setStatus("idle", `series ${state.id} was deleted`);
        refreshList();
        return;
      }
      if (error instanceof RequestError && error.status === 422) {
        setStatus("idle", `cannot stream: ${error.detail}`); // retrying will not help
        return;
      }
    }
    // The stream ended or failed (server restart, network): reconnect with backoff.
    setStatus("retrying", "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

function onForecast(state, forecast) {
  if (current !== state) return;
  state.forecast = forecast;
  draw(state);
  queueListRefresh();
}

// ------------------------------------------------------------------ drawing
// Observations are immutable, so an episode's values are fetched once per span.
const episodeCache = new Map();

function episodeValues(state, from, to) {
  const key = `${state.id}|${state.info.created_at}|${from}|${to}`;
  let values = episodeCache.get(key);
  if (!values) {
    const path = `/v1/series/${encodeURIComponent(state.id)}/observations?offset=${from}&limit=${to - from + 1}`;
    values = api(path, state.abort.signal).then((page) => page.items);
    episodeCache.set(key, values);
    values.catch(() => episodeCache.delete(key));
  }
  return values;
}

/** Past points drawn: four horizons (at least 48), at most the fit's window. */
function viewLength(state, horizon) {
  const params = state.info.params;
  // delays is null under an automatic embedding, which ends at 32 lags.
  const fitWindow = params.window + (params.delays ?? 32);
  return Math.min(MAX_VIEW, Math.max(2 * horizon, Math.min(fitWindow, Math.max(4 * horizon, 48))));
}

async function draw(state) {
  const forecast = state.forecast;
  const token = (state.drawn += 1);
  const n = forecast.n_observations;
  const length = Math.min(n, viewLength(state, forecast.horizon));
  const first = n - length;
  const episodeHorizon = state.info.params.episode_horizon;
  const top = [...forecast.recalled]
    .sort((a, b) => b.weight - a.weight)
    .filter((e) => e.weight >= MIN_DRAWN_WEIGHT)
    .slice(0, TOP_EPISODES);
  let recent;
  let episodes;
  try {
    const observations = length
      ? api(
          `/v1/series/${encodeURIComponent(state.id)}/observations?offset=${first}&limit=${length}`,
          state.abort.signal,
        )
      : Promise.resolve({ items: [] });
    // Each episode from where it lines up with the first drawn point to what followed it.
    const spans = top.map((e) =>
      episodeValues(state, Math.max(e.window_start, e.origin - (n - 1 - first)), e.origin + episodeHorizon),
    );
    recent = (await observations).items;
    episodes = await Promise.all(spans);
  } catch (error) {
    if (!state.abort.signal.aborted) handleAuth(error);
    return;
  }
  // A newer forecast may have arrived while this one fetched: draw only the newest.
  if (current !== state || token !== state.drawn) return;
  const channel = forecast.channels ? $("channel").value || forecast.channels[0] : null;
  state.shown = forecast;
  renderFacts();
  drawForecast({ forecast, recent, top, episodes, channel });
  renderEpisodes(forecast, top);
  drawSpectrum(forecast.spectrum);
  renderSpectrumTable(forecast.spectrum);
}

function renderFacts() {
  const state = current;
  if (!state) return;
  const forecast = state.shown;
  const item = overview.get(state.id);
  if (forecast) {
    $("forecast-n").textContent = String(forecast.n_observations);
    $("fact-last-t").textContent = fmtT(forecast.last_t);
    $("fact-mode").textContent = forecastMode(forecast);
  }
  if (item) {
    $("fact-memory").textContent = item.memory_size === null ? "…" : `${item.memory_size} episodes`;
    $("fact-coverage").textContent =
      item.coverage === null ? "–" : `${pct(item.coverage)} at ${pct(item.level)}`;
  }
}

function forecastMode(forecast) {
  if (forecast.n_observations === 0) return "no observations yet";
  if (forecast.fallback) return "warming up (last value)";
  const source = forecast.recall_applied ? "memory + operator" : "operator only";
  return `${source}, ${pct(forecast.level)} interval`;
}

// ------------------------------------------------------------------ the episode panel
function episodesNote(forecast) {
  if (forecast.n_observations === 0) return "No observations yet.";
  if (forecast.fallback) return "The model is still warming up: it fits once it has 3 × delays observations.";
  if (!forecast.recalled.length) {
    return "No stored episode is close enough to the present: the operator forecasts alone.";
  }
  return forecast.recall_applied
    ? "These episodes resemble the present; the forecast mixes in what followed them."
    : "Closest episodes (recall not applied to this forecast).";
}

/** Every recalled episode by weight, named by id; those drawn share their chart colour. */
function renderEpisodes(forecast, top) {
  $("episodes-note").textContent = episodesNote(forecast);
  const drawn = new Map(top.map((e, k) => [e.id, `swatch-${k}`]));
  const list = $("episodes");
  list.replaceChildren();
  for (const episode of [...forecast.recalled].sort((a, b) => b.weight - a.weight)) {
    const colour = drawn.get(episode.id) ?? "swatch-rest";
    const item = document.createElement("li");
    item.dataset.episodeId = String(episode.id);
    const part = (tag, className, text) =>
      Object.assign(document.createElement(tag), { className, textContent: text ?? "" });
    const [start, origin, end] = episode.span.map(fmtT);
    const bar = part("span", "bar");
    const fill = part("span", colour);
    fill.style.width = `${Math.round(100 * Math.max(0, Math.min(1, episode.weight || 0)))}%`;
    bar.append(fill);
    item.append(
      part("span", `swatch ${colour}`),
      part("span", "name", `episode ${episode.id}`),
      part("span", "weight", `weight ${fmt(episode.weight, 3)} · distance ${fmt(episode.distance, 3)}`),
      part("span", "span", `window ${start} → ${origin}, then followed to ${end}`),
      bar,
    );
    list.append(item);
  }
}

function renderSpectrumTable(rows) {
  const body = $("spectrum-table").tBodies[0];
  body.replaceChildren();
  const strongest = [...rows].sort((a, b) => (b.amplitude || 0) - (a.amplitude || 0)).slice(0, 6);
  for (const row of strongest) {
    const tr = body.insertRow();
    addCell(tr, row.period === null ? "–" : fmt(row.period, 3), "num");
    addCell(tr, fmt(row.magnitude, 3), "num");
    addCell(tr, fmt(row.growth_rate, 2), "num");
    addCell(tr, fmt(row.amplitude, 3), "num");
  }
}

// ------------------------------------------------------------------ start
function start() {
  setStatus("idle", "connecting");
  refreshList();
  select(selectedFromHash());
}

start();
