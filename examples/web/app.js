/**
 * The page: choose a model, stream points into it (a simulation, a CSV), draw the series, the
 * one-step predictions with their interval and a forecast, live, and the live accuracy of the
 * model beside persistence and seasonal naive. The model, its state and its live scores are in
 * rnnstream-web.js (over ../core/rnnstream-core.mjs); this file is the DOM around it.
 *
 * `window.rnnstream` is the page's test hook: the browser test and the bench drive the page
 * through the same functions the controls call (load from URLs, feed points, read the
 * predictions, the state and the message shown).
 */
import * as ort from 'onnxruntime-web';
import { LiveChart } from './chart.js';
import { InputError, ModelError, Streamer, parseCSV, targetsAreFeatures } from './rnnstream-web.js';

// onnxruntime-web fetches its .wasm (and the .mjs that loads it) at run time from wasmPaths:
// here this folder's node_modules, installed by `npm ci`, served by the same static server.
ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;
// One thread: a streaming step is tiny, and threads would need a cross-origin-isolated page
// (COOP/COEP headers), which a plain `python -m http.server` does not send.
ort.env.wasm.numThreads = 1;

const LATENCY_WINDOW = 100; // steps averaged for the latency shown
const SCORES_EVERY = 10; // points between updates of the live accuracy table

const $ = (id) => document.getElementById(id);
const chart = new LiveChart($('chart'));
const app = {
  streamer: null,
  source: null, // the running stream of points: {stopped, done}
  latencies: [], // ms of the last LATENCY_WINDOW steps
  steps: 0,
  target: 0, // which target is drawn
  feature: -1, // which feature is drawn as "observed" (-1: none)
  forecastQueued: false,
  forecastDone: Promise.resolve(), // the forecast being computed for the chart
  message: { text: '', kind: '' },
  pending: Promise.resolve(), // the last action started from a control
};

// ---- messages -------------------------------------------------------------------------------

function show(text, kind = 'info') {
  app.message = { text, kind };
  const el = $('message');
  el.textContent = text;
  el.className = kind;
}

/** Run an action; a refusal is shown on the page, then rethrown to the caller. */
async function attempt(fn) {
  try {
    return await fn();
  } catch (err) {
    show(err.message ?? String(err), 'error');
    throw err;
  }
}

/** Run a control's action: a refusal is shown, never thrown into the event loop. */
function act(fn) {
  app.pending = attempt(fn).catch(() => {});
  return app.pending;
}

// ---- the model ------------------------------------------------------------------------------

/**
 * Load a model and its sidecar, check them, and only then replace the current model. A refused
 * file leaves the current model, its state and a running stream exactly as they were.
 */
async function loadModel({ modelBytes, modelName, sidecarText, sidecarName }) {
  const backend = $('backend').value;
  const streamer = await Streamer.load({ modelBytes, modelName, sidecarText, sidecarName, backend,
    coverage: coverageAsked() });
  stopSource();
  const old = app.streamer;
  app.streamer = streamer;
  if (old) await old.release();
  configure(streamer);
  show(`loaded ${modelName} (${streamer.info.graph} graph) on ${backend}`);
  return info();
}

async function loadFromFiles(files) {
  const list = Array.from(files);
  const model = list.find((f) => f.name.endsWith('.onnx'));
  const sidecar = list.find((f) => f.name.endsWith('.json'));
  if (!model || !sidecar) {
    throw new ModelError(`choose two files: the model (.onnx) and its sidecar (.onnx.json); ` +
      `got [${list.map((f) => f.name)}]`);
  }
  return loadModel({ modelBytes: new Uint8Array(await model.arrayBuffer()), modelName: model.name,
    sidecarText: await sidecar.text(), sidecarName: sidecar.name });
}

/** The sidecar of a model URL: model.onnx -> model.onnx.json, model.step.onnx -> model.onnx.json. */
function sidecarURL(modelURL) {
  return modelURL.replace(/(\.step)?\.onnx$/, '.onnx') + '.json';
}

async function loadFromURLs(modelURL, sidecar = '') {
  const sidecarUrl = sidecar || sidecarURL(modelURL);
  const [model, side] = await Promise.all([fetchOk(modelURL), fetchOk(sidecarUrl)]);
  return loadModel({ modelBytes: new Uint8Array(await model.arrayBuffer()),
    modelName: modelURL.split('/').pop(), sidecarText: await side.text(),
    sidecarName: sidecarUrl.split('/').pop() });
}

async function fetchOk(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new ModelError(`cannot fetch ${url}: ${err.message}`);
  }
  if (!response.ok) throw new ModelError(`cannot fetch ${url}: HTTP ${response.status}`);
  return response;
}

function configure(streamer) {
  const c = streamer.contract;
  const select = $('target');
  select.replaceChildren(...c.targets.map((name, i) => new Option(name, String(i))));
  setTarget(0);
  $('horizon').disabled = !targetsAreFeatures(c);
  $('horizon').title = targetsAreFeatures(c) ? ''
    : 'forecast feeds predictions back as points: this model\'s targets are not its features';
  $('model-info').textContent = `${c.cell} ${c.layers}x${c.hidden}, features [${c.features}] ` +
    `-> targets [${c.targets}], horizon ${c.horizon ?? 1}; ${streamer.info.graph} graph, ` +
    `${streamer.info.backend}`;
  resetView();
}

function setTarget(i) {
  const c = app.streamer.contract;
  app.target = i;
  // the observed line is the feature the target is named after, else the feature at its index
  const same = c.features.indexOf(c.targets[i]);
  app.feature = same >= 0 ? same : Math.min(i, c.features.length - 1);
  resetView();
}

function resetView() {
  const c = app.streamer.contract;
  chart.clear();
  const coverage = app.streamer.coverage;
  chart.labels = { observed: c.features[app.feature],
    predicted: `${c.targets[app.target]} (t+${c.horizon ?? 1})`, forecast: 'forecast',
    band: coverage === null ? '' : `${formatPercent(coverage)} interval` };
  app.latencies = [];
  app.steps = 0;
  showLatency();
  showScores();
}

/** The coverage control: a share in (0, 1), or null for no intervals (0 or empty). */
function coverageAsked() {
  const text = $('coverage').value.trim();
  if (text === '' || Number(text) === 0) return null;
  const c = Number(text);
  if (!(c > 0 && c < 1)) {
    throw new InputError(`coverage is ${JSON.stringify(text)}; expected a number strictly ` +
      'between 0 and 1, the share of values the intervals should hold (e.g. 0.9), or 0 for none');
  }
  return c;
}

/** New intervals at the coverage asked, from the next point on: the live scores start afresh. */
async function applyCoverage() {
  let coverage;
  try {
    coverage = coverageAsked();
  } catch (err) { // the control shows the coverage in force again
    $('coverage').value = String(app.streamer?.coverage ?? 0.9);
    throw err;
  }
  if (!app.streamer) return;
  await app.streamer.setCoverage(coverage);
  resetView();
  show(coverage === null ? 'intervals off'
    : `intervals at ${formatPercent(coverage)}, calibrated live from the next point`);
}

const formatPercent = (c) => `${Number((100 * c).toPrecision(4))}%`;

/** A figure as `rnnstream stream` prints it (4 significant digits), '-' for none. */
function g4(v) {
  if (Number.isNaN(v)) return '-';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  return String(Number(v.toPrecision(4)));
}

/** The live accuracy table: per target, the model's MAE beside persistence's and seasonal
 * naive's, their ratio, the recent MAE, the realised coverage and the width now. */
async function showScores() {
  const streamer = app.streamer;
  const table = $('scores');
  const rows = streamer ? await streamer.scores() : null;
  if (streamer !== app.streamer) return;
  $('scores-panel').hidden = rows === null;
  if (rows === null) return;
  const season = streamer.season;
  $('scores-title').textContent = `live accuracy: MAE so far of the model, persistence and ` +
    `seasonal naive (${season ? `season ${season}` : 'no season'}); recent: the last ~100 points`;
  const head = ['target', 'points', 'model MAE', 'persist. MAE', 'seasonal MAE', 'model/persist.',
    'recent MAE', `coverage (asked ${streamer.coverage})`, 'width now'];
  const cells = rows.map((r) => [r.target, String(r.points), g4(r.model), g4(r.persistence),
    g4(r.seasonal), g4(r.ratio), g4(r.recent),
    r.scored ? `${r.coverage.toFixed(3)} of ${r.scored}` : '-', g4(r.width)]);
  const tr = (values, tag) => {
    const row = document.createElement('tr');
    for (const v of values) {
      const cell = document.createElement(tag);
      cell.textContent = v;
      row.append(cell);
    }
    return row;
  };
  table.replaceChildren(tr(head, 'th'), ...cells.map((c) => tr(c, 'td')));
}

function info() {
  const s = app.streamer;
  return s && { ...s.info, inputNames: s.session.inputNames, outputNames: s.session.outputNames,
    states: s.contract.states, features: s.contract.features, targets: s.contract.targets };
}

// ---- streaming ------------------------------------------------------------------------------

/** Feed one point to the model; draw it and its prediction. Resolves to the T predictions. */
async function feed(point) {
  const streamer = app.streamer;
  if (!streamer) throw new InputError('load a model first');
  const { y, ms, lower, upper } = await streamer.step(point);
  if (streamer !== app.streamer) return y; // the model was replaced meanwhile: draw nothing
  app.latencies.push(ms);
  if (app.latencies.length > LATENCY_WINDOW) app.latencies.shift();
  app.steps += 1;
  chart.push(app.feature >= 0 ? point[app.feature] : null, y[app.target], streamer.contract.horizon ?? 1,
    lower === null ? null : [lower[app.target], upper[app.target]]);
  if (app.steps % 10 === 0) showLatency();
  if (app.steps % SCORES_EVERY === 0) showScores();
  queueForecast();
  return y;
}

/** Recompute the forecast at most once per frame, however fast points arrive. */
function queueForecast() {
  const n = Number($('horizon').value);
  if (app.forecastQueued || !targetsAreFeatures(app.streamer.contract)) return;
  if (!(n > 0)) {
    chart.setForecast([], 1);
    return;
  }
  app.forecastQueued = true;
  let done;
  app.forecastDone = new Promise((resolve) => { done = resolve; });
  requestAnimationFrame(async () => {
    app.forecastQueued = false;
    const streamer = app.streamer;
    try {
      const steps = app.steps;
      const ahead = await streamer.forecast(Math.min(500, Math.floor(n)));
      if (streamer === app.streamer && steps === app.steps) {
        chart.setForecast(ahead.map((y) => y[app.target]), 1);
      } else {
        queueForecast(); // points arrived meanwhile: this forecast started from an older state
      }
    } catch (err) {
      show(err.message, 'error');
    }
    done();
  });
}

function showLatency() {
  const l = app.latencies;
  const mean = l.length ? l.reduce((a, b) => a + b, 0) / l.length : NaN;
  $('latency').textContent = l.length
    ? `step ${mean < 1 ? (mean * 1000).toFixed(0) + ' µs' : mean.toFixed(2) + ' ms'} ` +
      `(mean of ${l.length}), ${app.steps} points`
    : 'step: -';
}

/** Stream points from `next()` (null when exhausted) at the rate control's pace. */
function runSource(next) {
  stopSource();
  const token = { stopped: false };
  app.source = token;
  token.done = (async () => {
    let painted = performance.now();
    while (!token.stopped) {
      const point = next();
      if (point === null) break;
      try {
        await feed(point);
      } catch (err) {
        show(err.message, 'error');
        break;
      }
      const rate = Number($('rate').value);
      if (rate > 0) {
        await sleep(1000 / rate);
      } else if (performance.now() - painted > 30) { // as fast as possible, but let it paint
        await sleep(0);
        painted = performance.now();
      }
    }
    if (app.source === token) app.source = null;
    showLatency();
    showScores();
  })();
  return token.done;
}

function stopSource() {
  if (app.source) app.source.stopped = true;
  app.source = null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Points at the model's own scale (its feature normalisation), forever. */
function simulation(kind, contract) {
  const norm = contract.normalization ?? {};
  const n = contract.features.length;
  const mean = Array.from({ length: n }, (_, i) => norm.feature_mean?.[i] ?? 0);
  const std = Array.from({ length: n }, (_, i) => norm.feature_std?.[i] ?? 1);
  const price = [...mean];
  let t = 0;
  return () => {
    t += 1;
    if (kind === 'price') { // a mean-reverting random walk: wanders, never escapes the scale
      return price.map((p, i) => {
        price[i] = p + 0.02 * (mean[i] - p) + 0.15 * std[i] * gaussian();
        return price[i];
      });
    }
    // a sine spans +-sqrt(2) std; period 40 steps, like `rnnstream train --data sine`
    return mean.map((m, i) => m + std[i] * (Math.SQRT2 * Math.sin((Math.PI * t) / 20 + i) +
      0.05 * gaussian()));
  };
}

function gaussian() {
  const u = 1 - Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
}

function streamCSV(text) {
  const streamer = app.streamer;
  if (!streamer) throw new InputError('load a model first');
  const points = parseCSV(text, streamer.contract.features); // all checked before any is fed
  show(`streaming ${points.length} points from the CSV`);
  let i = 0;
  return { done: runSource(() => (i < points.length ? points[i++] : null)), count: points.length };
}

// ---- controls -------------------------------------------------------------------------------

$('model-files').addEventListener('change', (e) => act(() => loadFromFiles(e.target.files)));
$('load-url').addEventListener('click', () =>
  act(() => loadFromURLs($('model-url').value.trim(), $('sidecar-url').value.trim())));
$('sim-start').addEventListener('click', () => act(() => {
  if (!app.streamer) throw new InputError('load a model first');
  show(`simulation: ${$('sim-kind').value}`);
  runSource(simulation($('sim-kind').value, app.streamer.contract));
}));
$('stop').addEventListener('click', () => stopSource());
$('csv-stream').addEventListener('click', () => act(() => { streamCSV($('csv').value); }));
$('csv-file').addEventListener('change', (e) => act(async () => {
  $('csv').value = await e.target.files[0].text();
}));
$('reset').addEventListener('click', () => act(async () => {
  if (!app.streamer) return;
  await app.streamer.reset();
  resetView();
  show('state reset to the initial state');
}));
$('target').addEventListener('change', (e) => setTarget(Number(e.target.value)));
$('coverage').addEventListener('change', () => act(applyCoverage));
$('horizon').addEventListener('change', () => app.streamer && queueForecast());
const csvBox = $('csv');
csvBox.addEventListener('dragover', (e) => { e.preventDefault(); csvBox.classList.add('drop'); });
csvBox.addEventListener('dragleave', () => csvBox.classList.remove('drop'));
csvBox.addEventListener('drop', (e) => act(async () => {
  e.preventDefault();
  csvBox.classList.remove('drop');
  const file = e.dataTransfer.files[0];
  if (file) csvBox.value = await file.text();
}));

// ---- the test hook --------------------------------------------------------------------------

window.rnnstream = {
  /** Load from URLs with a backend ('wasm', 'webgl', 'webgpu') and, when given, the intervals'
   * coverage (null or 0: none; absent: the control's); resolves to the model's info. */
  async load({ model, sidecar = '', backend = 'wasm', coverage }) {
    $('backend').value = backend;
    if (coverage !== undefined) $('coverage').value = coverage === null ? '0' : String(coverage);
    return attempt(() => loadFromURLs(model, sidecar));
  },
  /** Feed points ([[F numbers], ...]) one by one; resolves to their predictions. */
  async step(points) {
    const ys = [];
    return attempt(async () => {
      for (const p of points) ys.push(Array.from(await feed(p)));
      await showScores();
      return ys;
    });
  },
  /** Intervals at `coverage` (null or 0: none), as the coverage control sets them. */
  async setCoverage(coverage) {
    $('coverage').value = coverage === null ? '0' : String(coverage);
    return attempt(applyCoverage);
  },
  /** The live accuracy per target as the page shows it (liveSummary; null: no coverage). */
  scores: () => app.streamer.scores(),
  /** The rows of the live accuracy table on the page, as text. */
  scoresTable: () => Array.from($('scores').rows, (r) => Array.from(r.cells, (c) => c.textContent)),
  /** Stream a CSV text as the "Stream CSV" button does; resolves when every point is fed. */
  async streamCSV(text) {
    const { done, count } = await attempt(() => streamCSV(text));
    await done;
    return count;
  },
  async forecast(n) {
    return (await app.streamer.forecast(n)).map((y) => Array.from(y));
  },
  async reset() {
    await app.streamer.reset();
    resetView();
  },
  state: () => app.streamer.snapshot(),
  info,
  message: () => ({ ...app.message }),
  /** Wait for the last control's action (a file chosen, a button clicked) to finish. */
  settled: () => app.pending,
  /** Wait until the chart's forecast is up to date with the points fed. */
  async idle() {
    await app.pending;
    while (app.forecastQueued) await app.forecastDone;
    await app.forecastDone;
  },
  /** The chart's box in CSS pixels of the page, {x, y, width, height}. */
  chartBox: () => {
    const r = $('chart').getBoundingClientRect();
    return { x: r.x, y: r.y, width: r.width, height: r.height };
  },
  /** Which GPU APIs this browser offers (a backend may still refuse a graph). */
  backends: () => ({
    webgl2: Boolean(document.createElement('canvas').getContext('webgl2')),
    webgpu: 'gpu' in navigator,
  }),
  /** ms per step of `points` fed straight to the model (no drawing), for the bench. */
  async bench(points) {
    const t0 = performance.now();
    for (const p of points) await app.streamer.step(p);
    return (performance.now() - t0) / points.length;
  },
  /** Draw now (tests take a screenshot without waiting for an animation frame). */
  draw: () => chart.draw(),
  ort,
};
document.documentElement.dataset.ready = 'true';
