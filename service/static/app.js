// The live web view of episodic-koopman: reads the /v1 API of the server that served it.
// Charts are Chart.js (vendored in /ui/vendor). No data is stored but the API key, and that
// only in this tab's sessionStorage.
"use strict";

(() => {
  const KEY_STORAGE = "episodic-koopman.api-key";
  const LIST_REFRESH_MS = 5000;
  const LIST_LIMIT = 200;
  // The chart overlays the most-weighted episodes (negligible ones would only add noise);
  // the panel lists every recalled episode.
  const TOP_EPISODES = 4;
  const MIN_DRAWN_WEIGHT = 0.02;
  const EPISODE_COLOURS = ["#d95f02", "#7b3fb5", "#0f9d76", "#c2185b"];
  const MAX_VIEW = 600;

  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}
  class GoneError extends Error {}

  // ------------------------------------------------------------------ API access
  let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";

  function authHeaders(extra = {}) {
    return apiKey ? { ...extra, Authorization: `Bearer ${apiKey}` } : extra;
  }

  async function api(path, signal) {
    const res = await fetch(path, { headers: authHeaders(), signal, cache: "no-store" });
    if (res.status === 401) throw new AuthError("API key needed");
    if (res.status === 404) throw new GoneError(path);
    if (!res.ok) throw new Error(`${res.status} on ${path}`);
    return res.json();
  }

  function needKey(message) {
    setStatus("key", "API key needed");
    if (message || $("key-panel").hidden) $("key-message").textContent = message;
    $("key-panel").hidden = false;
    $("key-input").focus();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault(); // the key never goes into a URL
    apiKey = $("key-input").value.trim();
    $("key-input").value = "";
    sessionStorage.setItem(KEY_STORAGE, apiKey);
    $("key-panel").hidden = true;
    start();
  });

  function handleError(error) {
    if (error instanceof AuthError) {
      const rejected = Boolean(apiKey);
      apiKey = "";
      sessionStorage.removeItem(KEY_STORAGE);
      needKey(rejected ? "That key was not accepted." : "");
      return true;
    }
    return false;
  }

  function setStatus(state, text) {
    document.body.dataset.stream = state;
    $("status").textContent = text;
  }

  // ------------------------------------------------------------------ formatting
  function fmt(x, digits = 4) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "–";
    if (x !== 0 && (Math.abs(x) >= 1e6 || Math.abs(x) < 1e-3)) return x.toExponential(2);
    return Number(x.toPrecision(digits)).toString();
  }

  function fmtT(t) {
    if (t === null || t === undefined) return "–";
    if (typeof t === "number") return fmt(t, 8);
    return t.replace("T", " ").replace(/:00(\.0+)?(?=$|[Z+-])/, "");
  }

  function pct(x) {
    return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
  }

  // ------------------------------------------------------------------ series list
  let listTimer = null;
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
      if (handleError(error)) return;
    }
    listTimer = setTimeout(refreshList, LIST_REFRESH_MS);
  }

  function renderList(page) {
    const body = $("series-table").tBodies[0];
    body.replaceChildren();
    const shown = page.items.length < page.total ? `first ${page.items.length} of ` : "";
    $("series-total").textContent = page.total ? `(${shown}${page.total})` : "";
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

  function addCell(row, text, className) {
    const cell = row.insertCell();
    cell.textContent = text;
    if (className) cell.className = className;
    return cell;
  }

  // ------------------------------------------------------------------ one series
  // `current` is the selected series: its parameters, the newest forecast, and an abort
  // controller that ends its stream and pending fetches when another series is chosen.
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
    $("series-title").textContent = id;
    // Nothing of the previous series may linger while this one loads.
    for (const fact of ["forecast-n", "fact-last-t", "fact-memory", "fact-coverage", "fact-mode"]) {
      $(fact).textContent = "–";
    }
    $("episodes").replaceChildren();
    $("episodes-note").textContent = "";
    $("spectrum-table").tBodies[0].replaceChildren();
    for (const chart of [forecastChart, spectrumChart]) {
      if (chart) {
        chart.data.datasets = [];
        chart.update("none");
      }
    }
    try {
      state.info = await api(`/v1/series/${encodeURIComponent(id)}`, state.abort.signal);
    } catch (error) {
      if (handleError(error) || state.abort.signal.aborted) return;
      setStatus("idle", error instanceof GoneError ? `no series ${id}` : String(error));
      return;
    }
    const horizon = $("horizon");
    horizon.value = String(state.info.params.episode_horizon);
    const channels = state.info.channels;
    $("channel-label").hidden = !channels;
    $("channel").replaceChildren(
      ...(channels || []).map((c) => Object.assign(document.createElement("option"), { value: c, textContent: c })),
    );
    renderFacts();
    stream(state);
  }

  $("horizon").addEventListener("change", () => {
    if (current && current.info) {
      current.abort.abort();
      const state = { ...current, abort: new AbortController(), forecast: null };
      current = state;
      stream(state);
    }
  });
  $("channel").addEventListener("change", () => current && current.forecast && draw(current));
  window.addEventListener("hashchange", () => select(selectedFromHash()));

  // ------------------------------------------------------------------ the forecast stream
  // EventSource cannot send an Authorization header, so the SSE response is read with
  // fetch() and parsed here; the key never appears in a URL (nor in server logs).
  async function stream(state) {
    const horizon = Math.max(1, Number($("horizon").value) || 24);
    const url = `/v1/series/${encodeURIComponent(state.id)}/forecast/stream?horizon=${horizon}`;
    let delay = 500;
    while (!state.abort.signal.aborted) {
      try {
        const res = await fetch(url, {
          headers: authHeaders({ Accept: "text/event-stream" }),
          signal: state.abort.signal,
          cache: "no-store",
        });
        if (res.status === 401) throw new AuthError("API key needed");
        if (res.status === 404) throw new GoneError(state.id);
        if (res.status === 422) {
          const body = await res.json().catch(() => ({}));
          const reason = Array.isArray(body.detail) ? body.detail[0].msg : res.status;
          setStatus("idle", `cannot stream: ${reason}`);
          return; // a bad horizon does not get better by retrying
        }
        if (!res.ok) throw new Error(`stream answered ${res.status}`);
        setStatus("live", "live");
        delay = 500;
        for await (const [event, data] of sseEvents(res.body)) {
          if (event === "forecast") onForecast(state, JSON.parse(data));
          else if (event === "deleted") throw new GoneError(state.id);
        }
      } catch (error) {
        if (state.abort.signal.aborted) return;
        if (handleError(error)) return;
        if (error instanceof GoneError) {
          setStatus("idle", `series ${state.id} was deleted`);
          refreshList();
          return;
        }
      }
      // The stream ended or failed (server restart, network): reconnect with backoff.
      setStatus("retrying", "reconnecting…");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  async function* sseEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = "message";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (data.length) yield [event, data.join("\n")];
          event = "message";
          data = [];
        } else if (line.startsWith("event:")) {
          event = line.slice(6).trim();
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        } // comments (": ping") and ids are ignored
      }
    }
  }

  let listRefreshPending = false;

  function onForecast(state, forecast) {
    if (current !== state) return;
    state.forecast = forecast;
    draw(state);
    // The list's memory size and coverage follow the stream, at most once a second.
    if (!listRefreshPending) {
      listRefreshPending = true;
      setTimeout(() => {
        listRefreshPending = false;
        refreshList();
      }, 1000);
    }
  }

  // ------------------------------------------------------------------ drawing
  // Observations are immutable, so an episode's values are fetched once per span.
  const episodeCache = new Map();

  function pick(y, channel) {
    if (y === null || typeof y !== "object" || Array.isArray(y)) return y;
    return y[channel];
  }

  // Enough of the past to judge the forecast by (four horizons), at most the fit's window.
  function viewLength(state, horizon) {
    const params = state.info.params;
    const fitWindow = params.window + params.delays;
    return Math.min(MAX_VIEW, Math.max(2 * horizon, Math.min(fitWindow, Math.max(4 * horizon, 48))));
  }

  async function episodeValues(state, episode, from, to) {
    const key = `${state.id}|${state.info.created_at}|${from}|${to}`;
    let values = episodeCache.get(key);
    if (!values) {
      const limit = to - from + 1;
      values = api(
        `/v1/series/${encodeURIComponent(state.id)}/observations?offset=${from}&limit=${limit}`,
        state.abort.signal,
      ).then((page) => page.items);
      episodeCache.set(key, values);
      values.catch(() => episodeCache.delete(key));
    }
    return values;
  }

  async function draw(state) {
    const forecast = state.forecast;
    const token = (state.drawn += 1);
    const n = forecast.n_observations;
    const horizon = forecast.horizon;
    const length = Math.min(n, viewLength(state, horizon));
    const first = n - length;
    const id = encodeURIComponent(state.id);
    const episodeHorizon = state.info.params.episode_horizon;
    const top = [...forecast.recalled]
      .sort((a, b) => b.weight - a.weight)
      .filter((e) => e.weight >= MIN_DRAWN_WEIGHT)
      .slice(0, TOP_EPISODES);
    let recent;
    let episodes;
    try {
      const observations = length
        ? api(`/v1/series/${id}/observations?offset=${first}&limit=${length}`, state.abort.signal)
        : Promise.resolve({ items: [] });
      // Each episode from where it lines up with the first drawn point to what followed it.
      const spans = top.map((e) => {
        const from = Math.max(e.window_start, e.origin - (n - 1 - first));
        return episodeValues(state, e, from, e.origin + episodeHorizon);
      });
      recent = (await observations).items;
      episodes = await Promise.all(spans);
    } catch (error) {
      if (!state.abort.signal.aborted) handleError(error);
      return;
    }
    // A newer forecast may have arrived while this one fetched: draw only the newest.
    if (current !== state || token !== state.drawn) return;
    const channel = forecast.channels ? $("channel").value || forecast.channels[0] : null;
    state.shown = forecast; // the facts describe what is drawn
    renderFacts();
    drawForecast(state, forecast, recent, top, episodes, channel);
    drawEpisodeList(forecast, top);
    drawSpectrum(forecast.spectrum);
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
      $("fact-coverage").textContent = item.coverage === null
        ? "–"
        : `${pct(item.coverage)} at ${pct(item.level)}`;
    }
  }

  function forecastMode(forecast) {
    if (forecast.n_observations === 0) return "no observations yet";
    if (forecast.fallback) return "warming up (last value)";
    const source = forecast.recall_applied ? "memory + operator" : "operator only";
    return `${source}, ${pct(forecast.level)} interval`;
  }

  // ------------------------------------------------------------------ the forecast chart
  const presentLine = {
    id: "presentLine",
    beforeDatasetsDraw(chart, _args, options) {
      const x = options.at;
      if (x === undefined || x === null) return;
      const { ctx, chartArea, scales } = chart;
      const px = scales.x.getPixelForValue(x);
      ctx.save();
      ctx.strokeStyle = "#98a2b3";
      ctx.setLineDash([2, 3]);
      ctx.beginPath();
      ctx.moveTo(px, chartArea.top);
      ctx.lineTo(px, chartArea.bottom);
      ctx.stroke();
      ctx.restore();
    },
  };

  let forecastChart = null;
  let tickLabels = new Map();

  function forecastChartInstance() {
    if (forecastChart) return forecastChart;
    forecastChart = new Chart($("forecast-chart"), {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: false,
        normalized: true,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        elements: { point: { radius: 0, hitRadius: 6 }, line: { borderWidth: 1.5, tension: 0 } },
        scales: {
          x: {
            type: "linear",
            ticks: {
              maxTicksLimit: 8,
              precision: 0,
              includeBounds: false,
              maxRotation: 0,
              callback: (value) => tickLabels.get(value) ?? "",
            },
            grid: { color: "#eef1f5" },
          },
          y: { grid: { color: "#eef1f5" } },
        },
        plugins: {
          legend: {
            position: "bottom",
            labels: {
              boxWidth: 14,
              filter: (item) => !item.text.startsWith("_"),
              sort: (a, b) => a.datasetIndex - b.datasetIndex,
            },
          },
          tooltip: {
            callbacks: {
              title: (items) => (items.length ? tickLabels.get(items[0].parsed.x) ?? `#${items[0].parsed.x}` : ""),
              label: (item) => `${item.dataset.label.replace(/^_/, "")}: ${fmt(item.parsed.y)}`,
            },
          },
          presentLine: {},
        },
      },
      plugins: [presentLine],
    });
    return forecastChart;
  }

  function drawForecast(state, forecast, recent, top, episodes, channel) {
    const n = forecast.n_observations;
    const last = n - 1;
    tickLabels = new Map();
    const observed = [];
    for (const o of recent) {
      const y = pick(o.y, channel);
      observed.push({ x: o.seq, y });
      tickLabels.set(o.seq, fmtT(o.t));
    }
    const steps = forecast.horizon;
    const mean = pick(forecast.mean, channel) || [];
    const lower = pick(forecast.lower, channel) || [];
    const upper = pick(forecast.upper, channel) || [];
    const stepAt = (i) => n + i;
    (forecast.timestamps || []).forEach((t, i) => tickLabels.set(stepAt(i), fmtT(t)));
    // The forecast starts from the last observation, so the lines join up.
    const lastValue = observed.length ? observed[observed.length - 1].y : null;
    const joined = (values) => [
      ...(lastValue === null ? [] : [{ x: last, y: lastValue }]),
      ...values.map((y, i) => ({ x: stepAt(i), y })),
    ];
    const level = `${Math.round(100 * forecast.level)}% interval`;
    const datasets = [
      {
        label: "observations",
        data: observed,
        borderColor: "#1d2330",
        backgroundColor: "#1d2330",
        borderWidth: 1.6,
        order: 1,
      },
      {
        label: level,
        data: joined(upper),
        borderColor: "rgba(31, 95, 191, 0.0)",
        backgroundColor: "rgba(31, 95, 191, 0.16)",
        fill: "+1",
        order: 5,
      },
      {
        label: "_lower",
        data: joined(lower),
        borderColor: "rgba(31, 95, 191, 0.0)",
        order: 5,
      },
      {
        label: "forecast",
        data: joined(mean),
        borderColor: "#1f5fbf",
        backgroundColor: "#1f5fbf",
        borderWidth: 2.6,
        order: 0,
      },
    ];
    top.forEach((episode, k) => {
      // Shift the episode so that its origin (its last observed point) sits on the present.
      const shift = last - episode.origin;
      const colour = EPISODE_COLOURS[k % EPISODE_COLOURS.length];
      datasets.push({
        label: `episode ${episode.id} (weight ${fmt(episode.weight, 2)})`,
        data: episodes[k].map((o) => ({ x: o.seq + shift, y: pick(o.y, channel) })),
        borderColor: `${colour}b3`,
        backgroundColor: colour,
        borderWidth: 1 + 1.5 * Math.min(1, episode.weight || 0),
        segment: { borderDash: (ctx) => (ctx.p0.parsed.x >= last ? [5, 4] : undefined) },
        order: 2 + k,
      });
    });
    const chart = forecastChartInstance();
    chart.data.datasets = datasets;
    chart.options.plugins.presentLine.at = last;
    chart.options.scales.x.min = Math.max(0, n - recent.length);
    chart.options.scales.x.max = n + steps - 1;
    chart.update("none");
  }

  // ------------------------------------------------------------------ the episode panel
  function drawEpisodeList(forecast, top) {
    const list = $("episodes");
    list.replaceChildren();
    const recalled = [...forecast.recalled].sort((a, b) => b.weight - a.weight);
    const drawn = new Set(top.map((e) => e.id));
    if (!recalled.length) {
      $("episodes-note").textContent = forecast.n_observations === 0
        ? "No observations yet."
        : forecast.fallback
          ? "The model is still warming up: it fits once it has 3 × delays observations."
        : "No stored episode is close enough to the present: the operator forecasts alone.";
      return;
    }
    $("episodes-note").textContent = forecast.recall_applied
      ? "These episodes resemble the present; the forecast mixes in what followed them."
      : "Closest episodes (recall not applied to this forecast).";
    recalled.forEach((episode, k) => {
      const item = document.createElement("li");
      item.dataset.episodeId = String(episode.id);
      const swatch = document.createElement("span");
      swatch.className = `swatch ${drawn.has(episode.id) ? `swatch-${k}` : "swatch-rest"}`;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = `episode ${episode.id}`;
      const weight = document.createElement("span");
      weight.className = "weight";
      weight.textContent = `weight ${fmt(episode.weight, 3)} · distance ${fmt(episode.distance, 3)}`;
      const span = document.createElement("span");
      span.className = "span";
      const [start, origin, end] = episode.span.map(fmtT);
      span.textContent = `window ${start} → ${origin}, then followed to ${end}`;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.className = drawn.has(episode.id) ? `swatch-${k}` : "swatch-rest";
      fill.style.width = `${Math.round(100 * Math.max(0, Math.min(1, episode.weight || 0)))}%`;
      bar.append(fill);
      item.append(swatch, name, weight, span, bar);
      list.append(item);
    });
  }

  // ------------------------------------------------------------------ the spectrum
  let spectrumChart = null;
  const UNIT_CIRCLE = Array.from({ length: 181 }, (_, i) => {
    const a = (2 * Math.PI * i) / 180;
    return { x: Math.cos(a), y: Math.sin(a) };
  });

  // Labels at the ends of the axes, drawn inside the plot: tick labels would take room
  // from one side only, and the plot area must stay square for the circle to be round.
  const axisNames = {
    id: "axisNames",
    afterDatasetsDraw(chart) {
      const { ctx, chartArea, scales } = chart;
      ctx.save();
      ctx.fillStyle = "#667085";
      ctx.font = "11px system-ui, sans-serif";
      ctx.textAlign = "right";
      ctx.fillText("Re", chartArea.right - 4, scales.y.getPixelForValue(0) - 4);
      ctx.fillText("1", scales.x.getPixelForValue(1) - 3, scales.y.getPixelForValue(0) + 12);
      ctx.textAlign = "left";
      ctx.fillText("Im", scales.x.getPixelForValue(0) + 4, chartArea.top + 11);
      ctx.fillText("i", scales.x.getPixelForValue(0) + 4, scales.y.getPixelForValue(1) - 3);
      ctx.restore();
    },
  };

  function spectrumChartInstance() {
    if (spectrumChart) return spectrumChart;
    const axis = {
      min: -1.25,
      max: 1.25,
      ticks: { display: false },
      // Grid lines at fixed values (0 is an axis), whatever the range.
      afterBuildTicks: (scale) => {
        const reach = Math.floor(scale.max * 2) / 2;
        scale.ticks = [];
        for (let v = -reach; v <= reach + 1e-9; v += 0.5) scale.ticks.push({ value: v });
      },
      grid: { drawTicks: false, color: (ctx) => (ctx.tick.value === 0 ? "#98a2b3" : "#eef1f5") },
      border: { display: false },
    };
    spectrumChart = new Chart($("spectrum-chart"), {
      type: "scatter",
      data: { datasets: [] },
      options: {
        animation: false,
        aspectRatio: 1,
        parsing: false,
        layout: { padding: 4 },
        scales: { x: { ...axis }, y: { ...axis } },
        plugins: {
          legend: { display: false },
          tooltip: {
            filter: (item) => item.datasetIndex === 1,
            callbacks: {
              label: (item) => {
                const row = item.raw.row;
                const period = row.period === null ? "no period" : `period ${fmt(row.period, 3)}`;
                return `${period}, |λ| ${fmt(row.magnitude, 3)}, amplitude ${fmt(row.amplitude, 3)}`;
              },
            },
          },
        },
      },
      plugins: [axisNames],
    });
    return spectrumChart;
  }

  function drawSpectrum(rows) {
    const largest = Math.max(1e-12, ...rows.map((r) => r.amplitude || 0));
    // Rows list one eigenvalue of each conjugate pair; the plane shows both.
    const points = rows.flatMap((row) => {
      const [re, im] = row.eigenvalue;
      return im === 0 ? [{ x: re, y: im, row }] : [{ x: re, y: im, row }, { x: re, y: -im, row }];
    });
    const chart = spectrumChartInstance();
    // Eigenvalues are stabilised for forecasting, but a fit's own may lie outside the circle.
    const reach = Math.max(1.25, ...points.map((p) => 1.1 * Math.hypot(p.x, p.y)));
    for (const name of ["x", "y"]) {
      chart.options.scales[name].min = -reach;
      chart.options.scales[name].max = reach;
    }
    chart.data.datasets = [
      { data: UNIT_CIRCLE, showLine: true, borderColor: "#98a2b3", borderWidth: 1, pointRadius: 0 },
      {
        data: points,
        backgroundColor: "#6f9be0",
        borderColor: "#1f5fbf",
        pointRadius: (ctx) => 3 + 7 * Math.sqrt((ctx.raw?.row.amplitude || 0) / largest),
        pointHoverRadius: (ctx) => 5 + 7 * Math.sqrt((ctx.raw?.row.amplitude || 0) / largest),
      },
    ];
    chart.update("none");
    const body = $("spectrum-table").tBodies[0];
    body.replaceChildren();
    const shown = [...rows].sort((a, b) => (b.amplitude || 0) - (a.amplitude || 0)).slice(0, 6);
    for (const row of shown) {
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
})();
