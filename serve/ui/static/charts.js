// Charts drawn by hand in SVG. Why not a library: the dashboard needs four plain kinds (line, area, bars, fan),
// must work offline from the package with no build step, and ~100 lines here weigh less than any vendored
// chart library and its licence. Every chart is an <svg> whose marks carry data-points (the tests count them).
const NS = "http://www.w3.org/2000/svg";
const W = 560, H = 200, PAD = {l: 56, r: 10, t: 10, b: 24};

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(container, xs, ys, yMin, yMax) {
  container.replaceChildren();
  const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg"});
  const lo = yMin ?? Math.min(...ys), hi = yMax ?? Math.max(...ys);
  const span = hi - lo || Math.abs(hi) || 1;
  const x = (i) => PAD.l + (xs.length > 1 ? i / (xs.length - 1) : 0.5) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - ((v - lo) / span) * (H - PAD.t - PAD.b);
  svg.append(el("line", {x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: "axis"}),
             el("line", {x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: "axis"}),
             el("text", {x: PAD.l - 4, y: PAD.t + 8, class: "tick", "text-anchor": "end"}, fmt(hi)),
             el("text", {x: PAD.l - 4, y: H - PAD.b, class: "tick", "text-anchor": "end"}, fmt(lo)));
  if (xs.length) {
    svg.append(el("text", {x: PAD.l, y: H - 6, class: "tick"}, String(xs[0]).slice(0, 10)),
               el("text", {x: W - PAD.r, y: H - 6, class: "tick", "text-anchor": "end"}, String(xs[xs.length - 1]).slice(0, 10)));
  }
  container.append(svg);
  return {svg, x, y};
}

export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "";
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1e4 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(3);
}

function empty(container, why) {
  container.replaceChildren(Object.assign(document.createElement("p"), {className: "hint", textContent: why}));
}

// A line over xs (labels) and ys (numbers); `area` fills down to the zero line (drawdowns).
export function lineChart(container, xs, ys, {area = false, cls = "line"} = {}) {
  if (!ys.length) return empty(container, "no data yet");
  const {svg, x, y} = frame(container, xs, ys, area ? Math.min(...ys, 0) : undefined, area ? Math.max(...ys, 0) : undefined);
  const points = ys.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  if (area) points.push(`${x(ys.length - 1).toFixed(1)},${y(0).toFixed(1)}`, `${x(0).toFixed(1)},${y(0).toFixed(1)}`);
  svg.append(el(area ? "polygon" : "polyline", {points: points.join(" "), class: cls, "data-points": ys.length}));
}

// Horizontal bars (SHAP values, ROI per bucket): positive right of zero, negative left.
export function barChart(container, labels, values) {
  if (!values.length) return empty(container, "nothing to show");
  container.replaceChildren();
  const rowH = 22, h = labels.length * rowH + 10, mid = W / 2 + 60;
  const svg = el("svg", {viewBox: `0 0 ${W} ${h}`, role: "img", class: "chart-svg", "data-points": values.length});
  const scale = (W - mid - 60) / (Math.max(...values.map(Math.abs)) || 1);
  labels.forEach((label, i) => {
    const v = values[i], top = 5 + i * rowH, len = Math.abs(v) * scale;
    svg.append(el("text", {x: 4, y: top + 14, class: "tick"}, label),
               el("rect", {x: v >= 0 ? mid : mid - len, y: top + 3, width: Math.max(len, 1), height: rowH - 8,
                           class: v >= 0 ? "bar pos" : "bar neg"}),
               el("text", {x: v >= 0 ? mid + len + 4 : mid - len - 4, y: top + 14, class: "tick",
                           "text-anchor": v >= 0 ? "start" : "end"}, fmt(v)));
  });
  svg.append(el("line", {x1: mid, y1: 0, x2: mid, y2: h, class: "axis"}));
  container.append(svg);
}

// The Monte Carlo fan: the bankroll's quantiles at each step (bets placed), p05-p95 and p25-p75 as filled bands
// (the inner one drawn over the outer, so it reads darker) and the median as a line.
export function fanChart(container, fan) {
  const n = fan.step.length;
  if (!n) return empty(container, "no paths");
  const {svg, x, y} = frame(container, fan.step.map((s) => `bet ${s}`), [...fan.p05, ...fan.p95]);
  const at = (values) => values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  for (const [lo, hi] of [["p05", "p95"], ["p25", "p75"]]) {
    svg.append(el("polygon", {class: "fan", "data-band": `${lo}-${hi}`, "data-points": n,
                              points: [...at(fan[hi]), ...at(fan[lo]).reverse()].join(" ")}));
  }
  svg.append(el("polyline", {class: "line", "data-band": "p50", "data-points": n, points: at(fan.p50).join(" ")}));
  for (const k of ["p05", "p50", "p95"]) {
    svg.append(el("text", {x: x(n - 1) - 4, y: y(fan[k][n - 1]) - 2, class: "tick", "text-anchor": "end"},
                  `${k} ${fmt(fan[k][n - 1])}`));
  }
}
