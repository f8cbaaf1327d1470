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
  InputError, ModelError, PointParser, StateLoop, checkSession, identifyGraph, liveOpener,
  liveSummary, liveUpdate, parseSidecar, targetsAreFeatures,
} from '../core/rnnstream-core.mjs';

export {
  FORMAT, InputError, ModelError, SCHEMA_VERSION, checkSession, identifyGraph, liveSummary,
  onnxMetadata, parseSidecar, targetsAreFeatures,
} from '../core/rnnstream-core.mjs';

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
    const graph = await identifyGraph(modelBytes, contract, modelName, sidecarName);
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
