/**
 * Stream an rnnstream forecaster in the browser with onnxruntime-web: the model, its contract
 * (the sidecar MODEL.onnx.json) and one stream's state. No DOM here: app.js draws the page,
 * and any other page can import this module the same way.
 *
 *   const streamer = await Streamer.load({ modelBytes, modelName, sidecarText, backend: 'wasm' });
 *   const { y, ms } = await streamer.step([15.2]);   // F raw values in, T raw predictions out
 *   const ahead = await streamer.forecast(20);        // when the targets are the features
 *
 * Everything about the model comes from the sidecar (onnxruntime-web cannot read an ONNX file's
 * custom metadata): the input and output names and every recurrent state as
 * {name, input, output, shape, batch_axis, initial}. Nothing assumes a state's layout: a state
 * is a tensor shaped like its declared `shape` with 1 on its `batch_axis`, filled with
 * `initial`, and `<s>.output` of one call is `<s>.input` of the next.
 *
 * Both graphs of an export load: the sequence graph MODEL.onnx (native RNN/LSTM/GRU ops, any
 * time length) and the step graph MODEL.step.onnx (plain ops, time = 1), which the sidecar
 * names in `step_model` with the SHA-256 of its bytes.
 */
import * as ort from 'onnxruntime-web';

export const FORMAT = 'rnnstream';
export const SCHEMA_VERSION = 4; // the newest contract version this module understands (2: input_mode; 3: custom cells; 4: target_mode 'seasonal', a 'cycle' state)
export const METADATA_KEY = 'rnnstream'; // ModelProto.metadata_props key holding the contract

/** A model file or sidecar was refused; the previous model and stream are untouched. */
export class ModelError extends Error {}

/** A point, a CSV text or a request was refused; the stream's state is untouched. */
export class InputError extends Error {}

// ---- the contract ---------------------------------------------------------------------------

/** Parse and check a sidecar's text; `source` names it in messages. */
export function parseSidecar(text, source = 'sidecar') {
  let c;
  try {
    c = JSON.parse(text);
  } catch (err) {
    throw new ModelError(`${source} is not JSON (${err.message}); choose the MODEL.onnx.json ` +
      "that 'rnnstream export' wrote beside the model");
  }
  if (c === null || typeof c !== 'object' || c.format !== FORMAT) {
    throw new ModelError(`${source}: format is ${JSON.stringify(c?.format)}, expected ` +
      `"${FORMAT}"; choose the MODEL.onnx.json written by 'rnnstream export'`);
  }
  if (!(Number.isInteger(c.schema_version) && c.schema_version >= 1 &&
        c.schema_version <= SCHEMA_VERSION)) {
    throw new ModelError(`${source}: contract schema version ${c.schema_version} is not ` +
      `supported (this page reads version ${SCHEMA_VERSION}); update the page`);
  }
  const names = (v) => Array.isArray(v) && v.length > 0 && v.every((n) => typeof n === 'string');
  const statesOk = Array.isArray(c.states) && c.states.every((s) =>
    typeof s?.name === 'string' && typeof s.input === 'string' && typeof s.output === 'string' &&
    Array.isArray(s.shape) && Number.isInteger(s.batch_axis) &&
    s.batch_axis >= 0 && s.batch_axis < s.shape.length &&
    s.shape.every((d, i) => i === s.batch_axis || (Number.isInteger(d) && d > 0)) &&
    Number.isFinite(s.initial ?? 0));
  if (!names(c.features) || !names(c.targets) || typeof c.input?.name !== 'string' ||
      typeof c.output?.name !== 'string' || !statesOk) {
    throw new ModelError(`${source}: lacks the contract's input, output, states, features or ` +
      'targets; it is not a complete rnnstream sidecar');
  }
  return c;
}

/** True when a prediction can be fed back as the next point (as Predictor.forecast needs). */
export function targetsAreFeatures(contract) {
  return (contract.horizon ?? 1) === 1 &&
    JSON.stringify(contract.targets) === JSON.stringify(contract.features);
}

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

/** The session must have exactly the inputs, outputs and state shapes the sidecar declares. */
export function checkSession(session, contract) {
  const want = {
    inputs: [contract.input.name, ...contract.states.map((s) => s.input)],
    outputs: [contract.output.name, ...contract.states.map((s) => s.output)],
  };
  const have = { inputs: session.inputNames, outputs: session.outputNames };
  for (const kind of ['inputs', 'outputs']) {
    if ([...want[kind]].sort().join() !== [...have[kind]].sort().join()) {
      throw new ModelError(`the model's ${kind} are [${have[kind]}] but its sidecar declares ` +
        `[${want[kind]}]: the sidecar belongs to another model`);
    }
  }
  // Declared dimensions other than batch must match the graph's, where the backend tells them
  // (the webgl backend throws on inputMetadata: the names above are all it can check).
  let metadata = [];
  try {
    metadata = session.inputMetadata ?? [];
  } catch {
    metadata = [];
  }
  const dims = new Map(metadata.map((m) => [m.name, m.shape]));
  for (const s of contract.states) {
    const shape = dims.get(s.input);
    if (!Array.isArray(shape) || shape.length === 0) continue;
    const fixed = (d) => (typeof d === 'number' ? d : null);
    const bad = shape.length !== s.shape.length || s.shape.some((d, axis) =>
      axis !== s.batch_axis && fixed(shape[axis]) !== null && fixed(shape[axis]) !== d);
    if (bad) {
      throw new ModelError(`state ${s.input} is [${shape}] in the model but ` +
        `[${s.shape}] in its sidecar: the sidecar belongs to another model`);
    }
  }
}

// ---- one stream -----------------------------------------------------------------------------

/** A new stream's state: each declared shape with 1 on its batch axis, filled with `initial`. */
export function initialState(contract) {
  const state = {};
  for (const s of contract.states) {
    const dims = s.shape.map((d, axis) => (axis === s.batch_axis ? 1 : d));
    const size = dims.reduce((a, b) => a * b, 1);
    state[s.name] = new ort.Tensor('float32', new Float32Array(size).fill(s.initial ?? 0), dims);
  }
  return state;
}

/**
 * One model (an onnxruntime-web session checked against its sidecar) and one stream's state.
 * Calls are queued: a simulation timer, a CSV being streamed and a button may all call at once,
 * and each call sees the state the previous one left. A refused call leaves the state as it was.
 */
export class Streamer {
  /**
   * Load and check a model: `modelBytes` (Uint8Array), its file name, the sidecar's text, and
   * the onnxruntime-web execution provider ('wasm', 'webgl' or 'webgpu'). Throws ModelError.
   */
  static async load({ modelBytes, modelName, sidecarText, sidecarName = 'sidecar', backend = 'wasm' }) {
    const contract = parseSidecar(sidecarText, sidecarName);
    const graph = await identifyGraph(modelBytes, contract, modelName);
    let session;
    try {
      // no fallback: a backend that cannot run the graph must say so, not hide behind another
      session = await ort.InferenceSession.create(modelBytes, { executionProviders: [backend] });
    } catch (err) {
      throw new ModelError(`onnxruntime-web (${backend}) cannot load ${modelName}: ${err.message ?? err}`);
    }
    const streamer = new Streamer(session, contract, { graph, backend, modelName });
    try {
      checkSession(session, contract);
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
    this.info = info; // {graph: 'sequence' | 'step', backend, modelName}
    this.state = initialState(contract);
    this.last = null; // the latest prediction (Float32Array), what forecast starts from
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
      await this.run(zero, initialState(this.contract));
    } catch (err) {
      if (!/check failed: expected shape/.test(err.message)) throw err;
      await this.run(zero, initialState(this.contract)); // must pass now
    }
  }

  get nFeatures() { return this.contract.features.length; }

  get nTargets() { return this.contract.targets.length; }

  /** Run `fn` after every call queued before it; a failure does not block later calls. */
  enqueue(fn) {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /** Feed one point (F raw numbers); resolves to {y: Float32Array of T, ms: run time}. */
  step(values) {
    const point = this.checkPoint(values);
    return this.enqueue(async () => {
      const t0 = performance.now();
      const out = await this.run(point, this.state);
      const ms = performance.now() - t0;
      this.adopt(out);
      return { y: out[this.contract.output.name].data, ms };
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
        const out = await this.run(x, state); // the live state is never written
        state = Object.fromEntries(this.contract.states.map((s) => [s.name, out[s.output]]));
        x = out[this.contract.output.name].data;
        ahead.push(x);
      }
      return ahead;
    });
  }

  /** Back to the initial state, after the calls already queued. */
  reset() {
    return this.enqueue(() => {
      this.state = initialState(this.contract);
      this.last = null;
    });
  }

  /** {name: {dims (batch axis dropped), data: number[]}} of the live state, after queued calls. */
  snapshot() {
    return this.enqueue(() => Object.fromEntries(this.contract.states.map((s) => {
      const t = this.state[s.name];
      return [s.name, { dims: t.dims.filter((_, axis) => axis !== s.batch_axis), data: Array.from(t.data) }];
    })));
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
    const bad = Array.prototype.findIndex.call(values, (v) => !Number.isFinite(v));
    if (bad >= 0) throw new InputError(`feature ${f[bad]} is ${values[bad]}, not a finite number`);
    return Float32Array.from(values);
  }

  async run(point, state) {
    const c = this.contract;
    const feeds = { [c.input.name]: new ort.Tensor('float32', point, [1, 1, point.length]) };
    for (const s of c.states) feeds[s.input] = state[s.name];
    return this.session.run(feeds);
  }

  adopt(out) {
    for (const s of this.contract.states) this.state[s.name] = out[s.output]; // <s>_out -> <s>_in
    this.last = out[this.contract.output.name].data;
  }
}

// ---- CSV ------------------------------------------------------------------------------------

/**
 * All the points of a CSV text, checked before any is streamed: one point per line, the
 * model's features in order, or any order (and extra columns) under a header of feature names.
 * Throws InputError naming the line.
 */
export function parseCSV(text, features) {
  const points = [];
  let columns = null; // feature i is read from column columns[i]; null: columns in order
  let first = true;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const fields = lines[i].split(',').map((v) => v.trim());
    if (fields.length === 1 && fields[0] === '') continue;
    const lineNo = i + 1;
    if (first && fields.some((v) => !isNumber(v))) {
      first = false;
      columns = features.map((name) => fields.indexOf(name));
      const missing = features.filter((_, k) => columns[k] < 0);
      if (missing.length) {
        throw new InputError(`CSV line ${lineNo}: the header [${fields}] lacks the model's ` +
          `features [${missing}] (the model reads [${features}])`);
      }
      continue;
    }
    first = false;
    if (!columns && fields.length !== features.length) {
      throw new InputError(`CSV line ${lineNo}: expected ${features.length} value(s) ` +
        `(${features}), got ${fields.length}; add a header row of feature names to pick columns`);
    }
    const values = columns ? columns.map((k) => fields[k]) : fields;
    const bad = values.findIndex((v) => !isNumber(v));
    if (bad >= 0) {
      throw new InputError(`CSV line ${lineNo}: feature ${features[bad]} is ` +
        `${JSON.stringify(values[bad] ?? '')}, not a finite number`);
    }
    points.push(values.map(Number));
  }
  if (points.length === 0) throw new InputError('the CSV holds no points');
  return points;
}

function isNumber(field) {
  return field !== undefined && field !== '' && Number.isFinite(Number(field));
}
