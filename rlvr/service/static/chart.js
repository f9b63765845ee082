// A small multi-line chart on <canvas>: x = step, one line per series, gaps where a
// value is null. Hover shows the values at the nearest step. No libraries.
"use strict";

const CHART_COLORS = ["#2f6fb0", "#d9480f", "#1a7f37", "#7c3aed", "#b7791f", "#0e7490", "#be185d", "#4b5563"];

class LineChart {
  // title: shown above the plot; container: element the chart is appended to.
  constructor(container, title) {
    this.root = document.createElement("div");
    this.root.className = "chart";
    this.heading = document.createElement("h3");
    this.heading.textContent = title;
    this.canvas = document.createElement("canvas");
    this.root.append(this.heading, this.canvas);
    container.append(this.root);
    this.title = title;
    this.steps = [];
    this.series = []; // [{name, values}]
    this.hover = null; // index into steps
    this.canvas.addEventListener("mousemove", (e) => this.onHover(e));
    this.canvas.addEventListener("mouseleave", () => { this.hover = null; this.draw(); });
  }

  // steps: [number]; series: [{name, values: [number|null]}], values aligned with steps.
  setData(steps, series) {
    this.steps = steps;
    this.series = series;
    const last = series.length === 1 ? lastValue(series[0].values) : null;
    this.heading.textContent = last === null ? this.title : `${this.title}  (${formatNumber(last)})`;
    this.draw();
  }

  layout() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth, height = this.canvas.clientHeight;
    if (this.canvas.width !== Math.round(width * ratio) || this.canvas.height !== Math.round(height * ratio)) {
      this.canvas.width = Math.round(width * ratio);
      this.canvas.height = Math.round(height * ratio);
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return { ctx, width, height, left: 52, right: width - 10, top: 8, bottom: height - 34 };
  }

  range() {
    let lo = Infinity, hi = -Infinity;
    for (const s of this.series) for (const v of s.values) if (v !== null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo === Infinity) return null;
    if (lo === hi) { const pad = Math.abs(lo) * 0.1 || 1; lo -= pad; hi += pad; }
    const x0 = this.steps[0], x1 = this.steps[this.steps.length - 1];
    return { lo, hi, x0, x1: x1 === x0 ? x0 + 1 : x1 };
  }

  draw() {
    const { ctx, width, height, left, right, top, bottom } = this.layout();
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    const r = this.range();
    if (!r) {
      ctx.fillStyle = "#6b7280";
      ctx.fillText("no data yet", left, top + 20);
      return;
    }
    const sx = (x) => left + (x - r.x0) / (r.x1 - r.x0) * (right - left);
    const sy = (y) => bottom - (y - r.lo) / (r.hi - r.lo) * (bottom - top);
    // grid and y labels
    ctx.strokeStyle = "#e3e6eb"; ctx.fillStyle = "#6b7280"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = r.lo + (r.hi - r.lo) * i / 4, py = Math.round(sy(y)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, py); ctx.lineTo(right, py); ctx.stroke();
      ctx.textAlign = "right"; ctx.fillText(formatNumber(y), left - 4, py + 3);
    }
    ctx.textAlign = "left"; ctx.fillText(`step ${r.x0}`, left, bottom + 13);
    ctx.textAlign = "right"; ctx.fillText(`${this.steps[this.steps.length - 1]}`, right, bottom + 13);
    // lines (a lone point between gaps is drawn as a dot)
    this.series.forEach((s, k) => {
      ctx.strokeStyle = ctx.fillStyle = CHART_COLORS[k % CHART_COLORS.length];
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      let open = false;
      s.values.forEach((v, i) => {
        if (v === null || !isFinite(v)) { open = false; return; }
        const px = sx(this.steps[i]), py = sy(v), next = s.values[i + 1];
        if (open) { ctx.lineTo(px, py); return; }
        ctx.moveTo(px, py);
        if (next === null || next === undefined) ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
        open = true;
      });
      ctx.stroke();
    });
    this.drawLegend(ctx, left, bottom + 28);
    if (this.hover !== null) this.drawHover(ctx, sx, top, bottom, right);
  }

  drawLegend(ctx, x, y) {
    if (this.series.length < 2) return;
    ctx.textAlign = "left";
    this.series.forEach((s, k) => {
      ctx.fillStyle = CHART_COLORS[k % CHART_COLORS.length];
      ctx.fillRect(x, y - 7, 10, 3);
      ctx.fillStyle = "#1d2330";
      ctx.fillText(s.name, x + 13, y - 2);
      x += ctx.measureText(s.name).width + 26;
    });
  }

  drawHover(ctx, sx, top, bottom, right) {
    const i = this.hover, px = Math.round(sx(this.steps[i])) + 0.5;
    ctx.strokeStyle = "#9ca3af";
    ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, bottom); ctx.stroke();
    const lines = [`step ${this.steps[i]}`].concat(this.series.map((s) => `${s.name}: ${formatNumber(s.values[i])}`));
    const w = Math.max(...lines.map((t) => ctx.measureText(t).width)) + 10, h = lines.length * 14 + 6;
    const bx = px + 8 + w > right ? px - 8 - w : px + 8;
    ctx.fillStyle = "rgba(255,255,255,.92)"; ctx.strokeStyle = "#e3e6eb";
    ctx.fillRect(bx, top, w, h); ctx.strokeRect(bx, top, w, h);
    ctx.fillStyle = "#1d2330"; ctx.textAlign = "left";
    lines.forEach((t, k) => ctx.fillText(t, bx + 5, top + 15 + k * 14));
  }

  onHover(event) {
    const r = this.range();
    if (!r) return;
    const { left, right } = this.layout();
    const x = r.x0 + (event.offsetX - left) / (right - left) * (r.x1 - r.x0);
    let best = 0;
    this.steps.forEach((s, i) => { if (Math.abs(s - x) < Math.abs(this.steps[best] - x)) best = i; });
    this.hover = best;
    this.draw();
  }
}

function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && isFinite(values[i])) return values[i];
  return null;
}

function formatNumber(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e6) return String(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}
