/**
 * A live line chart on a plain canvas: the observed series, the one-step predictions (each
 * drawn at the time it predicts) with their prediction interval as a band, and a forecast ahead
 * of the last point. Redraws at most once per animation frame however fast points arrive.
 */

export const COLORS = {
  background: '#ffffff',
  grid: '#e6e6e6',
  text: '#444444',
  observed: '#1f5fa8',
  predicted: '#e07b00',
  forecast: '#2e9e4f',
  band: '#f8dcbc', // the predictions' interval: a light shade of their colour, drawn opaque
};

export class LiveChart {
  /** `window` = how many time steps are visible. */
  constructor(canvas, { window = 300 } = {}) {
    this.canvas = canvas;
    this.window = window;
    this.clear();
    this.pending = false;
  }

  clear() {
    this.t = 0; // time index of the next observed point
    this.observed = []; // [t, value]
    this.predicted = []; // [t, value]: the prediction made at t - horizon for time t
    this.band = []; // [t, lower, upper]: that prediction's interval (not finite: not drawn)
    this.forecast = []; // [t, value] ahead of the last point
    this.labels = { observed: 'observed', predicted: 'predicted', forecast: 'forecast', band: '' };
    this.request();
  }

  /** One point arrived: its observed value (or null), the prediction for t + horizon and,
   * when there is one, that prediction's interval [lower, upper]. */
  push(observed, predicted, horizon, interval = null) {
    if (observed !== null) this.observed.push([this.t, observed]);
    this.predicted.push([this.t + horizon, predicted]);
    if (interval !== null) this.band.push([this.t + horizon, interval[0], interval[1]]);
    this.t += 1;
    const keep = (a) => { while (a.length > this.window) a.shift(); };
    keep(this.observed);
    keep(this.predicted);
    keep(this.band);
    this.request();
  }

  /** The forecast: values for t + horizon, t + horizon + 1, ... after the last point. */
  setForecast(values, horizon) {
    const start = this.t - 1 + horizon;
    this.forecast = values.map((v, i) => [start + i + 1, v]);
    this.request();
  }

  request() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const { canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * dpr)) canvas.width = Math.round(width * dpr);
    if (canvas.height !== Math.round(height * dpr)) canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = COLORS.background;
    ctx.fillRect(0, 0, width, height);

    const finite = this.band.filter(([, lo, hi]) => Number.isFinite(lo) && Number.isFinite(hi));
    const series = [this.observed, this.predicted, this.forecast,
      finite.map(([t, lo]) => [t, lo]), finite.map(([t, , hi]) => [t, hi])];
    const all = series.flat();
    const pad = { left: 56, right: 12, top: 24, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const tMax = Math.max(this.t + this.forecast.length + 1, this.window / 4);
    const tMin = Math.max(0, tMax - this.window);
    const visible = all.filter(([t]) => t >= tMin);
    let [lo, hi] = visible.length ? range(visible.map(([, v]) => v)) : [0, 1];
    if (hi - lo < 1e-9 * Math.max(1, Math.abs(hi))) { lo -= 0.5; hi += 0.5; }
    const margin = 0.08 * (hi - lo);
    lo -= margin;
    hi += margin;
    const x = (t) => pad.left + ((t - tMin) / (tMax - tMin)) * plotW;
    const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * plotH;

    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) { // horizontal grid with value labels
      const v = lo + ((hi - lo) * i) / 4;
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath();
      ctx.moveTo(pad.left, Math.round(y(v)) + 0.5);
      ctx.lineTo(width - pad.right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillStyle = COLORS.text;
      ctx.textAlign = 'right';
      ctx.fillText(formatTick(v, hi - lo), pad.left - 6, y(v) + 4);
    }
    ctx.textAlign = 'left';
    ctx.fillText(`t = ${this.t}`, pad.left, height - 6);

    band(ctx, finite, x, y, tMin, COLORS.band);
    line(ctx, this.observed, x, y, tMin, COLORS.observed, []);
    line(ctx, this.predicted, x, y, tMin, COLORS.predicted, []);
    line(ctx, this.forecast, x, y, tMin, COLORS.forecast, [5, 4]);

    let lx = pad.left; // legend
    const keys = [['observed', COLORS.observed], ['predicted', COLORS.predicted],
      ['forecast', COLORS.forecast]];
    if (this.labels.band) keys.push(['band', COLORS.band]);
    for (const [key, color] of keys) {
      ctx.fillStyle = color;
      if (key === 'band') ctx.fillRect(lx, 5, 14, 9);
      else ctx.fillRect(lx, 8, 14, 3);
      ctx.fillStyle = COLORS.text;
      ctx.fillText(this.labels[key], lx + 18, 13);
      lx += 26 + ctx.measureText(this.labels[key]).width;
    }
  }
}

function line(ctx, points, x, y, tMin, color, dash) {
  const shown = points.filter(([t]) => t >= tMin);
  if (shown.length === 0) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.setLineDash(dash);
  ctx.beginPath();
  shown.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
  ctx.setLineDash([]);
}

/** The interval as filled areas: one polygon per run of consecutive finite intervals. */
function band(ctx, points, x, y, tMin, color) {
  const shown = points.filter(([t]) => t >= tMin);
  ctx.fillStyle = color;
  let run = [];
  const fill = () => {
    if (run.length > 1) {
      ctx.beginPath();
      run.forEach(([t, , hi], i) => (i ? ctx.lineTo(x(t), y(hi)) : ctx.moveTo(x(t), y(hi))));
      for (let i = run.length - 1; i >= 0; i--) ctx.lineTo(x(run[i][0]), y(run[i][1]));
      ctx.closePath();
      ctx.fill();
    }
    run = [];
  };
  for (const p of shown) {
    if (run.length && p[0] !== run[run.length - 1][0] + 1) fill();
    run.push(p);
  }
  fill();
}

function range(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

function formatTick(v, span) {
  const digits = Math.max(0, Math.min(6, 2 - Math.floor(Math.log10(span || 1))));
  const text = v.toFixed(digits);
  return /^-0\.?0*$/.test(text) ? text.slice(1) : text; // no "-0.00"
}
