#!/usr/bin/env node
/**
 * Stream an rnnstream forecaster from Node.js: one data point in, one prediction out, with the
 * recurrent state carried between calls. This is the reference embedders copy; it is tested
 * against the Python runtime (tests/embedding/test_javascript.py).
 *
 *   node stream.js MODEL.onnx [POINTS.csv|-] [--key] [--coverage C] [--season M] [--dump-state FILE]
 *
 * MODEL.onnx may also be the step graph MODEL.step.onnx (the same model for one time step,
 * from plain ops); its contract is MODEL.onnx.json all the same.
 *
 * Input (POINTS.csv, or stdin when absent or "-"): one point per line, F comma-separated raw
 * values in the order of the model's features. An optional first line of feature names (a
 * header) maps columns by name, so columns may be reordered and extra columns are ignored.
 * With --key the first column is a stream key: every key is its own stream with its own state,
 * and each output line is "key,prediction...".
 * Output: one line per point, T comma-separated predictions, each the shortest decimal that
 * reads back as the same float32.
 * --coverage C (0 < C < 1) adds a prediction interval per target, calibrated online per stream
 * exactly as rnnstream's Python runtime does it (Predictor(coverage=C), rnnstream.runtime.live:
 * quantile tracking, Angelopoulos, Candes & Tibshirani, "Conformal PID Control for Time Series
 * Prediction", NeurIPS 2023, https://arxiv.org/abs/2307.16895). Each line is then
 * "prediction,lower,upper" per target, in the model's target order, every number formatted as
 * Python's format(v, ".9g") formats it (inf, -inf, nan), the lines of `rnnstream stream
 * --coverage C`. --season M sets the seasonal-naive baseline's period in points for the live
 * accuracy (default: the season the model was trained with, metrics.season; 0: none).
 * --dump-state FILE writes the final state of every stream as JSON (each state's shape without its
 * batch axis, and the model fingerprint so the snapshot is never loaded into another model).
 * With --coverage it also holds each stream's live state ("live", or "live_streams" by key): the
 * arrays of rnnstream.runtime.live.STATE_ARRAYS without their stream axis, non-finite values and
 * -0 as the strings "nan", "inf", "-inf", "-0.0" (JSON has no such numbers; Python's float()
 * reads them).
 *
 * Everything about the model comes from its sidecar, MODEL.onnx.json: onnxruntime's JavaScript
 * API cannot read an ONNX file's custom metadata, so rnnstream writes the same contract beside
 * the model. The contract (see docs/embedding.md):
 *   input  x       float32 [batch, time, F]          raw units (normalisation is in the graph)
 *   output y       float32 [batch, time, T]          raw units
 *   state  <s>_in  float32 [batch, layers, hidden]   one per state: h (rnn, gru) or h, c (lstm),
 *                  plus last [batch, F + 1] for models fed changes; shapes come from `states`
 *          <s>_out is the <s>_in of the next call; the first call gets zeros.
 *
 * Install: ONNXRUNTIME_NODE_INSTALL=skip npm ci
 * (the package's install script otherwise fetches optional CUDA files from outside the npm
 * registry; the CPU build is in the npm package itself).
 */
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const readline = require('node:readline');
const ort = require('onnxruntime-node');

const FORMAT = 'rnnstream';
const SCHEMA_VERSION = 4; // the newest contract version this program understands (2: input_mode 'delta', a 'last' state; 3: cell 'custom' with its states declared, step_only; 4: target_mode 'seasonal', a 'cycle' state)

class UsageError extends Error {}

const USAGE = 'usage: node stream.js MODEL.onnx [POINTS.csv|-] [--key] [--coverage C] [--season M] ' +
  '[--dump-state FILE]';

function parseArgs(argv) {
  const args = { model: null, points: null, key: false, dumpState: null, coverage: null, season: null };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value; // --option=value or --option value
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    if (eq > 0) [a, value] = [a.slice(0, eq), a.slice(eq + 1)];
    const takes = ['--dump-state', '--coverage', '--season'].includes(a);
    if (takes && value === undefined) value = argv[++i];
    if (takes && value === undefined) throw new UsageError(`${a} needs a value`);
    if (!takes && eq > 0) throw new UsageError(`${a} takes no value`);
    if (a === '--key') args.key = true;
    else if (a === '--dump-state') args.dumpState = value;
    else if (a === '--coverage') args.coverage = parseCoverage(value);
    else if (a === '--season') args.season = parseSeason(value);
    else if (a === '-h' || a === '--help') throw new UsageError('');
    else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else positional.push(a);
  }
  if (positional.length < 1 || positional.length > 2) throw new UsageError('expected MODEL.onnx [POINTS.csv|-]');
  if (args.season !== null && args.coverage === null) {
    throw new UsageError('--season needs --coverage (it adds seasonal naive to the live scores)');
  }
  [args.model, args.points = '-'] = positional;
  return args;
}

function parseCoverage(text) {
  const c = DECIMAL.test(text) ? Number(text) : NaN;
  if (!(c > 0 && c < 1)) {
    throw new UsageError(`--coverage is ${JSON.stringify(text)}; expected a number strictly ` +
      'between 0 and 1, the share of values the intervals should hold (e.g. 0.9)');
  }
  return c;
}

function parseSeason(text) {
  const m = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(m)) {
    throw new UsageError(`--season is ${JSON.stringify(text)}; expected a whole number of points, ` +
      'the seasonal period (e.g. 24 for hourly data with a daily cycle; 0: none)');
  }
  return m;
}

const DECIMAL = /^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$/;

// ---- the contract ---------------------------------------------------------------------------

/**
 * Read and check the sidecar written by `rnnstream export`: MODEL.onnx.json, also for the step
 * graph MODEL.step.onnx, which the sidecar names with the SHA-256 of its bytes.
 */
function loadContract(modelPath) {
  const step = modelPath.endsWith('.step.onnx');
  const sidecar = sidecarOf(modelPath);
  let contract;
  try {
    contract = JSON.parse(fs.readFileSync(sidecar, 'utf8'));
  } catch (err) {
    throw new Error(`${sidecar}: cannot read the rnnstream sidecar (${err.message}); ` +
      "'rnnstream export' writes it beside the model, copy it along with the .onnx file");
  }
  if (contract.format !== FORMAT) {
    throw new Error(`${sidecar}: format is ${JSON.stringify(contract.format)}, expected "${FORMAT}"`);
  }
  if (!(contract.schema_version >= 1 && contract.schema_version <= SCHEMA_VERSION)) {
    throw new Error(`${sidecar}: contract schema version ${contract.schema_version} is not ` +
      `supported (this program reads version ${SCHEMA_VERSION}); update the example`);
  }
  if (step) checkStepGraph(modelPath, sidecar, contract);
  return contract;
}

/** MODEL.onnx.json, for MODEL.onnx and for its step graph MODEL.step.onnx alike. */
function sidecarOf(modelPath) {
  const step = modelPath.endsWith('.step.onnx');
  return step ? `${modelPath.slice(0, -'.step.onnx'.length)}.onnx.json` : `${modelPath}.json`;
}

/** The step graph must be the very file the sidecar names: a stale one computes another model. */
function checkStepGraph(modelPath, sidecar, contract) {
  const want = contract.step_model?.sha256;
  const have = crypto.createHash('sha256').update(fs.readFileSync(modelPath)).digest('hex');
  if (have !== want) {
    throw new Error(`${modelPath}: SHA-256 ${have.slice(0, 16)}... is not the step graph ` +
      `${sidecar} names (${want ? `${want.slice(0, 16)}...` : 'none'}); re-export the model`);
  }
}

/** The session must have exactly the inputs and outputs the sidecar promises. */
function checkSession(session, contract) {
  const want = {
    inputs: [contract.input.name, ...contract.states.map((s) => s.input)],
    outputs: [contract.output.name, ...contract.states.map((s) => s.output)],
  };
  const have = { inputs: session.inputNames, outputs: session.outputNames };
  for (const kind of ['inputs', 'outputs']) {
    if ([...want[kind]].sort().join() !== [...have[kind]].sort().join()) {
      throw new Error(`the model's ${kind} are [${have[kind]}] but its sidecar declares ` +
        `[${want[kind]}]: the sidecar belongs to another model`);
    }
  }
}

// ---- state ----------------------------------------------------------------------------------

/** A new stream's state: one tensor per state, shaped like the declared shape with batch = 1. */
function initialState(contract) {
  const state = {};
  for (const s of contract.states) {
    const dims = s.shape.map((d, axis) => (axis === s.batch_axis ? 1 : d)); // [1, layers, hidden]
    const size = dims.reduce((a, b) => a * b, 1);
    state[s.name] = new ort.Tensor('float32', new Float32Array(size).fill(s.initial), dims);
  }
  return state;
}

/**
 * One step of one stream: feed the point and the stream's state, keep the new state.
 * `values` holds F raw numbers; returns the T predictions (a Float32Array).
 * A point with time > 1 ([1, n, F]) primes the state through the same graph in one call.
 */
async function step(session, contract, state, values) {
  const x = new ort.Tensor('float32', Float32Array.from(values), [1, 1, values.length]);
  const feeds = { [contract.input.name]: x };
  for (const s of contract.states) feeds[s.input] = state[s.name];
  const out = await session.run(feeds);
  for (const s of contract.states) state[s.name] = out[s.output]; // <s>_out -> next <s>_in
  return out[contract.output.name].data;
}

/** A stream's state as plain nested arrays [layers][hidden] per state name, for JSON. */
function stateToJSON(state, contract) {
  const nest = (data, dims) => (dims.length === 1 ? Array.from(data)
    : Array.from({ length: dims[0] }, (_, i) => {
      const stride = data.length / dims[0];
      return nest(data.subarray(i * stride, (i + 1) * stride), dims.slice(1));
    }));
  const json = {};
  for (const s of contract.states) {
    const t = state[s.name];
    json[s.name] = nest(t.data, t.dims.filter((_, axis) => axis !== s.batch_axis));
  }
  return json;
}

// ---- live accuracy and intervals (--coverage) -----------------------------------------------
//
// A port of rnnstream.runtime.live.LiveStream, the same float operations in the same order, so
// the numbers (and the state) are bit for bit those of Python's Predictor(coverage=C). Per stream
// and target, the interval is prediction +- q; each time a prediction is scored (when the value
// it was for arrives, `horizon` points later), quantile tracking (Angelopoulos, Candes &
// Tibshirani 2023, section 2), applied to log |residual|, moves q:
//   log q <- log q + lr * (miss - alpha),   alpha = 1 - coverage, miss = 0 or 1
//   q <- max(q, 0.01 * recent_mae)          (never collapses to zero)
// so a miss widens the interval by exp(lr * coverage) and a hit narrows it by exp(-lr * alpha):
// the miss rate is driven to alpha. The two factors come from expSeries, the same 32-term
// series Python uses (Math.exp and libm differ in the last bit now and then). q starts at the validation
// half-width the sidecar stores (metrics.calibration), or, for a model without one, is infinite
// until `warmup` residuals were scored and then starts at the largest of them. A target can only
// be scored when it is also a feature (same name); otherwise its interval stays where it started.

const LIVE_DEFAULTS = { lr: 0.1, halfLife: 100.0 }; // rnnstream.runtime.live.DEFAULTS
const LIVE_FLOOR = 0.01; // rnnstream.runtime.live.FLOOR

/** exp(x) for |x| <= 1 by its series in basic arithmetic: the bits of rnnstream.runtime.live.exp_series. */
function expSeries(x) {
  let total = 1.0;
  let term = 1.0;
  for (let k = 1; k < 33; k++) {
    term = term * x / k;
    total = total + term;
  }
  return total;
}
const MODEL = 0; // forecasters, in this order: the model, persistence, seasonal naive
const N_FORECASTERS = 3;
const N_ACC = 6; // per forecaster and target: count, abs_sum, sq_sum, ew_weight, ew_abs, ew_sq

class LiveStream {
  constructor(features, targets, { horizon = 1, season = null, coverage, initial = null,
    lr = LIVE_DEFAULTS.lr, halfLife = LIVE_DEFAULTS.halfLife }) {
    this.targets = targets;
    this.horizon = horizon;
    this.season = season;
    this.coverage = coverage;
    this.alpha = 1.0 - coverage;
    this.lr = lr;
    this.decay = 0.5 ** (1.0 / halfLife);
    this.up = expSeries(lr * (1.0 - this.alpha)); // rnnstream.runtime.live.exp_series
    this.down = expSeries(lr * (0.0 - this.alpha));
    const index = new Map(features.map((name, i) => [name, i]));
    this.source = targets.map((t) => (index.has(t) ? index.get(t) : -1)); // -1: never scored
    this.initial = initial ?? targets.map(() => Infinity);
    this.warmup = warmup(coverage);
    // seasonal naive for t + h is the value at lag m * ceil(h / m) - h from t, in [0, m)
    this.lag = season === null ? 0 : season * Math.floor((horizon + season - 1) / season) - horizon;
    this.reset();
  }

  /** Forget everything (a fresh stream). */
  reset() {
    const t = this.targets.length;
    const full = (v) => new Array(t).fill(v);
    this.seen = 0;
    this.pending = Array.from({ length: this.horizon }, () => [full(NaN), full(NaN), full(NaN)]);
    this.pendingWidth = Array.from({ length: this.horizon }, () => full(Infinity));
    this.history = Array.from({ length: this.season ?? 0 }, () => full(NaN));
    this.acc = Array.from({ length: N_FORECASTERS }, () => Array.from({ length: N_ACC }, () => full(0.0)));
    this.q = [...this.initial];
    this.peak = full(0.0);
    this.cover = [full(0.0), full(0.0)]; // intervals scored, of which held the value
  }

  /** Score what is due with the point x (F finite values) and record the prediction y made from it. */
  update(x, y) {
    const h = this.horizon;
    const seen = this.seen;
    const slot = seen % h;
    const due = this.pending[slot];
    const issued = this.pendingWidth[slot];
    const actual = this.source.map((i) => (i >= 0 ? x[i] : NaN));
    const { decay } = this;
    for (let f = 0; f < N_FORECASTERS; f++) {
      const forecast = due[f];
      const [cnt, asum, ssum, eww, ewa, ews] = this.acc[f];
      for (let j = 0; j < actual.length; j++) {
        const err = actual[j] - forecast[j];
        if (err - err !== 0.0) continue; // NaN or infinite: not scorable
        const ae = Math.abs(err);
        const sq = err * err;
        cnt[j] += 1.0;
        asum[j] += ae;
        ssum[j] += sq;
        eww[j] = eww[j] * decay + 1.0;
        ewa[j] = ewa[j] * decay + ae;
        ews[j] = ews[j] * decay + sq;
        if (f === MODEL) { // track the quantile of the model's residuals
          if (ae > this.peak[j]) this.peak[j] = ae;
          let q = this.q[j];
          if (issued[j] < Infinity) {
            const hit = ae <= issued[j];
            this.cover[0][j] += 1.0;
            if (hit) this.cover[1][j] += 1.0;
            const moved = q * (hit ? this.down : this.up);
            const floor = (ewa[j] / eww[j]) * LIVE_FLOOR;
            q = moved > floor ? moved : floor; // as numpy's maximum
          }
          if (q === Infinity && cnt[j] >= this.warmup) q = this.peak[j];
          this.q[j] = q;
        }
      }
    }
    let seasonal;
    if (this.season === null) {
      seasonal = actual.map(() => NaN);
    } else {
      const m = this.season;
      this.history[seen % m] = [...actual];
      seasonal = seen >= this.lag ? [...this.history[(seen - this.lag) % m]] : actual.map(() => NaN);
    }
    this.pending[slot] = [[...y], actual, seasonal];
    this.pendingWidth[slot] = [...this.q];
    this.seen = seen + 1;
  }

  /** [lower, upper] around the latest prediction, one value per target (NaN before any). */
  interval() {
    if (this.seen === 0) return [this.targets.map(() => NaN), this.targets.map(() => NaN)];
    const slot = (this.seen - 1) % this.horizon;
    const y = this.pending[slot][MODEL];
    const w = this.pendingWidth[slot];
    return [y.map((v, j) => v - w[j]), y.map((v, j) => v + w[j])];
  }

  /** The state as rnnstream.runtime.live.LiveStream.state_arrays() has it, without the stream axis. */
  stateArrays() {
    const acc = Array.from({ length: N_ACC }, (_, k) => this.acc.map((perForecaster) => [...perForecaster[k]]));
    return {
      seen: this.seen,
      pending: this.pending,
      pending_width: this.pendingWidth,
      history: this.history,
      acc, // [metric][forecaster][target]
      q: this.q,
      peak: this.peak,
      cover: this.cover,
    };
  }
}

/** The fewest residuals whose conformal `coverage` quantile is finite. */
function warmup(coverage) {
  let m = 1;
  while (Math.ceil((m + 1) * coverage) > m) m++;
  return m;
}

/**
 * One step of a stream's live scores (Predictor._live_update): a prediction that is NaN or
 * infinite cannot be scored or bounded, so the live scores start afresh.
 */
function liveUpdate(live, x, y) {
  if (!y.every((v) => v - v === 0.0)) {
    live.reset();
    return;
  }
  live.update(x, y);
}

/** A function that opens a stream's LiveStream for this model and the options given. */
function liveOpener(contract, args, sidecar) {
  if (!(Number.isInteger(contract.horizon) && contract.horizon >= 1)) {
    throw new Error(`${sidecar}: horizon is ${JSON.stringify(contract.horizon)}; expected an ` +
      'integer >= 1 (--coverage needs it: predictions are scored horizon points later)');
  }
  const initial = initialHalfWidths(contract, args.coverage, sidecar);
  const season = seasonOf(contract, args.season);
  const open = () => new LiveStream(contract.features, contract.targets, {
    horizon: contract.horizon, season, coverage: args.coverage, initial,
  });
  open.season = season;
  return open;
}

/** --season M; without it the season the model was trained with (metrics.season), if any;
 * 0: none (null). As rnnstream.runtime.live.open_live. */
function seasonOf(contract, given) {
  if (given === null) {
    const stored = isObject(contract.metrics) ? contract.metrics.season : undefined;
    return Number.isSafeInteger(stored) && stored >= 1 ? stored : null;
  }
  return given === 0 ? null : given;
}

/** The validation half-width per target at `coverage` from the sidecar's metrics.calibration,
 * one step ahead (rnnstream.runtime.live.initial_half_widths); null for a model without one. */
function initialHalfWidths(contract, coverage, sidecar) {
  const table = calibrationTable(contract.metrics, contract.targets, sidecar);
  if (table === null) return null;
  return contract.targets.map((t) => halfWidthAt(table.levels, table.half_widths[t][0], coverage));
}

function calibrationTable(metrics, targets, sidecar) {
  const cal = isObject(metrics) ? metrics.calibration : undefined;
  if (cal === undefined || cal === null) return null;
  const levels = isObject(cal) ? cal.levels : undefined;
  const steps = isObject(cal) ? cal.half_widths : undefined;
  const isNum = (v) => typeof v === 'number';
  let problem = '';
  if (!(Array.isArray(levels) && levels.length > 0 &&
      levels.every((v, i) => isNum(v) && v > 0 && v < 1 && (i === 0 || levels[i - 1] <= v)))) {
    problem = `'levels' is ${JSON.stringify(levels)}; expected increasing coverages in (0, 1)`;
  } else if (!isObject(steps) || !Object.keys(steps).every((k) => targets.includes(k)) ||
      !targets.every((t) => Object.hasOwn(steps, t))) {
    const given = isObject(steps) ? JSON.stringify(Object.keys(steps).sort()) : JSON.stringify(steps);
    problem = `'half_widths' has targets ${given}; the model's are ${JSON.stringify(targets)}`;
  } else {
    const bad = Object.keys(steps).find((name) => {
      const rows = steps[name];
      return !(Array.isArray(rows) && rows.length > 0 &&
        rows.every((r) => Array.isArray(r) && r.length === levels.length &&
          r.every((v) => v === null || (isNum(v) && Number.isFinite(v) && v >= 0))));
    });
    if (bad !== undefined) {
      problem = `'half_widths' of ${JSON.stringify(bad)} is not a list of rows (one per step ` +
        `ahead) of ${levels.length} non-negative numbers or nulls`;
    }
  }
  if (problem) {
    throw new Error(`${sidecar}: metrics 'calibration' is malformed: ${problem}. It is written ` +
      'by training; re-export the model with this release');
  }
  return { levels, half_widths: steps };
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A half-width at `coverage`, linear between the stored levels; inf outside them or next to a
 * null (rnnstream.runtime.live._at, the same arithmetic). */
function halfWidthAt(levels, row, coverage) {
  for (let i = 0; i < levels.length; i++) {
    if (Math.abs(levels[i] - coverage) <= 1e-12) return row[i] === null ? Infinity : row[i];
    if (i && levels[i - 1] < coverage && coverage < levels[i]) {
      const lo = row[i - 1];
      const hi = row[i];
      if (lo === null || hi === null) return Infinity;
      const w = (coverage - levels[i - 1]) / (levels[i] - levels[i - 1]);
      return lo + w * (hi - lo);
    }
  }
  return Infinity;
}

/** A stream's live state for JSON: NaN, +-inf and -0 as "nan", "inf", "-inf", "-0.0". */
function liveToJSON(live) {
  const encode = (v) => {
    if (Array.isArray(v)) return v.map(encode);
    if (Number.isNaN(v)) return 'nan';
    if (v === Infinity) return 'inf';
    if (v === -Infinity) return '-inf';
    if (Object.is(v, -0)) return '-0.0';
    return v;
  };
  return Object.fromEntries(Object.entries(live.stateArrays()).map(([k, v]) => [k, encode(v)]));
}

// ---- input and output -----------------------------------------------------------------------

/** The shortest decimal that reads back as the same float32 (9 significant digits always do). */
function formatFloat32(v) {
  for (let digits = 1; digits < 9; digits++) {
    const s = Number(v.toPrecision(digits));
    if (Math.fround(s) === v) return String(s);
  }
  return String(Number(v.toPrecision(9)));
}

/**
 * A number exactly as Python's format(v, '.9g') writes it: 9 significant digits rounded half to
 * even, trailing zeros dropped, exponent form below 1e-4 and from 1e9 ("1.5e-05", "1e+09"), and
 * "inf", "-inf", "nan", "-0". toExponential rounds exact ties away from zero instead; an exact tie
 * (the value's full decimal expansion ends in that 5) is rare and checked exactly with BigInt.
 */
function formatG9(v) {
  if (Number.isNaN(v)) return 'nan';
  if (v === Infinity) return 'inf';
  if (v === -Infinity) return '-inf';
  const sign = v < 0 || Object.is(v, -0) ? '-' : '';
  const a = Math.abs(v);
  if (a === 0) return `${sign}0`;
  const [mantissa, e] = a.toExponential(8).split('e');
  let digits = mantissa.replace('.', ''); // 9 digits
  const exp = Number(e);
  if (digits.endsWith('1') || digits.endsWith('3') || digits.endsWith('5') || digits.endsWith('7') ||
      digits.endsWith('9')) {
    if (a.toExponential(9).split('e')[0].endsWith('5') && isTie(a, BigInt(digits), exp)) {
      digits = String(BigInt(digits) - 1n); // the even neighbour, as Python rounds
    }
  }
  const strip = (s) => (s.includes('.') ? s.replace(/0+$/, '').replace(/[.]$/, '') : s);
  if (exp >= -4 && exp < 9) {
    const fixed = exp >= 0 ? `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`
      : `0.${'0'.repeat(-exp - 1)}${digits}`;
    return sign + strip(fixed);
  }
  const exponent = `${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return `${sign}${strip(`${digits[0]}.${digits.slice(1)}`)}e${exponent}`;
}

/** Whether a > 0 lies exactly halfway below n * 10^(exp - 8): a = (n - 1/2) * 10^(exp - 8). */
function isTie(a, n, exp) {
  let m = a;
  let k = 0;
  while (!Number.isInteger(m)) { m *= 2; k--; } // a = m * 2^k exactly
  // 2 * m * 2^k == (2n - 1) * 2^p * 5^p, p = exp - 8
  const p = exp - 8;
  let lhs = BigInt(m);
  let rhs = 2n * n - 1n;
  const e2 = k + 1 - p;
  if (e2 >= 0) lhs <<= BigInt(e2); else rhs <<= BigInt(-e2);
  if (p >= 0) rhs *= 5n ** BigInt(p); else lhs *= 5n ** BigInt(-p);
  return lhs === rhs;
}

/** Turns CSV lines into points of F numbers, honouring an optional header of feature names. */
class PointParser {
  constructor(features, keyed) {
    this.features = features;
    this.keyed = keyed;
    this.columns = null; // feature i is read from column columns[i]; null: columns in order
    this.seenFirst = false;
  }

  /** Returns {key, values}, or null for a blank line or the header. Throws on a bad line. */
  parse(line, lineNo) {
    const fields = line.split(',').map((f) => f.trim());
    if (fields.length === 1 && fields[0] === '') return null;
    const key = this.keyed ? fields.shift() : '';
    const first = !this.seenFirst;
    this.seenFirst = true;
    if (first && fields.some((f) => !isNumber(f))) {
      this.columns = this.features.map((name) => fields.indexOf(name));
      const missing = this.features.filter((_, i) => this.columns[i] < 0);
      if (missing.length) {
        throw new Error(`line ${lineNo}: header [${fields}] lacks the features [${missing}] ` +
          `(the model reads [${this.features}])`);
      }
      return null;
    }
    const values = this.columns ? this.columns.map((c) => fields[c]) : fields;
    if (!this.columns && fields.length !== this.features.length) {
      throw new Error(`line ${lineNo}: expected ${this.features.length} values ` +
        `(${this.features}), got ${fields.length}`);
    }
    const bad = values.findIndex((f) => !isNumber(f));
    if (bad >= 0) {
      throw new Error(`line ${lineNo}: feature ${this.features[bad]} is ` +
        `${JSON.stringify(values[bad] ?? '')}, not a finite number`);
    }
    const huge = values.findIndex((f) => !Number.isFinite(Math.fround(Number(f))));
    if (huge >= 0) { // the model reads float32: this would be fed as infinity
      throw new Error(`line ${lineNo}: feature ${this.features[huge]} is ${values[huge]}, beyond ` +
        'the float32 range (+-3.40282e+38) of the model input');
    }
    return { key, values: values.map(Number) };
  }
}

function isNumber(field) {
  return field !== undefined && field !== '' && Number.isFinite(Number(field));
}

// ---- main -----------------------------------------------------------------------------------

async function main(argv) {
  const args = parseArgs(argv);
  const contract = loadContract(args.model);
  // One thread per call: a streaming step is tiny and threads cost more than they save. One
  // session may be run concurrently for many streams; each stream's state is its own.
  const session = await ort.InferenceSession.create(args.model, { intraOpNumThreads: 1 });
  checkSession(session, contract);

  const openLive = args.coverage === null ? null : liveOpener(contract, args, sidecarOf(args.model));
  const parser = new PointParser(contract.features, args.key);
  let readerGone = false; // `node stream.js ... | head`: the reader left early
  process.stdout.on('error', (err) => {
    if (err.code !== 'EPIPE') { // a real write error: say so and fail
      process.stderr.write(`error: cannot write the predictions: ${err.message}\n`);
      process.exit(1);
    }
    readerGone = true; // stop quietly, as Unix tools and `rnnstream stream` do
  });
  const streams = new Map(); // stream key -> state; never feed one stream's state to another
  const lives = new Map(); // stream key -> its LiveStream (--coverage)
  const input = args.points === '-' ? process.stdin : fs.createReadStream(args.points);
  const lines = readline.createInterface({ input, crlfDelay: Infinity });
  let lineNo = 0;
  for await (const line of lines) {
    if (readerGone) break;
    const point = parser.parse(line, ++lineNo);
    if (!point) continue;
    if (!streams.has(point.key)) {
      streams.set(point.key, initialState(contract));
      if (openLive) lives.set(point.key, openLive());
    }
    const y = await step(session, contract, streams.get(point.key), point.values);
    let text;
    if (openLive) {
      const live = lives.get(point.key);
      liveUpdate(live, Array.from(Float32Array.from(point.values)), Array.from(y));
      const [lower, upper] = live.interval();
      text = Array.from(y, (v, j) => [v, lower[j], upper[j]].map(formatG9).join(',')).join(',');
    } else {
      text = Array.from(y, formatFloat32).join(',');
    }
    process.stdout.write(args.key ? `${point.key},${text}\n` : `${text}\n`);
  }

  if (args.dumpState) {
    const snapshot = { fingerprint: contract.fingerprint };
    if (args.key) {
      snapshot.streams = {};
      for (const [key, state] of streams) snapshot.streams[key] = stateToJSON(state, contract);
    } else {
      snapshot.states = stateToJSON(streams.get('') ?? initialState(contract), contract);
    }
    if (openLive) {
      Object.assign(snapshot, { coverage: args.coverage, season: openLive.season });
      if (args.key) {
        snapshot.live_streams = {};
        for (const [key, live] of lives) snapshot.live_streams[key] = liveToJSON(live);
      } else {
        snapshot.live = liveToJSON(lives.get('') ?? openLive());
      }
    }
    fs.writeFileSync(args.dumpState, `${JSON.stringify(snapshot)}\n`);
  }
  await session.release();
}

if (require.main !== module) {
  // required (by the tests): the pieces, no run
  module.exports = {
    LIVE_DEFAULTS, LIVE_FLOOR, LiveStream, liveUpdate, liveToJSON, formatG9, formatFloat32,
    halfWidthAt, expSeries,
  };
} else main(process.argv.slice(2)).catch((err) => {
  if (err instanceof UsageError) {
    if (err.message) process.stderr.write(`error: ${err.message}\n`);
    process.stderr.write(`${USAGE}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`error: ${err.message}\n`);
    process.exitCode = 1;
  }
});
