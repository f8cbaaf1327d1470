/**
 * Stream an rnnstream forecaster in the browser with onnxruntime-web: the model, its contract
 * (the sidecar MODEL.onnx.json), one stream's state and its live scores. No DOM here: app.js
 * draws the page, and any other page can import this module the same way.
 *
 *   const streamer = await Streamer.load({ modelBytes, modelName, sidecarText, backend: 'wasm',
 *                                          coverage: 0.9 });
 *   const { y, lower, upper } = await streamer.step([15.2]); // F raw values in, T out
 *   const ahead = await streamer.forecast(20);        // when the targets are the features
 *   const scores = await streamer.scores();           // live accuracy, per target
 *
 * What the Node example does too -- the sidecar check, the state loop, CSV points, the live
 * scores and intervals -- is ../core/rnnstream-core.mjs, one module for both (it is given this
 * page's onnxruntime-web namespace). This file adds what only a page needs: telling the two
 * graphs apart from their bytes, the webgl backend's first run, and a queue of calls.
 *
 * Both graphs of an export load: the sequence graph MODEL.onnx (native RNN/LSTM/GRU ops, any
 * time length) and the step graph MODEL.step.onnx (plain ops, time = 1), which the sidecar
 * names in `step_model` with the SHA-256 of its bytes.
 */
import * as ort from 'onnxruntime-web';
import {
  InputError, METADATA_KEY, ModelError, PointParser, StateLoop, checkSession, liveOpener,
  liveSummary, liveUpdate, parseSidecar, targetsAreFeatures,
} from '../core/rnnstream-core.mjs';

export {
  FORMAT, InputError, ModelError, SCHEMA_VERSION, checkSession, liveSummary, parseSidecar,
  targetsAreFeatures,
} from '../core/rnnstream-core.mjs';

// ---- what is in an ONNX file ----------------------------------------------------------------

/**
 * The `metadata_props` of an ONNX ModelProto as a {key: value} object; throws on bytes that
 * are not a protobuf message. onnxruntime-web does not expose custom metadata, and these few
 * lines of the protobuf wire format (top-level fields only; the graph is skipped by length)
 * spare the page a protobuf library.
 */
export function onnxMetadata(bytes) {
  const r = new WireReader(bytes);
  const props = {};
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field === 14 && wire === 2) { // repeated StringStringEntryProto metadata_props
      const entry = new WireReader(r.bytes());
      let key = '';
      let value = '';
      while (!entry.done()) {
        const [f, w] = entry.tag();
        if (f === 1 && w === 2) key = entry.text();
        else if (f === 2 && w === 2) value = entry.text();
        else entry.skip(w);
      }
      props[key] = value;
    } else {
      r.skip(wire);
    }
  }
  return props;
}

class WireReader {
  constructor(bytes) {
    this.buf = bytes;
    this.pos = 0;
  }

  done() { return this.pos >= this.buf.length; }

  varint() {
    let value = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      if (this.pos >= this.buf.length) throw new Error('truncated varint');
      const b = this.buf[this.pos++];
      value += (b & 0x7f) * 2 ** shift; // exact up to 2^53, enough for any length here
      if (b < 0x80) return value;
    }
    throw new Error('varint longer than 10 bytes');
  }

  tag() {
    const t = this.varint();
    if (t < 8) throw new Error(`field number 0 at byte ${this.pos}`);
    return [Math.floor(t / 8), t % 8];
  }

  bytes() {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw new Error('field runs past the end');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  text() { return new TextDecoder('utf-8', { fatal: true }).decode(this.bytes()); }

  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new Error(`wire type ${wire} at byte ${this.pos}`);
    if (this.pos > this.buf.length) throw new Error('field runs past the end');
  }
}

export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Which graph of the sidecar's model these bytes are: 'sequence' (its embedded contract has
 * the sidecar's fingerprint) or 'step' (the SHA-256 the sidecar names). Anything else is
 * refused: a model with another sidecar computes another function, without any error.
 */
export async function identifyGraph(bytes, contract, modelName) {
  let meta;
  try {
    meta = onnxMetadata(bytes);
  } catch (err) {
    throw new ModelError(`${modelName} is not an ONNX model (${err.message}); choose the ` +
      'model.onnx or model.step.onnx written by rnnstream export');
  }
  if (METADATA_KEY in meta) {
    let embedded;
    try {
      embedded = JSON.parse(meta[METADATA_KEY]);
    } catch (err) {
      throw new ModelError(`${modelName}: its embedded rnnstream contract is not JSON (${err.message})`);
    }
    if (embedded.fingerprint !== contract.fingerprint) {
      throw new ModelError(`the sidecar belongs to another model: ${modelName} has fingerprint ` +
        `${embedded.fingerprint}, the sidecar ${contract.fingerprint}; choose the ` +
        `${modelName}.json written beside it`);
    }
    return 'sequence';
  }
  const step = contract.step_model;
  if (step?.sha256 && (await sha256Hex(bytes)) === step.sha256) return 'step';
  throw new ModelError(`${modelName} is neither the model its sidecar describes (no embedded ` +
    `rnnstream contract) nor its step graph ${step?.file ? `${step.file} (SHA-256 differs)` :
    '(the sidecar names none)'}; choose the files of one export`);
}

// ---- one stream -----------------------------------------------------------------------------

/**
 * One model (an onnxruntime-web session checked against its sidecar), one stream's state and,
 * when a coverage is set, its live scores: intervals and the accuracy of the model beside
 * persistence and seasonal naive (rnnstream-core.mjs's port of rnnstream.runtime.live).
 * Calls are queued: a simulation timer, a CSV being streamed and a button may all call at once,
 * and each call sees the state the previous one left. A refused call leaves the state as it was.
 */
export class Streamer {
  /**
   * Load and check a model: `modelBytes` (Uint8Array), its file name, the sidecar's text, the
   * onnxruntime-web execution provider ('wasm', 'webgl' or 'webgpu') and the intervals'
   * coverage (null: none). Throws ModelError.
   */
  static async load({ modelBytes, modelName, sidecarText, sidecarName = 'sidecar', backend = 'wasm',
    coverage = null }) {
    const contract = parseSidecar(sidecarText, sidecarName);
    const graph = await identifyGraph(modelBytes, contract, modelName);
    let session;
    try {
      // no fallback: a backend that cannot run the graph must say so, not hide behind another
      session = await ort.InferenceSession.create(modelBytes, { executionProviders: [backend] });
    } catch (err) {
      throw new ModelError(`onnxruntime-web (${backend}) cannot load ${modelName}: ${err.message ?? err}`);
    }
    const streamer = new Streamer(session, contract, { graph, backend, modelName, sidecarName });
    try {
      checkSession(session, contract);
      streamer.openLive(coverage);
      if (backend === 'webgl') await streamer.settleWebGL();
    } catch (err) {
      await session.release();
      throw err;
    }
    return streamer;
  }

  constructor(session, contract, info) {
    this.session = session;
    this.contract = contract;
    this.info = info; // {graph: 'sequence' | 'step', backend, modelName, sidecarName}
    this.model = new StateLoop(ort, session, contract);
    this.state = this.model.initialState();
    this.last = null; // the latest prediction (Float32Array), what forecast starts from
    this.live = null; // the stream's LiveStream, when a coverage is set
    this.opener = null;
    this.queue = Promise.resolve();
  }

  /**
   * onnxruntime-web's webgl backend refuses the first run of any graph with a named dynamic
   * dimension ("batch"): it reads a dim_param as null where it accepts only 0 as "any size", then
   * caches the dims of that first run's inputs and checks later runs against them
   * (onnxruntime-web lib/onnxjs/session.ts, validateInputTensorDims). One throwaway run with a
   * stream's shapes at load time takes that refusal; the stream's state is not touched.
   */
  async settleWebGL() {
    const zero = new Float32Array(this.nFeatures);
    try {
      await this.model.run(zero, this.model.initialState());
    } catch (err) {
      if (!/check failed: expected shape/.test(err.message)) throw err;
      await this.model.run(zero, this.model.initialState()); // must pass now
    }
  }

  get nFeatures() { return this.contract.features.length; }

  get nTargets() { return this.contract.targets.length; }

  /** The coverage of the intervals (null: none) and the season of the seasonal-naive score. */
  get coverage() { return this.live?.coverage ?? null; }

  get season() { return this.opener?.season ?? null; }

  /** Run `fn` after every call queued before it; a failure does not block later calls. */
  enqueue(fn) {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /** Intervals at `coverage` (0 < c < 1; null: none) from the next point on; the live scores
   * start afresh. `season`: the seasonal-naive period (null: the model's own; 0: none). */
  openLive(coverage, season = null) {
    this.opener = coverage === null ? null
      : liveOpener(this.contract, { coverage, season }, this.info.sidecarName ?? 'sidecar');
    this.live = this.opener ? this.opener() : null;
  }

  /** openLive after the calls already queued. */
  setCoverage(coverage, season = null) {
    return this.enqueue(() => this.openLive(coverage, season));
  }

  /**
   * Feed one point (F raw numbers); resolves to {y: Float32Array of T, ms: run time, lower,
   * upper: the interval around y per target (NaN without a coverage; -inf..inf until calibrated)}.
   */
  step(values) {
    const point = this.checkPoint(values);
    return this.enqueue(async () => {
      const t0 = performance.now();
      const out = await this.model.run(point, this.state);
      const ms = performance.now() - t0;
      this.state = this.model.nextState(out);
      const y = this.model.prediction(out);
      this.last = y;
      if (this.live === null) return { y, ms, lower: null, upper: null };
      liveUpdate(this.live, Array.from(point), Array.from(y));
      const [lower, upper] = this.live.interval();
      return { y, ms, lower, upper };
    });
  }

  /** `n` predictions ahead from the live state, each fed back as the next point. */
  forecast(n) {
    if (!targetsAreFeatures(this.contract)) {
      throw new InputError(`forecast feeds each prediction back as the next point, but this ` +
        `model predicts [${this.contract.targets}] from [${this.contract.features}]`);
    }
    if (!Number.isInteger(n) || n < 0) throw new InputError(`forecast horizon ${n}: expected an integer >= 0`);
    return this.enqueue(async () => {
      if (this.last === null || n === 0) return [];
      let state = this.state;
      let x = this.last;
      const ahead = [];
      for (let i = 0; i < n; i++) {
        const out = await this.model.run(x, state); // the live state is never written
        state = this.model.nextState(out);
        x = this.model.prediction(out);
        ahead.push(x);
      }
      return ahead;
    });
  }

  /** Back to the initial state (and fresh live scores), after the calls already queued. */
  reset() {
    return this.enqueue(() => {
      this.state = this.model.initialState();
      this.last = null;
      this.live?.reset();
    });
  }

  /** {name: {dims (batch axis dropped), data: number[]}} of the live state, after queued calls. */
  snapshot() {
    return this.enqueue(() => this.model.rows(this.state));
  }

  /** The live accuracy and the latest interval per target (liveSummary), after queued calls;
   * null without a coverage. */
  scores() {
    return this.enqueue(() => (this.live === null ? null : liveSummary(this.live)));
  }

  release() { return this.enqueue(() => this.session.release()); }

  checkPoint(values) {
    const f = this.contract.features;
    if (!Array.isArray(values) && !ArrayBuffer.isView(values)) {
      throw new InputError(`a point is a list of ${f.length} numbers (${f}), got ${typeof values}`);
    }
    if (values.length !== f.length) {
      throw new InputError(`a point has ${f.length} value(s) (${f}), got ${values.length}`);
    }
    const bad = Array.prototype.findIndex.call(values, (v) => !Number.isFinite(Math.fround(v)));
    if (bad >= 0) {
      throw new InputError(`feature ${f[bad]} is ${values[bad]}, not a finite float32 number ` +
        '(the model reads float32)');
    }
    return Float32Array.from(values);
  }
}

// ---- CSV ------------------------------------------------------------------------------------

/**
 * All the points of a CSV text, checked before any is streamed (rnnstream-core.mjs's
 * PointParser, as the Node example reads its input): one point per line, the model's features
 * in order, or any order (and extra columns) under a header of feature names. Throws
 * InputError naming the line.
 */
export function parseCSV(text, features) {
  const parser = new PointParser(features);
  const points = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    let point;
    try {
      point = parser.parse(lines[i], i + 1);
    } catch (err) {
      throw new InputError(`CSV ${err.message}`);
    }
    if (point) points.push(point.values);
  }
  if (points.length === 0) throw new InputError('the CSV holds no points');
  return points;
}
