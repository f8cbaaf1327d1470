#!/usr/bin/env node
/**
 * Stream an rnnstream forecaster from Node.js: one data point in, one prediction out, with the
 * recurrent state carried between calls. This is the reference embedders copy; it is tested
 * against the Python runtime (tests/embedding/test_javascript.py).
 *
 *   node stream.js MODEL.onnx [POINTS.csv|-] [--key] [--dump-state FILE]
 *
 * Input (POINTS.csv, or stdin when absent or "-"): one point per line, F comma-separated raw
 * values in the order of the model's features. An optional first line of feature names (a
 * header) maps columns by name, so columns may be reordered and extra columns are ignored.
 * With --key the first column is a stream key: every key is its own stream with its own state,
 * and each output line is "key,prediction...".
 * Output: one line per point, T comma-separated predictions, each the shortest decimal that
 * reads back as the same float32.
 * --dump-state FILE writes the final state of every stream as JSON (shape [layers, hidden] per
 * state, and the model fingerprint so the snapshot is never loaded into another model).
 *
 * Everything about the model comes from its sidecar, MODEL.onnx.json: onnxruntime's JavaScript
 * API cannot read an ONNX file's custom metadata, so rnnstream writes the same contract beside
 * the model. The contract (see docs/embedding.md):
 *   input  x       float32 [batch, time, F]          raw units (normalisation is in the graph)
 *   output y       float32 [batch, time, T]          raw units
 *   state  <s>_in  float32 [batch, layers, hidden]   one per state: h (rnn, gru) or h, c (lstm)
 *          <s>_out is the <s>_in of the next call; the first call gets zeros.
 *
 * Install: ONNXRUNTIME_NODE_INSTALL=skip npm ci
 * (the package's install script otherwise fetches optional CUDA files from outside the npm
 * registry; the CPU build is in the npm package itself).
 */
'use strict';

const fs = require('node:fs');
const readline = require('node:readline');
const ort = require('onnxruntime-node');

const FORMAT = 'rnnstream';
const SCHEMA_VERSION = 2; // the newest contract version this program understands (2: input_mode 'delta', a 'last' state)

class UsageError extends Error {}

function parseArgs(argv) {
  const args = { model: null, points: null, key: false, dumpState: null };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--key') args.key = true;
    else if (a === '--dump-state') args.dumpState = argv[++i];
    else if (a === '-h' || a === '--help') throw new UsageError('');
    else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else positional.push(a);
  }
  if (positional.length < 1 || positional.length > 2) throw new UsageError('expected MODEL.onnx [POINTS.csv|-]');
  if (args.dumpState === undefined) throw new UsageError('--dump-state needs a file name');
  [args.model, args.points = '-'] = positional;
  return args;
}

// ---- the contract ---------------------------------------------------------------------------

/** Read and check the sidecar MODEL.onnx.json written by `rnnstream export`. */
function loadContract(modelPath) {
  const sidecar = `${modelPath}.json`;
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
  return contract;
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

// ---- input and output -----------------------------------------------------------------------

/** The shortest decimal that reads back as the same float32 (9 significant digits always do). */
function formatFloat32(v) {
  for (let digits = 1; digits < 9; digits++) {
    const s = Number(v.toPrecision(digits));
    if (Math.fround(s) === v) return String(s);
  }
  return String(Number(v.toPrecision(9)));
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

  const parser = new PointParser(contract.features, args.key);
  const streams = new Map(); // stream key -> state; never feed one stream's state to another
  const input = args.points === '-' ? process.stdin : fs.createReadStream(args.points);
  const lines = readline.createInterface({ input, crlfDelay: Infinity });
  let lineNo = 0;
  for await (const line of lines) {
    const point = parser.parse(line, ++lineNo);
    if (!point) continue;
    if (!streams.has(point.key)) streams.set(point.key, initialState(contract));
    const y = await step(session, contract, streams.get(point.key), point.values);
    const text = Array.from(y, formatFloat32).join(',');
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
    fs.writeFileSync(args.dumpState, `${JSON.stringify(snapshot)}\n`);
  }
  await session.release();
}

main(process.argv.slice(2)).catch((err) => {
  if (err instanceof UsageError) {
    if (err.message) process.stderr.write(`error: ${err.message}\n`);
    process.stderr.write('usage: node stream.js MODEL.onnx [POINTS.csv|-] [--key] [--dump-state FILE]\n');
    process.exitCode = 2;
  } else {
    process.stderr.write(`error: ${err.message}\n`);
    process.exitCode = 1;
  }
});
