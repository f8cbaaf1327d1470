"""Ready-to-paste streaming loops for one exported model (``rnnstream inspect MODEL --code LANG``).

:func:`generate` writes a short program that streams the model one point per stdin line, with
the model's real names and sizes spelled out: feature and target names, the state tensors
(``h_in``/``h_out``, and ``c_in``/``c_out`` for LSTM) and their ``[batch, layers, hidden]``
shapes. Each program reads CSV lines of ``F`` raw values and prints the ``T`` raw predictions
per line, comma-separated (``web``: an HTML page with onnxruntime-web, lines from a textarea,
predictions in the page). None needs rnnstream's Python package:

* ``python``: onnxruntime and numpy only, the whole contract in ~30 lines (a teaching loop).
* ``js`` (Node.js): onnxruntime-node and rnnstream's JavaScript core,
  ``examples/core/rnnstream-core.mjs`` (:data:`JS_CORE_SOURCE`), loaded from beside the
  generated file: the one tested implementation of the sidecar check, the state loop and the
  CSV points, which the Node example and the web page use too. The generated code holds only
  what is this model's (its files, its fingerprint, its names in comments) and says where to
  copy the core from; a missing core is reported with that, not a stack trace.
* ``web``: onnxruntime-web, self-contained in one page.

Names from the model reach the generated code only as string literals (``json.dumps``/``repr``;
in the page also with ``<``, ``>``, ``&`` escaped, so that no name can close its ``<script>``) or
in one-line comments, never as identifiers: a feature called ``"a\\nb"`` or a state called
``lambda`` or ``in`` (a custom model's author names its states) cannot break the program.
Supported languages: :data:`LANGS`.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable

from rnnstream.runtime.contract import ModelContract, sidecar_path
from rnnstream.runtime.spec import PREDICTION_ROLE, STATE_ROLE, mode_of_state

__all__ = ["LANGS", "generate"]


def generate(contract: ModelContract, lang: str, model_path: str) -> str:
    """The streaming loop for ``contract``'s model at ``model_path``, in ``lang``."""
    try:
        writer = LANGS[lang]
    except KeyError:
        raise ValueError(
            f"no code generator for language {lang!r}; choose one of {sorted(LANGS)}"
        ) from None
    return writer(contract, model_path)


def _names(names: list[str]) -> str:
    """Names for a comment, quoted and escaped (a name may hold anything, newlines included)."""
    return ", ".join(json.dumps(n) for n in names)


def _summary(c: ModelContract) -> str:
    if c.is_custom:  # declared states; layers/hidden may be unknown (0)
        states = ", ".join(f"{s.name} {list(s.row_shape)}" for s in c.states)
        return (f"custom model (states {states}); "
                f"features [{_names(c.features)}] -> targets [{_names(c.targets)}], "
                f"horizon {c.horizon}")
    return (f"{c.cell} forecaster, {c.layers} layer(s) x {c.hidden} hidden; "
            f"features [{_names(c.features)}] -> targets [{_names(c.targets)}], "
            f"horizon {c.horizon}")


# -- Python -------------------------------------------------------------------------------------

def _one_stream(s) -> tuple[int, ...]:
    """A state's shape for one stream: its declared shape with the batch axis set to 1."""
    return tuple(1 if i == s.batch_axis else int(d) for i, d in enumerate(s.shape))


def _shape_note(c: ModelContract, s) -> str:
    """A state's one-stream shape in words: a model-level state says what it holds (its mode's
    plain-data description in spec), a cell's state its layers and hidden size."""
    if c.is_custom:
        return "[batch=1, " + ", ".join(str(d) for d in s.row_shape) + "]"
    mode = mode_of_state(s.name)
    if mode is not None:  # last, cycle, ets: carried by the input or target mode
        return f"[batch=1, {mode.describe(s.row_shape)}]"
    return f"[batch=1, layers={c.layers}, hidden={c.hidden}]"


def _python(c: ModelContract, model_path: str) -> str:
    f, t = c.n_features, c.n_targets
    # every name a string literal, never a variable: a state may be called lambda or class
    # (spec.is_state_name allows any identifier but x and y)
    zeros = "\n".join(
        f"    {json.dumps(s.name)}: {_np_fill(_one_stream(s), s.initial)},"
        f"  # {s.input}: {_shape_note(c, s)}" for s in c.states)
    feeds = ", ".join([f'{json.dumps(c.input["name"])}: x',
                       *(f"{json.dumps(s.input)}: state[{json.dumps(s.name)}]"
                         for s in c.states)])
    fetch = ", ".join(json.dumps(o["name"]) for o in c.outputs)  # every output, by name
    carry = "\n    ".join(f"state[{json.dumps(s.name)}] = out[{json.dumps(s.output)}]"
                          for s in c.states)
    other = "".join(f"\n    # out[{json.dumps(o['name'])}]: role {o['role']!r}, {list(o['shape'])}"
                    for o in c.outputs if o["role"] not in (PREDICTION_ROLE, STATE_ROLE))
    check = ""
    if c.fingerprint:
        check = (
            f'meta = json.loads(session.get_modelmeta().custom_metadata_map["rnnstream"])\n'
            f'if meta["fingerprint"] != {c.fingerprint!r}:\n'
            f'    sys.exit("this loop was generated for another model; regenerate it with "\n'
            f'             "rnnstream inspect MODEL --code python")\n'
        )
    return f'''\
"""Stream one series through {json.dumps(model_path)} with onnxruntime + numpy.

{_summary(c)}.
Input: one point per stdin line, {f} comma-separated raw values ({_names(c.features)}).
Output: one line per point, {t} raw prediction(s) ({_names(c.targets)}).
Generated by `rnnstream inspect MODEL --code python`; the contract is in docs/embedding.md.
"""
import json
import sys

import numpy as np
import onnxruntime as ort

MODEL = {model_path!r}
FEATURES = {json.dumps(c.features)}  # x: float32 [batch, time, {f}], raw units
TARGETS = {json.dumps(c.targets)}  # y: float32 [batch, time, {t}], raw units
OUTPUTS = [{fetch}]  # every output of the graph, read by name below
session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
{check}
# The recurrent state of this one stream, by name, at its initial value at the start.
# For many streams keep one set per stream (never share it); stacking streams along axis 0
# runs them in one call.
state = {{
{zeros}
}}

for line in sys.stdin:
    if not line.strip():
        continue
    point = [float(v) for v in line.split(",")]  # raw units: normalisation is in the graph
    if len(point) != len(FEATURES):
        sys.exit(f"expected {{len(FEATURES)}} values ({{', '.join(FEATURES)}}), got {{len(point)}}")
    # x: [batch=1, time=1, F={f}]. To prime with history, pass [1, n, {f}] in one call instead.
    x = np.asarray(point, dtype=np.float32).reshape(1, 1, {f})
    feeds = {{{feeds}}}
    out = dict(zip(OUTPUTS, session.run(OUTPUTS, feeds)))
    # the *_out states just fetched are the next call's *_in
    {carry}
    y = out[{json.dumps(c.output["name"])}]  # the prediction: [batch=1, time=1, T={t}]{other}
    print(",".join(repr(float(v)) for v in y[0, -1]))
'''


def _np_fill(shape: tuple[int, ...], value: float) -> str:
    if value == 0.0:
        return f"np.zeros({shape}, dtype=np.float32)"
    return f"np.full({shape}, {value!r}, dtype=np.float32)"


# -- JavaScript (onnxruntime-node) --------------------------------------------------------------

# rnnstream's JavaScript core, which the generated Node loop loads from beside itself: the one
# checked implementation of the sidecar check and the state loop (the Node example and the web
# page use it too), so that the generated code holds only what is this model's own
JS_CORE = "rnnstream-core.mjs"
JS_CORE_SOURCE = "examples/core/rnnstream-core.mjs"


def _js_sidecar(model_path: str) -> str:
    """MODEL.onnx.json, for MODEL.onnx and for its step graph MODEL.step.onnx alike (as the
    Node example reads it)."""
    step = ".step.onnx"
    base = model_path[:-len(step)] + ".onnx" if model_path.endswith(step) else model_path
    return sidecar_path(base)


def _js(c: ModelContract, model_path: str) -> str:
    f, t = c.n_features, c.n_targets
    sidecar = _js_sidecar(model_path)
    # names only in string literals and comments (json.dumps: one line, escaped), never as
    # identifiers: a state may be named like any JavaScript keyword
    states = "\n".join(
        f"//   {json.dumps(s.input)} -> {json.dumps(s.output)}  {list(_one_stream(s))}: "
        f"{_shape_note(c, s)}" for s in c.states)
    other = "".join(f"\n    // named[{json.dumps(o['name'])}]: role {json.dumps(o['role'])}, "
                    f"{list(o['shape'])}"
                    for o in c.outputs if o["role"] not in (PREDICTION_ROLE, STATE_ROLE))
    check = ""
    if c.fingerprint:
        check = (
            "\n  if (contract.fingerprint !== FINGERPRINT) {\n"
            "    throw new Error(`this loop was generated for another model (${SIDECAR} has "
            "fingerprint ` +\n"
            "      `${contract.fingerprint}); regenerate it with rnnstream inspect MODEL "
            "--code js`);\n"
            "  }")
    return f'''\
// Stream one series through {json.dumps(model_path)} with onnxruntime-node.
//
// {_summary(c)}.
// Input: one point per stdin line, {f} comma-separated raw values ({_names(c.features)});
// a first line of feature names picks the columns by name.
// Output: one line per point, {t} raw prediction(s) ({_names(c.targets)}), each the shortest
// decimal that reads back as the same float32.
// Generated by `rnnstream inspect MODEL --code js`; run it as `node loop.js < points.csv`.
//
// It needs, beside this file:
//   {JS_CORE}  rnnstream's JavaScript core (the sidecar check and the state loop, the
//       module the Node example and the web page use): copy {JS_CORE_SOURCE}
//       from the source of the rnnstream release that generated this file.
//   onnxruntime-node  ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node
//   Node.js >= 20.19, which loads that ES module with require().
// The contract comes from the sidecar {json.dumps(sidecar)} that rnnstream export wrote
// beside the model (onnxruntime-node cannot read ONNX custom metadata); docs/embedding.md
// describes it.
'use strict';
const fs = require('node:fs');
const readline = require('node:readline');
const ort = require('onnxruntime-node');

const core = requireCore('./{JS_CORE}');
const MODEL = {json.dumps(model_path)};
const SIDECAR = {json.dumps(sidecar)};
const FINGERPRINT = {json.dumps(c.fingerprint)}; // the model this loop was generated for
const FEATURES = {json.dumps(c.features)}; // x: float32 [batch, time, {f}], raw units
const TARGETS = {json.dumps(c.targets)}; // y: float32 [batch, time, {t}], raw units
// The recurrent state of one stream (input -> output, shape), at its initial value at first:
{states}

function requireCore(path) {{
  try {{
    return require(path);
  }} catch (err) {{
    if (err.code === 'MODULE_NOT_FOUND' && err.message.includes(path)) {{
      console.error(`error: ${{path}} is not beside ${{__filename}}: copy ` +
        '{JS_CORE_SOURCE} from the source of the rnnstream release that generated this loop');
    }} else if (err.code === 'ERR_REQUIRE_ESM') {{
      console.error(`error: loading the ES module ${{path}} with require() needs Node.js ` +
        `>= 20.19 (this is ${{process.versions.node}})`);
    }} else {{
      throw err;
    }}
    return process.exit(1);
  }}
}}

async function main() {{
  // the sidecar, checked as the Python runtime checks it, and the model file it describes
  const contract = core.parseSidecar(fs.readFileSync(SIDECAR, 'utf8'), SIDECAR);{check}
  await core.identifyGraph(fs.readFileSync(MODEL), contract, MODEL, SIDECAR);
  const session = await ort.InferenceSession.create(MODEL, {{ intraOpNumThreads: 1 }});
  core.checkSession(session, contract); // the graph has the inputs and outputs declared
  const model = new core.StateLoop(ort, session, contract);
  // This stream's state ({{name: tensor}}, batch = 1). For many streams keep one per stream
  // (model.initialState() each); never share it.
  const state = model.initialState();
  const parser = new core.PointParser(FEATURES); // finite numbers within float32's range
  const lines = readline.createInterface({{ input: process.stdin, crlfDelay: Infinity }});
  let lineNo = 0;
  for await (const line of lines) {{
    const point = parser.parse(line, ++lineNo); // null for a blank line or the header
    if (!point) continue;
    // x: [batch=1, time=1, F={f}], raw units: normalisation is in the graph
    const out = await model.run(point.values, state);
    Object.assign(state, model.nextState(out)); // carry the state: each *_out is the next *_in
    const named = model.outputs(out); // every output but the states, by name
    // the prediction: [batch=1, time=1, T={t}], one value per name in TARGETS{other}
    const y = named[{json.dumps(c.output["name"])}];
    console.log(Array.from(y, core.formatFloat32).join(','));
  }}
  await session.release();
}}

main().catch((err) => {{ console.error(`error: ${{err.message}}`); process.exitCode = 1; }});
'''


def _js_fill(size: int, value: float) -> str:
    if value == 0.0:
        return f"new Float32Array({size})"
    return f"new Float32Array({size}).fill({value!r})"


# -- the browser (onnxruntime-web) ---------------------------------------------------------------

def _script_literal(value) -> str:
    """JSON for inside an HTML <script>: "<", ">" and "&" escaped, so that no name can close the
    script element or open a comment; JavaScript reads the escapes back as the same text."""
    return (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def _comment(text: str) -> str:
    """Text for inside an HTML comment, which "--" (as in "-->") or "<!" would end or nest."""
    while "--" in text:
        text = text.replace("--", "- -")
    return text.replace("<!", "< !")


def _web(c: ModelContract, model_path: str) -> str:
    f, t = c.n_features, c.n_targets
    model = os.path.basename(model_path) or "model.onnx"
    lines = []
    for s in c.states:  # each declared shape with 1 on its batch axis: no layout assumed
        dims = [1 if axis == s.batch_axis else int(d) for axis, d in enumerate(s.shape)]
        size = math.prod(dims)
        lines.append(f"  {_script_literal(s.name)}: new ort.Tensor('float32', "
                     f"{_js_fill(size, s.initial)}, {dims}), // {_script_literal(s.input)}")
    states = "\n".join(lines)
    pairs = ", ".join(f"[{_script_literal(s.name)}, {_script_literal(s.input)}, "
                      f"{_script_literal(s.output)}]" for s in c.states)
    return f'''\
<!doctype html>
<!-- Stream one series through {_comment(model)} in the browser with onnxruntime-web.
     {_comment(_summary(c))}.
     Generated by `rnnstream inspect MODEL --code web`; the contract is in docs/embedding.md.
     Put this file beside {_comment(model)}, run `npm install onnxruntime-web@1.30.0` in that
     folder (the wasm files are read from node_modules/onnxruntime-web/dist/), serve the folder
     (python -m http.server) and open the page. -->
<meta charset="utf-8">
<title>rnnstream: {html.escape(model)}</title>
<script type="importmap">
  {{ "imports": {{ "onnxruntime-web": "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs" }} }}
</script>
<p>One point per line, {f} comma-separated raw values:</p>
<textarea id="points" rows="8" cols="60"></textarea>
<p><button id="run" disabled>Stream</button> <span id="status">loading the model...</span></p>
<pre id="out"></pre>
<script type="module">
import * as ort from 'onnxruntime-web';

ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;
ort.env.wasm.numThreads = 1; // a step is tiny; threads would also need a cross-origin-isolated page

const MODEL = {_script_literal(model)};
const FEATURES = {_script_literal(c.features)}; // x: float32 [batch, time, {f}], raw units
const TARGETS = {_script_literal(c.targets)}; // y: float32 [batch, time, {t}], raw units
// [name, input, output] of each state: the output of one call is the input of the next
const STATES = [{pairs}];
const session = await ort.InferenceSession.create(MODEL, {{ executionProviders: ['wasm'] }});

// The recurrent state of this one stream, at its initial value. For many streams keep one set
// per stream (never share it).
const state = {{
{states}
}};

/** One point (F raw values) in, T raw predictions out; the state is carried. */
async function step(point) {{
  // x: [batch=1, time=1, F={f}]
  const x = new ort.Tensor('float32', Float32Array.from(point), [1, 1, {f}]);
  const feeds = {{ [{_script_literal(c.input["name"])}]: x }};
  for (const [name, input] of STATES) feeds[input] = state[name];
  const out = await session.run(feeds);
  for (const [name, , output] of STATES) state[name] = out[output]; // carry the state
  // y: [batch=1, time=1, T={t}], one value per name in TARGETS
  return out[{_script_literal(c.output["name"])}].data;
}}

const status = document.getElementById('status');
const button = document.getElementById('run');
button.addEventListener('click', async () => {{
  const lines = document.getElementById('points').value.split('\\n').filter((l) => l.trim());
  const out = [];
  for (const [i, line] of lines.entries()) {{
    const point = line.split(',').map(Number); // raw units: normalisation is in the graph
    if (point.length !== FEATURES.length || !point.every(Number.isFinite)) {{
      status.textContent = `line ${{i + 1}}: expected ${{FEATURES.length}} numbers (${{FEATURES}})`;
      return;
    }}
    out.push(Array.from(await step(point)).join(','));
  }}
  document.getElementById('out').textContent = out.join('\\n');
  status.textContent = `streamed ${{lines.length}} points`;
  status.className = 'done';
}});
button.disabled = false;
status.textContent = 'ready';
</script>
'''


LANGS: dict[str, Callable[[ModelContract, str], str]] = {"js": _js, "python": _python, "web": _web}
