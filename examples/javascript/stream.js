#!/usr/bin/env node
/**
 * Stream an rnnstream forecaster from Node.js: one data point in, one prediction out, with the
 * recurrent state carried between calls. This is the reference embedders copy; it is tested
 * against the Python runtime (tests/embedding/test_javascript.py). This file is the command
 * line and the I/O; the sidecar check, the state loop, the CSV points and the live scores are
 * ../core/rnnstream-core.mjs, the module the web page (examples/web) uses too: copy both.
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
 * quantile tracking of a scaled score, written out in docs/api.md, "The interval"). Each line is then
 * "prediction,lower,upper" per target, in the model's target order, every number formatted as
 * Python's format(v, ".9g") formats it (inf, -inf, nan), the lines of `rnnstream stream
 * --coverage C`. --season M sets the seasonal-naive baseline's period in points for the live
 * accuracy (default: the season the model was trained with, if its sidecar stores one; 0: none).
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

const fs = require('node:fs');
const readline = require('node:readline');
const ort = require('onnxruntime-node');
// The sidecar check, the state loop, CSV points and the live scores, shared with the web page
// (an ES module: Node >= 20.19 requires it synchronously).
const core = requireCore('../core/rnnstream-core.mjs');

function requireCore(path) {
  try {
    return require(path);
  } catch (err) {
    if (err.code !== 'ERR_REQUIRE_ESM') throw err;
    process.stderr.write(`error: stream.js needs Node.js >= 20.19 to load the ES module ${path} ` +
      `(this is Node.js ${process.versions.node})\n`);
    process.exit(1);
  }
}

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
 * Read and check the sidecar written by `rnnstream export`, MODEL.onnx.json, and check that the
 * model file is one of the two graphs it describes: MODEL.onnx (its embedded contract has the
 * sidecar's fingerprint) or the step graph MODEL.step.onnx (the SHA-256 the sidecar names).
 */
async function loadContract(modelPath) {
  const sidecar = sidecarOf(modelPath);
  let text;
  try {
    text = fs.readFileSync(sidecar, 'utf8');
  } catch (err) {
    throw new Error(`${sidecar}: cannot read the rnnstream sidecar (${err.message}); ` +
      "'rnnstream export' writes it beside the model, copy it along with the .onnx file");
  }
  const contract = core.parseSidecar(text, sidecar);
  await core.identifyGraph(fs.readFileSync(modelPath), contract, modelPath, sidecar);
  return contract;
}

/** MODEL.onnx.json, for MODEL.onnx and for its step graph MODEL.step.onnx alike. */
function sidecarOf(modelPath) {
  const step = modelPath.endsWith('.step.onnx');
  return step ? `${modelPath.slice(0, -'.step.onnx'.length)}.onnx.json` : `${modelPath}.json`;
}

/** A stream's state as plain nested arrays ([layers][hidden] per state name), for JSON. */
function stateToJSON(model, state) {
  return Object.fromEntries(Object.entries(model.rows(state)).map(([name, row]) => [name, core.nested(row)]));
}

// ---- main ----------------------------------------------------------------------------------

async function main(argv) {
  const args = parseArgs(argv);
  const contract = await loadContract(args.model);
  const sidecar = sidecarOf(args.model);
  // One thread per call: a streaming step is tiny and threads cost more than they save. One
  // session may be run concurrently for many streams; each stream's state is its own.
  const session = await ort.InferenceSession.create(args.model, { intraOpNumThreads: 1 });
  core.checkSession(session, contract);
  const model = new core.StateLoop(ort, session, contract);

  const openLive = args.coverage === null ? null
    : core.liveOpener(contract, { coverage: args.coverage, season: args.season }, sidecar);
  const parser = new core.PointParser(contract.features, args.key);
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
      streams.set(point.key, model.initialState());
      if (openLive) lives.set(point.key, openLive());
    }
    const y = await model.step(streams.get(point.key), point.values);
    let text;
    if (openLive) {
      const live = lives.get(point.key);
      core.liveUpdate(live, Array.from(Float32Array.from(point.values)), Array.from(y));
      const [lower, upper] = live.interval();
      text = Array.from(y, (v, j) => [v, lower[j], upper[j]].map(core.formatG9).join(',')).join(',');
    } else {
      text = Array.from(y, core.formatFloat32).join(',');
    }
    process.stdout.write(args.key ? `${point.key},${text}\n` : `${text}\n`);
  }

  if (args.dumpState) {
    const snapshot = { fingerprint: contract.fingerprint };
    if (args.key) {
      snapshot.streams = {};
      for (const [key, state] of streams) snapshot.streams[key] = stateToJSON(model, state);
    } else {
      snapshot.states = stateToJSON(model, streams.get('') ?? model.initialState());
    }
    if (openLive) {
      Object.assign(snapshot, { coverage: args.coverage, season: openLive.season });
      if (args.key) {
        snapshot.live_streams = {};
        for (const [key, live] of lives) snapshot.live_streams[key] = core.liveToJSON(live);
      } else {
        snapshot.live = core.liveToJSON(lives.get('') ?? openLive());
      }
    }
    fs.writeFileSync(args.dumpState, `${JSON.stringify(snapshot)}\n`);
  }
  await session.release();
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => {
    if (err instanceof UsageError) {
      if (err.message) process.stderr.write(`error: ${err.message}\n`);
      process.stderr.write(`${USAGE}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`error: ${err.message}\n`);
      process.exitCode = 1;
    }
  });
}
