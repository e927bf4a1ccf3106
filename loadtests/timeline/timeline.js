// Draws the history in #timeline-data as SVG: a bar per operation, in lanes
// per user or per worker thread; witnesses outlined and joined; fault bands.
// Markup is built as one string per render: for ten thousand bars that is
// far quicker than creating the elements one by one.
"use strict";
const data = JSON.parse(document.getElementById("timeline-data").textContent);
const [START, END, USER, WORKER, LABEL, TIP, OUTCOME] = [0, 1, 2, 3, 4, 5, 6];
const ROW = 18, BAR = 14, TOP = 4, AXIS = 30;
const NAMES = Math.min(220, 12 + 6.5 * [...data.users, ...data.workers].reduce((n, t) => Math.max(n, t.length), 0));
const chart = document.getElementById("chart");
const names = document.getElementById("names");
const axis = document.getElementById("axis");
const bars = document.getElementById("bars");
const first = Math.min(0, ...data.ops.map((op) => op[START]), ...data.faults.map((f) => f.from));
const last = Math.max(1, ...data.ops.map((op) => op[END]), ...data.faults.map((f) => f.to));
let view = "user";
let scale = 1;  // pixels per millisecond
let current = -1;  // the anomaly shown
const inWitness = new Map();  // op -> the anomalies it witnesses
data.anomalies.forEach((a, n) => a.ops.forEach((i) => inWitness.set(i, [...(inWitness.get(i) || []), n])));

const esc = (text) => String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const x = (ms) => (ms - first) * scale + 8;

function fit() {
  scale = Math.max(1e-4, (chart.clientWidth - NAMES - 30) / (last - first));
}

// Lanes of the current view; within a lane, operations that overlap in time
// (tabs of one user, a client's clock around a thread's) take rows of their own.
function layout() {
  const key = view === "user" ? USER : WORKER;
  const titles = view === "user" ? data.users : data.workers;
  const ends = titles.map(() => []);
  const row = new Array(data.ops.length);
  data.ops.forEach((op, i) => {
    const rows = ends[op[key]];
    let r = rows.findIndex((end) => end <= op[START]);
    if (r < 0) r = rows.push(0) - 1;
    rows[r] = op[END];
    row[i] = r;
  });
  const top = [];
  let y = TOP;
  titles.forEach((_, n) => { top.push(y); y += Math.max(1, ends[n].length) * ROW + 4; });
  const ys = data.ops.map((op, i) => top[op[key]] + row[i] * ROW);
  return { titles, top, ys, height: y + 10 };
}

// The time axis (labels in the sticky #axis, lines across the lanes).
function ticks(width) {
  const span = width / scale;
  const step = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000]
    .find((s) => span / s < width / 90) || 60000;
  let lines = "", labels = "";
  for (let t = Math.ceil(first / step) * step; t <= last; t += step) {
    const label = step >= 1000 ? `${t / 1000} s` : `${t} ms`;
    lines += `<line class="tick" x1="${x(t)}" x2="${x(t)}" y1="0" y2="100%"/>`;
    labels += `<text class="tick-label" x="${x(t) + 2}" y="11">+${label}</text>`;
  }
  return [lines, labels];
}

function render() {
  const { titles, top: tops, ys, height } = layout();
  const width = Math.ceil(x(last) + 40);
  names.setAttribute("width", NAMES);
  names.setAttribute("height", height);
  names.innerHTML = titles.map((t, n) =>
    `<text class="lane-name" x="4" y="${tops[n] + 12}">${esc(t)}</text>`).join("");
  const hatch = `<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse"
    patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4f4f4"/>
    <line x1="0" y1="0" x2="0" y2="6" stroke="#ccc" stroke-width="2"/></pattern></defs>`;
  const [lines, labels] = ticks(width);
  let svg = hatch + lines, top = labels;
  svg += tops.map((y) => `<line class="lane-rule" x1="0" x2="${width}" y1="${y - 2}" y2="${y - 2}"/>`).join("");
  const ends = [];  // per row of labels in the axis, where its last label ends
  const labelAt = (left, text) => {
    let row = ends.findIndex((end) => end < left);
    if (row < 0) row = ends.push(0) - 1;
    ends[row] = left + text.length * 6.5;
    return 26 + row * 12;
  };
  for (const [from, to, n] of data.gaps) {
    const band = `x="${x(from)}" width="${Math.max(2, (to - from) * scale)}"`;
    svg += `<rect class="gap-band" ${band} y="0" height="${height}"><title>cut: ${n} operations not drawn</title></rect>`;
    top += `<rect class="gap-band" ${band} y="14" height="100%"/>`
      + `<text class="gap-label" x="${x(from) + 2}" y="${labelAt(x(from), `cut: ${n} ops`)}">cut: ${n} ops</text>`;
  }
  for (const f of data.faults) {
    const band = `x="${x(f.from)}" width="${Math.max(3, (f.to - f.from) * scale)}"`;
    svg += `<rect class="fault-band" ${band} y="0" height="${height}"><title>${esc(f.name)}: ${esc(f.detail)}</title></rect>`;
    top += `<rect class="fault-band" ${band} y="14" height="100%"/>`
      + `<text class="fault-label" x="${x(f.from) + 3}" y="${labelAt(x(f.from), f.name)}">${esc(f.name)}</text>`;
  }
  data.ops.forEach((op, i) => {
    const w = Math.max(1, (op[END] - op[START]) * scale);
    const witness = inWitness.get(i);
    const cls = `op ${op[OUTCOME]}${witness ? " witness" : ""}${witness && witness.includes(current) ? " current" : ""}`;
    svg += `<rect class="${cls}" data-i="${i}" x="${x(op[START])}" y="${ys[i]}" width="${w}" height="${BAR}">`
      + `<title>${esc(op[LABEL])}\n+${op[START].toFixed(3)}..+${op[END].toFixed(3)} ms\n${esc(op[TIP])}</title></rect>`;
    if (w > 40) {
      const text = op[LABEL].length * 6.2 > w - 4 ? `${op[LABEL].slice(0, Math.floor((w - 4) / 6.2) - 1)}…` : op[LABEL];
      svg += `<text class="bar-label" x="${x(op[START]) + 2}" y="${ys[i] + 11}">${esc(text)}</text>`;
    }
  });
  data.anomalies.forEach((a, n) => {
    const points = a.ops.map((i) => `${x((data.ops[i][START] + data.ops[i][END]) / 2)},${ys[i] + BAR / 2}`);
    if (points.length > 1 && (current < 0 || n === current)) {  // one at a time once chosen
      svg += `<polyline class="link${n === current ? " current" : ""}" points="${points.join(" ")}"><title>${esc(a.kind)}</title></polyline>`;
    }
  });
  axis.setAttribute("width", width);
  axis.setAttribute("height", AXIS + 12 * Math.max(0, ends.length - 1));
  axis.innerHTML = top;
  bars.setAttribute("width", width);
  bars.setAttribute("height", height);
  bars.innerHTML = svg;
  return ys;
}

// Zoom so that anomaly n's witness fills a third of the chart, and scroll to it.
function show(n) {
  const a = data.anomalies[n];
  if (!a || !a.ops.length) return;
  current = n;
  const from = Math.min(...a.ops.map((i) => data.ops[i][START]));
  const to = Math.max(...a.ops.map((i) => data.ops[i][END]));
  const visible = chart.clientWidth - NAMES;
  // Wide enough to read each witness bar's label, narrow enough to see them all.
  const legible = Math.max(...a.ops.map((i) => (data.ops[i][LABEL].length * 6.2 + 8) / Math.max(0.01, data.ops[i][END] - data.ops[i][START])));
  scale = Math.min(visible * 0.8 / Math.max(0.01, to - from), Math.max(legible, visible / 3 / Math.max(5, to - from)));
  const ys = render();
  chart.scrollLeft = x(from) - Math.max(20, (visible - (to - from) * scale) / 2);
  chart.scrollTop = Math.min(...a.ops.map((i) => ys[i])) - (chart.clientHeight - AXIS) / 3;
  document.querySelectorAll("#anomalies li").forEach((li, k) => li.classList.toggle("current", k === n));
  document.querySelector("#anomalies li.current").scrollIntoView({ block: "nearest" });
  history.replaceState(null, "", `#anomaly-${n}${view === "worker" ? "/worker" : ""}`);
}

function zoom(factor) {
  const middle = (chart.scrollLeft + (chart.clientWidth - NAMES) / 2 - 8) / scale + first;
  scale *= factor;
  render();
  chart.scrollLeft = x(middle) - (chart.clientWidth - NAMES) / 2;
}

function switchView(to) {
  view = to;
  document.getElementById("by-user").classList.toggle("on", to === "user");
  document.getElementById("by-worker").classList.toggle("on", to === "worker");
  if (current >= 0) show(current); else render();
}

document.getElementById("note").textContent = data.note;
const list = document.getElementById("anomalies");
list.innerHTML = data.anomalies.length
  ? data.anomalies.map((a, n) => `<li data-a="${n}"><b>${esc(a.kind)}</b>${esc(a.summary)}</li>`).join("")
  : `<li>none in ${data.total} operations</li>`;
list.addEventListener("click", (e) => { const li = e.target.closest("li[data-a]"); if (li) show(+li.dataset.a); });
document.getElementById("next").onclick = () => data.anomalies.length && show((current + 1) % data.anomalies.length);
document.getElementById("by-user").onclick = () => switchView("user");
document.getElementById("by-worker").onclick = () => switchView("worker");
document.getElementById("zoom-in").onclick = () => zoom(2);
document.getElementById("zoom-out").onclick = () => zoom(0.5);
document.getElementById("whole").onclick = () => { fit(); render(); };

fit();
// "#anomaly-2" opens on that anomaly, "#anomaly-2/worker" in lanes per worker.
const asked = /^#anomaly-(\d+)(\/worker)?$/.exec(location.hash);
if (asked && asked[2]) switchView("worker");
if (asked) show(+asked[1]); else render();
// Drawn: once the browser has laid out and painted it (read by the benchmark).
requestAnimationFrame(() => setTimeout(() => {
  performance.mark("rendered");
  document.body.dataset.rendered = performance.now().toFixed(1);
}));
