// Small DOM and number-formatting helpers shared by the view's modules.

export const $ = (id) => document.getElementById(id);

/** A number for people: 4 significant digits, exponents only when very large or small. */
export function fmt(x, digits = 4) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  if (x !== 0 && (Math.abs(x) >= 1e6 || Math.abs(x) < 1e-3)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

/** A series time: ISO strings lose the "T" and zero seconds; numbers stay numbers. */
export function fmtT(t) {
  if (t === null || t === undefined) return "–";
  if (typeof t === "number") return fmt(t, 8);
  return t.replace("T", " ").replace(/:00(\.0+)?(?=$|[Z+-])/, "");
}

export function pct(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
}

export function addCell(row, text, className) {
  const cell = row.insertCell();
  cell.textContent = text;
  if (className) cell.className = className;
  return cell;
}

/** One channel of a value (multi-channel series send objects of channel to value). */
export function pick(y, channel) {
  if (y === null || typeof y !== "object" || Array.isArray(y)) return y;
  return y[channel];
}
