/**
 * What every JavaScript program that streams an rnnstream model does, written once and tested
 * once: the sidecar check, the state loop, CSV points, and the live scores and intervals (a
 * port of rnnstream.runtime.live, bit for bit). Node (examples/javascript/stream.js) and the
 * browser (examples/web/rnnstream-web.js) both use this module; it imports nothing, and the
 * onnxruntime namespace (onnxruntime-node or onnxruntime-web) is passed in where a tensor is
 * made, so the same file runs under either.
 *
 *   const contract = parseSidecar(text, 'model.onnx.json');   // throws ModelError
 *   const model = new StateLoop(ort, session, contract);      // after checkSession
 *   const state = model.initialState();
 *   const y = await model.step(state, [15.2]);                // F raw values in, T out
 *
 * Everything about the model comes from the sidecar (onnxruntime's JavaScript API cannot read
 * an ONNX file's custom metadata): the input and output names and every recurrent state as
 * {name, input, output, shape, batch_axis, initial}. Nothing assumes a state's layout: a new
 * stream's state is a tensor shaped like its declared `shape` with 1 on its `batch_axis`, filled
 * with `initial`, and `<s>.output` of one call is `<s>.input` of the next.
 */

export const FORMAT = 'rnnstream';
// The newest contract version this module understands, as rnnstream.runtime.contract's
// SCHEMA_VERSION (2: input_mode 'delta', a 'last' state; 3: cell 'custom' with its states
// declared, step_only; 4: target modes 'seasonal' and 'ets', their season and state; 5: `outputs`,
// every output by name and role, written when a model has outputs beyond y and its states).
export const SCHEMA_VERSION = 5;
export const METADATA_KEY = 'rnnstream'; // ModelProto.metadata_props key holding the contract

/** A model file or sidecar was refused; nothing was loaded from it. */
export class ModelError extends Error {}

/** A point, a CSV text or a request was refused; the stream's state is untouched. */
export class InputError extends Error {}

// ---- the sidecar ------------------------------------------------------------------------------
//
// The same checks, limits and wording as rnnstream.runtime.contract.ModelContract.from_dict,
// plus what a program without the Python spec must read from the sidecar itself (input, output,
// states), so a sidecar Python refuses is refused here too, with the same words.

// rnnstream.runtime.spec's modes and the contract's limits (a test holds them equal to Python's)
export const INPUT_MODES = ['level', 'delta'];
export const TARGET_MODES = ['level', 'delta', 'seasonal', 'ets'];
export const SEASON_MODES = ['seasonal', 'ets'];
const CUSTOM = 'custom';
// rnnstream.runtime.spec.OUTPUT_ROLES: what an output is for. 'prediction' is y, 'state' a
// state's <s>_out; the others are handed out by name beside the prediction (StateLoop.outputs).
export const OUTPUT_ROLES = ['prediction', 'state', 'quantile', 'aux', 'horizon'];
export const LIMITS = { features: 2 ** 16, hidden: 2 ** 16, layers: 64, states: 64, rank: 8,
  horizon: 2 ** 20 };

/** Parse and check a sidecar's text; `source` names it in messages. Throws ModelError. */
export function parseSidecar(text, source = 'sidecar') {
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new ModelError(`${source} is not JSON (${err.message}); use the MODEL.onnx.json ` +
      "that 'rnnstream export' wrote beside the model");
  }
  return checkSidecar(data, source);
}

/** Check a parsed sidecar (every field the runtime's contract requires); returns it. */
export function checkSidecar(data, source = 'sidecar') {
  const fail = (problem) => { throw new ModelError(`${source}: ${problem}`); };
  if (!isObject(data)) fail('the rnnstream sidecar must be a JSON object');
  if (data.format !== FORMAT) {
    fail(`format is ${show(data.format)}, expected "${FORMAT}"; use the MODEL.onnx.json ` +
      "written by 'rnnstream export'");
  }
  const version = data.schema_version;
  if (!isInt(version) || version < 1) fail(`schema_version ${show(version)} is not a positive integer`);
  if (version > SCHEMA_VERSION) {
    fail(`contract schema version ${version} is newer than this program understands ` +
      `(${SCHEMA_VERSION}); update examples/core/rnnstream-core.mjs`);
  }
  const cell = data.cell;
  const custom = cell === CUSTOM;
  // Any cell name is taken (a new cell needs no change here): what this program runs is the
  // graph, and the states it carries are checked one by one below.
  if (typeof cell !== 'string' || cell === '' || (custom && version < 3)) {
    fail(`cell ${show(cell)} is not a cell name` + (custom ? ` ('${CUSTOM}' needs schema_version 3)` : ''));
  }
  const low = custom ? 0 : 1; // a custom model may not say its layers or hidden size: 0
  intField(data, 'layers', low, LIMITS.layers, fail);
  intField(data, 'hidden', low, LIMITS.hidden, fail);
  const stepOnly = data.step_only ?? false;
  if (typeof stepOnly !== 'boolean' || (stepOnly && version < 3)) {
    fail(`step_only ${show(stepOnly)} is not true or false (and true needs schema_version 3)`);
  }
  const features = namesField(data, 'features', fail);
  const targets = namesField(data, 'targets', fail);
  intField(data, 'horizon', 1, LIMITS.horizon, fail);
  const targetMode = data.target_mode ?? 'level';
  if (!TARGET_MODES.includes(targetMode) || (SEASON_MODES.includes(targetMode) && version < 4)) {
    fail(`target_mode ${show(targetMode)} is not 'level' or 'delta' (or 'seasonal' or 'ets', ` +
      'which need schema_version 4)');
  }
  if (SEASON_MODES.includes(targetMode)) intField(data, 'season', targetMode === 'ets' ? 0 : 1, LIMITS.horizon, fail);
  const inputMode = data.input_mode ?? 'level';
  if (!INPUT_MODES.includes(inputMode) || (inputMode !== 'level' && version < 2)) {
    fail(`input_mode ${show(inputMode)} is not 'level' or 'delta' (and 'delta' needs schema_version 2)`);
  }
  for (const key of ['normalization', 'metrics', 'parity', 'versions', 'step_model']) {
    if (key in data && !isObject(data[key])) fail(`metadata '${key}' must be an object, got ${typeName(data[key])}`);
  }
  if (data.fingerprint !== undefined && typeof data.fingerprint !== 'string') {
    fail(`fingerprint ${show(data.fingerprint)} is not a string`);
  }
  checkStepModel(data.step_model ?? {}, fail);
  checkTensor(data.input, 'input', features.length, stepOnly, fail);
  checkTensor(data.output, 'output', targets.length, stepOnly, fail);
  checkStates(data.states, fail);
  checkOutputs(data, version, stepOnly, fail);
  if (data.trained_season !== undefined && data.trained_season !== null) {
    intField(data, 'trained_season', 1, LIMITS.horizon, fail);
  }
  if (data.calibration !== undefined && data.calibration !== null) { // metrics': when used, as Python
    calibrationTable(data.calibration, targets, `${source}: metadata 'calibration'`);
  }
  return data;
}

function intField(data, key, low, high, fail) {
  const v = data[key];
  if (!isInt(v) || v < low || v > high) fail(`metadata '${key}' is ${show(v)}; expected an integer ${low}..${high}`);
  return v;
}

function namesField(data, key, fail) {
  const v = data[key];
  if (!Array.isArray(v) || v.length < 1 || v.length > LIMITS.features ||
      !v.every((n) => typeof n === 'string' && n !== '') || new Set(v).size !== v.length) {
    fail(`metadata '${key}' must be a non-empty list of distinct names, got ${show(v)}`);
  }
  return v;
}

function checkStepModel(step, fail) {
  if (Object.keys(step).length === 0) return;
  const { file, sha256 } = step;
  const keys = Object.keys(step).sort().join();
  if (keys !== 'file,sha256' || typeof file !== 'string' || !file.endsWith('.onnx') ||
      /[/\\]/.test(file) || file.startsWith('.') || typeof sha256 !== 'string' ||
      !/^[0-9a-f]{64}$/.test(sha256)) {
    fail(`metadata 'step_model' is ${show(step)}; expected {"file": "<name>.step.onnx" (a file ` +
      'name in the model\'s folder), "sha256": "<64 lowercase hex digits>"}, or no step_model at all');
  }
}

/** input x [batch, time, F] / output y [batch, time, T], float32 (time 1 for a step_only graph). */
function checkTensor(t, key, size, stepOnly, fail) {
  const time = stepOnly ? 1 : 'time';
  if (!isObject(t) || typeof t.name !== 'string' || t.name === '' || !Array.isArray(t.shape) ||
      t.shape.length !== 3 || t.shape[0] !== 'batch' || t.shape[1] !== time || t.shape[2] !== size ||
      (t.dtype ?? 'float32') !== 'float32') {
    fail(`metadata '${key}' is ${show(t)}; expected {"name": ..., "shape": ["batch", ${show(time)}, ` +
      `${size}], "dtype": "float32"} (${size}: the number of ${key === 'input' ? 'features' : 'targets'})`);
  }
}

/** Every state: a plain name, <name>_in and <name>_out, float32, sizes beside its batch axis. */
function checkStates(states, fail) {
  if (!Array.isArray(states) || states.length < 1 || states.length > LIMITS.states) {
    fail(`metadata 'states' must list 1..${LIMITS.states} states, got ${show(states)}`);
  }
  for (const s of states) {
    const shape = isObject(s) ? s.shape : undefined;
    const axis = isObject(s) ? s.batch_axis ?? 0 : undefined;
    const ok = isObject(s) && isStateName(s.name) && s.input === `${s.name}_in` &&
      s.output === `${s.name}_out` && (s.dtype ?? 'float32') === 'float32' &&
      Array.isArray(shape) && shape.length >= 2 && shape.length <= LIMITS.rank &&
      isInt(axis) && axis >= 0 && axis < shape.length && shape[axis] === 'batch' &&
      shape.every((d, i) => i === axis || (isInt(d) && d >= 1 && d <= LIMITS.hidden)) &&
      Number.isFinite(s.initial ?? 0);
    if (!ok) {
      fail(`state ${show(s)} is not a state rnnstream can carry; expected {"name": "<letters, ` +
        'digits, _>", "input": "<name>_in", "output": "<name>_out", "shape": ["batch", <sizes ' +
        '1..65536>], "dtype": "float32", "batch_axis": 0, "initial": <a finite number>}');
    }
  }
  const names = states.map((s) => s.name);
  if (new Set(names).size !== names.length) fail(`state names ${show(names)} repeat`);
}

/** `outputs` (schema 5, optional): y and the states' outputs as declared above, in that order
 * and with their roles, then each other output as {name, role, shape: [batch, time, size]}. */
function checkOutputs(data, version, stepOnly, fail) {
  if (data.outputs === undefined) return;
  const outs = data.outputs;
  if (version < 5 || !Array.isArray(outs) || outs.length < 1 || outs.length > LIMITS.states) {
    fail(`metadata 'outputs' is ${show(outs)}; expected a list of 1..${LIMITS.states} outputs ` +
      '(and schema_version 5)');
  }
  const derived = [{ name: data.output.name, role: 'prediction' },
    ...data.states.map((s) => ({ name: s.output, role: 'state' }))];
  const time = stepOnly ? 1 : 'time';
  outs.forEach((o, i) => {
    const want = derived[i];
    const ok = isObject(o) && (want ? o.name === want.name && o.role === want.role
      : isStateName(o.name) && OUTPUT_ROLES.slice(2).includes(o.role) && Array.isArray(o.shape) &&
        o.shape.length === 3 && o.shape[0] === 'batch' && o.shape[1] === time &&
        isInt(o.shape[2]) && o.shape[2] >= 1 && o.shape[2] <= LIMITS.features &&
        (o.dtype ?? 'float32') === 'float32');
    if (!ok) {
      fail(`output ${show(o)} is not an output rnnstream can hand out; expected ` +
        (want ? `${show(want.name)} with role ${show(want.role)}` : '{"name": "<letters, digits, _>", ' +
          `"role": one of ${show(OUTPUT_ROLES.slice(2))}, "shape": ["batch", "time", <size>]}`));
    }
  });
  if (outs.length < derived.length) fail(`metadata 'outputs' lacks ${show(derived[outs.length].name)}`);
  const names = outs.map((o) => o.name);
  if (new Set(names).size !== names.length) fail(`output names ${show(names)} repeat`);
}

/** Every output of a checked sidecar by name and role: its `outputs`, or for files before
 * schema 5, derived from `output` and `states` (the prediction, then each state's output). */
export function outputsOf(contract) {
  return contract.outputs ?? [{ name: contract.output.name, role: 'prediction' },
    ...contract.states.map((s) => ({ name: s.output, role: 'state' }))];
}

function isStateName(name) {
  return typeof name === 'string' && /^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(name) &&
    name !== 'x' && name !== 'y';
}

/** True when a prediction can be fed back as the next point (as Predictor.forecast needs). */
export function targetsAreFeatures(contract) {
  return (contract.horizon ?? 1) === 1 &&
    JSON.stringify(contract.targets) === JSON.stringify(contract.features);
}

/** The session must have exactly the inputs, outputs and state shapes the sidecar declares. */
export function checkSession(session, contract) {
  const want = {
    inputs: [contract.input.name, ...contract.states.map((s) => s.input)],
    outputs: outputsOf(contract).map((o) => o.name),
  };
  const have = { inputs: session.inputNames, outputs: session.outputNames };
  for (const kind of ['inputs', 'outputs']) {
    if ([...want[kind]].sort().join() !== [...have[kind]].sort().join()) {
      throw new ModelError(`the model's ${kind} are [${have[kind]}] but its sidecar declares ` +
        `[${want[kind]}]: the sidecar belongs to another model`);
    }
  }
  // Declared dimensions other than batch must match the graph's, where the backend tells them
  // (onnxruntime-web's webgl backend throws on inputMetadata: the names are all it can check).
  let metadata;
  try {
    metadata = session.inputMetadata ?? [];
  } catch {
    metadata = [];
  }
  const dims = new Map(Array.from(metadata, (m) => [m.name, m.shape]));
  for (const s of contract.states) {
    const shape = dims.get(s.input);
    if (!Array.isArray(shape) || shape.length === 0) continue;
    const fixed = (d) => (typeof d === 'number' && d > 0 ? d : null);
    const bad = shape.length !== s.shape.length || s.shape.some((d, axis) =>
      axis !== (s.batch_axis ?? 0) && fixed(shape[axis]) !== null && fixed(shape[axis]) !== d);
    if (bad) {
      throw new ModelError(`state ${s.input} is [${shape}] in the model but ` +
        `[${s.shape}] in its sidecar: the sidecar belongs to another model`);
    }
  }
}

/** The season the model was trained with: the contract's typed `trained_season` where it has
 * one, else metrics.season (models exported before 0.4); null for none. */
export function trainedSeason(contract) {
  const typed = contract.trained_season;
  const stored = typed ?? (isObject(contract.metrics) ? contract.metrics.season : undefined);
  return Number.isSafeInteger(stored) && stored >= 1 ? stored : null;
}

/** The validation half-widths ({levels, half_widths}, checked against the targets): the
 * contract's typed `calibration` where present, else metrics.calibration (models exported
 * before 0.4); null for a model without one. Throws ModelError for a malformed one. */
export function storedCalibration(contract, source = 'sidecar') {
  if (contract.calibration !== undefined && contract.calibration !== null) {
    return calibrationTable(contract.calibration, contract.targets, `${source}: metadata 'calibration'`);
  }
  const old = isObject(contract.metrics) ? contract.metrics.calibration : undefined;
  return calibrationTable(old, contract.targets, `${source}: metrics 'calibration'`);
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

/** The SHA-256 of bytes as lowercase hex (Web Crypto: the browser's, and Node's global one). */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Which graph of the sidecar's model these bytes are: 'sequence' (its embedded contract has
 * the sidecar's fingerprint) or 'step' (the SHA-256 the sidecar names). Anything else is
 * refused: a model with another model's sidecar computes another function, without any error.
 * `modelName` and `sidecarName` name the two files in messages.
 */
export async function identifyGraph(bytes, contract, modelName, sidecarName = 'its sidecar') {
  let meta;
  try {
    meta = onnxMetadata(bytes);
  } catch (err) {
    throw new ModelError(`${modelName} is not an ONNX model (${err.message}); use the ` +
      "model.onnx or model.step.onnx written by 'rnnstream export'");
  }
  if (METADATA_KEY in meta) {
    let embedded;
    try {
      embedded = JSON.parse(meta[METADATA_KEY]);
    } catch (err) {
      throw new ModelError(`${modelName}: its embedded rnnstream contract is not JSON (${err.message})`);
    }
    if (embedded?.fingerprint !== contract.fingerprint) {
      throw new ModelError(`the sidecar belongs to another model: ${modelName} has fingerprint ` +
        `${embedded?.fingerprint}, ${sidecarName} ${contract.fingerprint}; use the sidecar ` +
        'written beside the model');
    }
    return 'sequence';
  }
  const want = contract.step_model?.sha256;
  const have = await sha256Hex(bytes);
  if (want && have === want) return 'step';
  throw new ModelError(`${modelName} is neither the model ${sidecarName} describes (it has no ` +
    `embedded rnnstream contract) nor the step graph it names: SHA-256 ${have.slice(0, 16)}... ` +
    `is not ${want ? `${want.slice(0, 16)}... (${contract.step_model.file})` : 'named (none)'}; ` +
    'use the files of one export, or re-export the model');
}

// ---- the state loop ---------------------------------------------------------------------------

/**
 * One model (a session checked against its sidecar) and the state loop around it; the state of
 * each stream is the caller's ({name: tensor}), so one StateLoop serves any number of streams.
 * `ort` is the onnxruntime namespace (onnxruntime-node or onnxruntime-web): only its Tensor is used.
 */
export class StateLoop {
  constructor(ort, session, contract) {
    this.ort = ort;
    this.session = session;
    this.contract = contract;
  }

  /** A new stream's state: each declared shape with 1 on its batch axis, filled with `initial`. */
  initialState() {
    const state = {};
    for (const s of this.contract.states) {
      const axis = s.batch_axis ?? 0;
      const dims = s.shape.map((d, i) => (i === axis ? 1 : d)); // e.g. [1, layers, hidden]
      const size = dims.reduce((a, b) => a * b, 1);
      state[s.name] = new this.ort.Tensor('float32', new Float32Array(size).fill(s.initial ?? 0), dims);
    }
    return state;
  }

  /** One run: the point (F float32 values, one time step, batch 1) and a state; the raw outputs. */
  run(point, state) {
    const c = this.contract;
    const x = Float32Array.from(point);
    const feeds = { [c.input.name]: new this.ort.Tensor('float32', x, [1, 1, x.length]) };
    for (const s of c.states) feeds[s.input] = state[s.name];
    return this.session.run(feeds);
  }

  /** The state the outputs of a run leave: <s>_out becomes the next call's <s>_in. */
  nextState(out) {
    return Object.fromEntries(this.contract.states.map((s) => [s.name, out[s.output]]));
  }

  /** The T predictions of a run's outputs (a Float32Array). */
  prediction(out) {
    return out[this.contract.output.name].data;
  }

  /** A run's outputs other than the states, by name (Float32Arrays): the prediction and any
   * other output the sidecar declares (role 'quantile', 'aux', ...). */
  outputs(out) {
    return Object.fromEntries(outputsOf(this.contract).filter((o) => o.role !== 'state')
      .map((o) => [o.name, out[o.name].data]));
  }

  /** One step of one stream: feed the point, replace `state`'s tensors with the new state. */
  async step(state, point) {
    const out = await this.run(point, state);
    Object.assign(state, this.nextState(out));
    return this.prediction(out);
  }

  /** A stream's state as {name: {dims, data}}, the batch axis dropped (one stream's part). */
  rows(state) {
    return Object.fromEntries(this.contract.states.map((s) => {
      const t = state[s.name];
      const axis = s.batch_axis ?? 0;
      return [s.name, { dims: t.dims.filter((_, i) => i !== axis), data: Array.from(t.data) }];
    }));
  }
}

/** {dims, data} as nested arrays ([layers][hidden] for h), for JSON. */
export function nested({ dims, data }) {
  if (dims.length <= 1) return Array.from(data);
  const stride = data.length / dims[0];
  return Array.from({ length: dims[0] }, (_, i) =>
    nested({ dims: dims.slice(1), data: data.slice(i * stride, (i + 1) * stride) }));
}

// ---- CSV points -------------------------------------------------------------------------------

/**
 * Turns CSV lines into points of F numbers: the model's features in order, or any order (and
 * extra columns) under a first line of feature names; with `keyed` the first column is a
 * stream key. Values must be finite numbers within float32's range (what the model reads).
 */
export class PointParser {
  constructor(features, keyed = false) {
    this.features = features;
    this.keyed = keyed;
    this.columns = null; // feature i is read from column columns[i]; null: columns in order
    this.seenFirst = false;
  }

  /** {key, values}, or null for a blank line or the header. Throws InputError on a bad line. */
  parse(line, lineNo) {
    // a byte-order mark before the first line (spreadsheets write one), as Python's utf-8-sig
    const text = this.seenFirst || !line.startsWith('\ufeff') ? line : line.slice(1);
    const fields = text.split(',').map((f) => f.trim());
    if (fields.length === 1 && fields[0] === '') return null;
    const key = this.keyed ? fields.shift() : '';
    const first = !this.seenFirst;
    this.seenFirst = true;
    const f = this.features;
    if (first && fields.some((v) => !isNumber(v))) {
      this.columns = f.map((name) => fields.indexOf(name));
      const missing = f.filter((_, i) => this.columns[i] < 0);
      if (missing.length) {
        throw new InputError(`line ${lineNo}: the header [${fields}] lacks the model's features ` +
          `[${missing}] (the model reads [${f}])`);
      }
      return null;
    }
    if (!this.columns && fields.length !== f.length) {
      throw new InputError(`line ${lineNo}: expected ${f.length} values (${f}), got ` +
        `${fields.length}; a header row of feature names picks columns`);
    }
    const values = this.columns ? this.columns.map((c) => fields[c]) : fields;
    const bad = values.findIndex((v) => !isNumber(v));
    if (bad >= 0) {
      throw new InputError(`line ${lineNo}: feature ${f[bad]} is ${JSON.stringify(values[bad] ?? '')}, ` +
        'not a finite number');
    }
    const huge = values.findIndex((v) => !Number.isFinite(Math.fround(Number(v))));
    if (huge >= 0) { // the model reads float32: this would be fed as infinity
      throw new InputError(`line ${lineNo}: feature ${f[huge]} is ${values[huge]}, beyond the ` +
        'float32 range (+-3.40282e+38) of the model input');
    }
    return { key, values: values.map(Number) };
  }
}

function isNumber(field) {
  return field !== undefined && field !== '' && Number.isFinite(Number(field));
}

// ---- live accuracy and intervals --------------------------------------------------------------
//
// A port of rnnstream.runtime.live.LiveStream, the same float operations in the same order, so
// the numbers (and the state) are bit for bit those of Python's Predictor(coverage=C). Per stream
// and target, the interval is prediction +- q; each time a prediction is scored (when the value
// it was for arrives, `horizon` points later), q moves by quantile tracking of a scaled score:
// a miss widens it by exp(lr * coverage), a hit narrows it by exp(-lr * alpha), and it follows
// the scale of the recent errors, floored at 1% of the recent MAE. The method, its sources and
// its defaults are written out once, in rnnstream.runtime._live_settings (docs/api.md,
// "The interval"); this is the same arithmetic in the same order. The two factors come from
// expSeries, the same 32-term series Python uses (Math.exp and libm differ in the last bit now
// and then). q starts at the validation half-width the sidecar stores (calibration) and the
// scale at its median |residual| (the 0.5 level), or, for a model without one, q is infinite
// until `warmup` residuals were scored and then starts at the largest of them. A target can only
// be scored when it is also a feature (same name); otherwise its interval stays where it started.
// The model is scored beside persistence and seasonal naive (the live accuracy).

export const LIVE_DEFAULTS = { lr: 0.2, halfLife: 100.0 }; // rnnstream.runtime.live.DEFAULTS
export const LIVE_FLOOR = 0.01; // rnnstream.runtime.live.FLOOR
export const LIVE_RATIO_MAX = 1e6; // rnnstream.runtime.live.RATIO_MAX
export const LIVE_SMALLEST_SCALE = 1e-200; // rnnstream.runtime.live.SMALLEST_SCALE
export const FORECASTERS = ['model', 'persistence', 'seasonal']; // rnnstream.runtime.live.FORECASTERS

/** exp(x) for |x| <= 1 by its series in basic arithmetic: the bits of rnnstream.runtime.live.exp_series. */
export function expSeries(x) {
  let total = 1.0;
  let term = 1.0;
  for (let k = 1; k < 33; k++) {
    term = term * x / k;
    total = total + term;
  }
  return total;
}

const MODEL = 0; // forecasters, in FORECASTERS order
const N_FORECASTERS = 3;
const N_ACC = 6; // per forecaster and target: count, abs_sum, sq_sum, ew_weight, ew_abs, ew_sq

export class LiveStream {
  constructor(features, targets, { horizon = 1, season = null, coverage, initial = null,
    scales = null, lr = LIVE_DEFAULTS.lr, halfLife = LIVE_DEFAULTS.halfLife }) {
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
    // the scale's prior s0 (weight p0 = 1) where given, else 0 and 0 (initial_scales)
    const sc = scales ?? targets.map(() => Infinity);
    this.given = sc.map((v) => Number.isFinite(v));
    this.s0 = sc.map((v, j) => (this.given[j] && v >= LIVE_SMALLEST_SCALE ? v : 0.0));
    this.p0 = this.given.map((g) => (g ? 1.0 : 0.0));
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
    const scale = (a, w, j) => { // s = (ewa + s0) / (eww + p0), a divisor below 1 taken as 1
      const d = w + this.p0[j];
      return (a + this.s0[j]) / (d > 1.0 ? d : 1.0);
    };
    const [, , , eww0, ewa0] = this.acc[MODEL];
    const olds = actual.map((_, j) => scale(ewa0[j], eww0[j], j)); // the scale before this point
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
            let moved = q * (hit ? this.down : this.up);
            const old = olds[j];
            if (old >= LIVE_SMALLEST_SCALE && (this.given[j] || cnt[j] > this.warmup)) {
              const r = scale(ewa[j], eww[j], j) / old; // follows the scale
              moved = moved * (r < LIVE_RATIO_MAX ? r : LIVE_RATIO_MAX); // as numpy's minimum
            }
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

  /** Accuracy so far per forecaster (FORECASTERS) and target, as LiveStream.scores() has it
   * without the stream axis: {mae, mse, recent_mae, recent_mse, count}, each [3][T]; NaN where
   * nothing was scored. */
  scores() {
    const div = (a, b) => a.map((v, j) => v / b[j]); // 0/0: NaN, as numpy
    const by = (k, n) => this.acc.map((acc) => div(acc[k], acc[n]));
    return { mae: by(1, 0), mse: by(2, 0), recent_mae: by(4, 3), recent_mse: by(5, 3),
      count: this.acc.map((acc) => [...acc[0]]) };
  }

  /** {realised, scored} per target: the share of scored intervals that held the value. */
  coverageSoFar() {
    return { realised: this.cover[1].map((v, j) => v / this.cover[0][j]), scored: [...this.cover[0]] };
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
export function warmup(coverage) {
  let m = 1;
  while (Math.ceil((m + 1) * coverage) > m) m++;
  return m;
}

/**
 * One step of a stream's live scores (Predictor._live_update): a prediction that is NaN or
 * infinite cannot be scored or bounded, so the live scores start afresh.
 */
export function liveUpdate(live, x, y) {
  if (!y.every((v) => v - v === 0.0)) {
    live.reset();
    return;
  }
  live.update(x, y);
}

/**
 * A function that opens a stream's LiveStream for this model at `coverage`, with `season`
 * (null: the season the model was trained with; 0: none), as rnnstream.runtime.live.open_live;
 * its `season` property is the season it uses. Throws ModelError for a sidecar whose horizon
 * or calibration cannot be used.
 */
export function liveOpener(contract, { coverage, season = null }, source = 'sidecar') {
  if (!(Number.isInteger(contract.horizon) && contract.horizon >= 1)) {
    throw new ModelError(`${source}: horizon is ${JSON.stringify(contract.horizon)}; expected an ` +
      'integer >= 1 (live scores need it: predictions are scored horizon points later)');
  }
  if (!(coverage > 0 && coverage < 1)) {
    throw new InputError(`coverage is ${coverage}; expected a number strictly between 0 and 1, ` +
      'the share of values the intervals should hold (e.g. 0.9)');
  }
  if (!(season === null || (Number.isSafeInteger(season) && season >= 0))) {
    throw new InputError(`season is ${JSON.stringify(season)}; expected a whole number of points ` +
      '(0: none), or null for the season the model was trained with');
  }
  const initial = initialHalfWidths(contract, coverage, source);
  const scales = initialHalfWidths(contract, 0.5, source); // the median validation |residual|
  const used = season === null ? trainedSeason(contract) : (season === 0 ? null : season);
  const open = () => new LiveStream(contract.features, contract.targets, {
    horizon: contract.horizon, season: used, coverage, initial, scales,
  });
  open.season = used;
  return open;
}

/** The validation half-width per target at `coverage`, one step ahead
 * (rnnstream.runtime.live.initial_half_widths); null for a model without a calibration. */
export function initialHalfWidths(contract, coverage, source = 'sidecar') {
  const table = storedCalibration(contract, source);
  if (table === null) return null;
  return contract.targets.map((t) => halfWidthAt(table.levels, table.half_widths[t][0], coverage));
}

function calibrationTable(cal, targets, where) {
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
    throw new ModelError(`${where} is malformed: ${problem}. It is written ` +
      'by training; re-export the model with this release');
  }
  return { levels, half_widths: steps };
}

/** A half-width at `coverage`, linear between the stored levels; inf outside them or next to a
 * null (rnnstream.runtime.live._at, the same arithmetic). */
export function halfWidthAt(levels, row, coverage) {
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

/**
 * The live accuracy of one stream per target, the figures of `rnnstream stream`'s live-scores
 * table: points scored, the MAE of the model, persistence and seasonal naive, model/persistence,
 * the recent (exponentially weighted) model MAE, the realised coverage of the scored intervals
 * and the width of the latest interval (NaN where there is none yet).
 */
export function liveSummary(live) {
  const s = live.scores();
  const { realised, scored } = live.coverageSoFar();
  const [lower, upper] = live.interval();
  return live.targets.map((target, j) => ({
    target,
    points: s.count[MODEL][j],
    model: s.mae[MODEL][j],
    persistence: s.mae[1][j],
    seasonal: s.mae[2][j],
    ratio: s.mae[MODEL][j] / s.mae[1][j],
    recent: s.recent_mae[MODEL][j],
    coverage: realised[j],
    scored: scored[j],
    width: upper[j] - lower[j],
  }));
}

/** A stream's live state for JSON: NaN, +-inf and -0 as "nan", "inf", "-inf", "-0.0". */
export function liveToJSON(live) {
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

// ---- numbers as text --------------------------------------------------------------------------

/** The shortest decimal that reads back as the same float32 (9 significant digits always do). */
export function formatFloat32(v) {
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
export function formatG9(v) {
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

// ---- small helpers ----------------------------------------------------------------------------

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isInt(v) {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

function typeName(v) {
  if (v === null) return 'null';
  return Array.isArray(v) ? 'list' : typeof v;
}

/** A value in a message: JSON, cut short. */
function show(v) {
  const text = v === undefined ? 'missing' : JSON.stringify(v);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}
