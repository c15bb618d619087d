// The view's two charts, drawn with Chart.js (the vendored UMD build defines `Chart`):
// the forecast over the recent observations with the recalled episodes overlaid, and
// the spectrum as eigenvalues in the complex plane around the unit circle.

import { $, fmt, fmtT, pick } from "./format.js";

export const EPISODE_COLOURS = ["#d95f02", "#7b3fb5", "#0f9d76", "#c2185b"];
const GRID = "#eef1f5";
const AXIS = "#98a2b3";

let forecastChart = null;
let spectrumChart = null;
let tickLabels = new Map(); // x (observation index) -> time label

/** Empty both charts (another series was chosen). */
export function clearCharts() {
  for (const chart of [forecastChart, spectrumChart]) {
    if (chart) {
      chart.data.datasets = [];
      chart.update("none");
    }
  }
}

// ------------------------------------------------------------------ the forecast chart
// A dotted vertical line at the present (the last observation).
const presentLine = {
  id: "presentLine",
  beforeDatasetsDraw(chart, _args, options) {
    if (options.at === undefined || options.at === null) return;
    const { ctx, chartArea, scales } = chart;
    const x = scales.x.getPixelForValue(options.at);
    ctx.save();
    ctx.strokeStyle = AXIS;
    ctx.setLineDash([2, 3]);
    ctx.beginPath();
    ctx.moveTo(x, chartArea.top);
    ctx.lineTo(x, chartArea.bottom);
    ctx.stroke();
    ctx.restore();
  },
};

function forecastChartInstance() {
  if (forecastChart) return forecastChart;
  const timeOf = (x) => tickLabels.get(x) ?? `#${x}`;
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
          grid: { color: GRID },
        },
        y: { grid: { color: GRID } },
      },
      plugins: {
        legend: {
          position: "bottom",
          labels: {
            boxWidth: 14,
            filter: (item) => !item.text.startsWith("_"), // "_lower" is half of the band
            sort: (a, b) => a.datasetIndex - b.datasetIndex,
          },
        },
        tooltip: {
          callbacks: {
            title: (items) => (items.length ? timeOf(items[0].parsed.x) : ""),
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

/**
 * Draw a forecast payload over `recent` observations, with each of the `top` recalled
 * episodes (`episodes[k]`: its observations) shifted so its origin sits on the present.
 */
export function drawForecast({ forecast, recent, top, episodes, channel }) {
  const n = forecast.n_observations;
  const last = n - 1;
  tickLabels = new Map();
  const observed = recent.map((o) => {
    tickLabels.set(o.seq, fmtT(o.t));
    return { x: o.seq, y: pick(o.y, channel) };
  });
  (forecast.timestamps || []).forEach((t, i) => tickLabels.set(n + i, fmtT(t)));
  // The forecast lines start from the last observation, so that they join up.
  const lastValue = observed.length ? observed[observed.length - 1].y : null;
  const joined = (values) => [
    ...(lastValue === null ? [] : [{ x: last, y: lastValue }]),
    ...(values || []).map((y, i) => ({ x: n + i, y })),
  ];
  const invisible = "rgba(31, 95, 191, 0)";
  const datasets = [
    { label: "observations", data: observed, borderColor: "#1d2330", backgroundColor: "#1d2330", borderWidth: 1.6, order: 1 },
    {
      label: `${Math.round(100 * forecast.level)}% interval`,
      data: joined(pick(forecast.upper, channel)),
      borderColor: invisible,
      backgroundColor: "rgba(31, 95, 191, 0.16)",
      fill: "+1", // down to the next dataset, the lower bound
      order: 5,
    },
    { label: "_lower", data: joined(pick(forecast.lower, channel)), borderColor: invisible, order: 5 },
    {
      label: "forecast",
      data: joined(pick(forecast.mean, channel)),
      borderColor: "#1f5fbf",
      backgroundColor: "#1f5fbf",
      borderWidth: 2.6,
      order: 0, // on top
    },
  ];
  top.forEach((episode, k) => {
    const shift = last - episode.origin;
    const colour = EPISODE_COLOURS[k % EPISODE_COLOURS.length];
    datasets.push({
      label: `episode ${episode.id} (weight ${fmt(episode.weight, 2)})`,
      data: episodes[k].map((o) => ({ x: o.seq + shift, y: pick(o.y, channel) })),
      borderColor: `${colour}b3`,
      backgroundColor: colour,
      borderWidth: 1 + 1.5 * Math.min(1, episode.weight || 0),
      // Dashed after the origin: what followed the episode.
      segment: { borderDash: (ctx) => (ctx.p0.parsed.x >= last ? [5, 4] : undefined) },
      order: 2 + k,
    });
  });
  const chart = forecastChartInstance();
  chart.data.datasets = datasets;
  chart.options.plugins.presentLine.at = last;
  chart.options.scales.x.min = Math.max(0, n - recent.length);
  chart.options.scales.x.max = n + forecast.horizon - 1;
  chart.update("none");
}

// ------------------------------------------------------------------ the spectrum
const UNIT_CIRCLE = Array.from({ length: 181 }, (_, i) => {
  const a = (2 * Math.PI * i) / 180;
  return { x: Math.cos(a), y: Math.sin(a) };
});

// Axis names drawn inside the plot: tick labels would take room from one side only,
// and the plot area must stay square for the circle to be round.
const axisNames = {
  id: "axisNames",
  afterDatasetsDraw(chart) {
    const { ctx, chartArea, scales } = chart;
    const x0 = scales.x.getPixelForValue(0);
    const y0 = scales.y.getPixelForValue(0);
    ctx.save();
    ctx.fillStyle = "#667085";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.fillText("Re", chartArea.right - 4, y0 - 4);
    ctx.fillText("1", scales.x.getPixelForValue(1) - 3, y0 + 12);
    ctx.textAlign = "left";
    ctx.fillText("Im", x0 + 4, chartArea.top + 11);
    ctx.fillText("i", x0 + 4, scales.y.getPixelForValue(1) - 3);
    ctx.restore();
  },
};

function spectrumChartInstance() {
  if (spectrumChart) return spectrumChart;
  const axis = () => ({
    min: -1.25,
    max: 1.25,
    ticks: { display: false },
    // Grid lines every 0.5 from 0 (drawn darker: the axes), whatever the range.
    afterBuildTicks: (scale) => {
      const reach = Math.floor(scale.max * 2) / 2;
      scale.ticks = [];
      for (let v = -reach; v <= reach + 1e-9; v += 0.5) scale.ticks.push({ value: v });
    },
    grid: { drawTicks: false, color: (ctx) => (ctx.tick.value === 0 ? AXIS : GRID) },
    border: { display: false },
  });
  spectrumChart = new Chart($("spectrum-chart"), {
    type: "scatter",
    data: { datasets: [] },
    options: {
      animation: false,
      aspectRatio: 1,
      parsing: false,
      layout: { padding: 4 },
      scales: { x: axis(), y: axis() },
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

/** Plot spectrum rows (one per mode of non-negative frequency) with their conjugates. */
export function drawSpectrum(rows) {
  const largest = Math.max(1e-12, ...rows.map((r) => r.amplitude || 0));
  const points = rows.flatMap((row) => {
    const [re, im] = row.eigenvalue;
    return im === 0 ? [{ x: re, y: im, row }] : [{ x: re, y: im, row }, { x: re, y: -im, row }];
  });
  const radius = (ctx, base) => base + 7 * Math.sqrt((ctx.raw?.row.amplitude || 0) / largest);
  const chart = spectrumChartInstance();
  // Forecasts stabilise eigenvalues, but a fit's own may lie outside the circle.
  const reach = Math.max(1.25, ...points.map((p) => 1.1 * Math.hypot(p.x, p.y)));
  for (const name of ["x", "y"]) {
    chart.options.scales[name].min = -reach;
    chart.options.scales[name].max = reach;
  }
  chart.data.datasets = [
    { data: UNIT_CIRCLE, showLine: true, borderColor: AXIS, borderWidth: 1, pointRadius: 0 },
    {
      data: points,
      backgroundColor: "#6f9be0",
      borderColor: "#1f5fbf",
      pointRadius: (ctx) => radius(ctx, 3),
      pointHoverRadius: (ctx) => radius(ctx, 5),
    },
  ];
  chart.update("none");
}
