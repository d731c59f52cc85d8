#!/usr/bin/env node
'use strict';
// Runs every Keras-dialect golden vector through the port and writes a conformance results file.
//
//   node run.js [--vectors DIR] [--out DIR] [--dtype float64,float32] [--mode teacher,trajectory]
//               [--schema-version 2|1] [--adafactor PATH]
//
// DIR defaults to the repository's vectors/ directory; --out to ./results. Writes
// results.json (results-file protocol version 2, conformance/RESULTS_FILE.md: one lane per
// dtype x mode, error entries with the port's message), or with --schema-version 1 one file per
// dtype x mode, results-<dtype>-<mode>.json; prints the paths it wrote. --adafactor loads
// another build of the optimizer (the tests grade a deliberately broken copy).

const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const opts = {
    vectors: path.resolve(__dirname, '..', '..', 'vectors'),
    out: path.resolve(process.cwd(), 'results'),
    dtype: ['float64', 'float32'],
    mode: ['teacher', 'trajectory'],
    adafactor: path.join(__dirname, 'adafactor.js'),
    schemaVersion: 2,
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    if (a === '--vectors') { opts.vectors = path.resolve(v); i++; }
    else if (a === '--out') { opts.out = path.resolve(v); i++; }
    else if (a === '--dtype') { opts.dtype = v.split(','); i++; }
    else if (a === '--mode') { opts.mode = v.split(','); i++; }
    else if (a === '--adafactor') { opts.adafactor = path.resolve(v); i++; }
    else if (a === '--schema-version') { opts.schemaVersion = Number(v); i++; }
    else if (a === '-h' || a === '--help') {
      process.stdout.write(fs.readFileSync(__filename, 'utf8').split('\n').slice(2, 12).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      process.exit(0);
    } else { throw new Error(`unknown argument ${a}`); }
  }
  return opts;
}

// ---- numbers: 16 hex digits of the IEEE-754 binary64 bit pattern, big-endian -----------------
const buf = new DataView(new ArrayBuffer(8));
function decodeBits(hex) {
  if (!/^[0-9a-f]{16}$/.test(hex)) throw new Error(`bad bits ${JSON.stringify(hex)}`);
  buf.setUint32(0, parseInt(hex.slice(0, 8), 16));
  buf.setUint32(4, parseInt(hex.slice(8), 16));
  return buf.getFloat64(0);
}
function encodeBits(x) {
  buf.setFloat64(0, x);
  return buf.getUint32(0).toString(16).padStart(8, '0') + buf.getUint32(4).toString(16).padStart(8, '0');
}
function decodeArray(a) {
  if (a === null || a === undefined) return null;
  const n = a.shape.reduce((p, q) => p * q, 1);
  if (a.bits.length !== n) throw new Error(`array of shape [${a.shape}] holds ${a.bits.length} values`);
  return { shape: a.shape.slice(), data: Float64Array.from(a.bits, decodeBits) };
}
const encodeArray = (t) => (t === null ? null : { shape: t.shape.slice(), bits: Array.from(t.data, encodeBits) });
const decodeList = (l) => (l === null || l === undefined ? null : l.map(decodeArray));
const encodeList = (l) => (l === null ? null : l.map(encodeArray));

function decodeState(s) {
  return {
    iterations: s.iterations,
    variables: decodeList(s.variables),
    r: decodeList(s.r), c: decodeList(s.c), v: decodeList(s.v),
    average: decodeList(s.average), accumulator: decodeList(s.accumulator),
  };
}

// ---- corpus ------------------------------------------------------------------------------------
function loadCorpus(dir) {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'MANIFEST.json'), 'utf8'));
  const files = [];
  for (const rel of Object.keys(manifest.files).sort()) {
    const doc = JSON.parse(fs.readFileSync(path.join(dir, rel), 'utf8'));
    if (doc.format !== 'adafactor-golden-vectors') throw new Error(`${rel}: not a vector file`);
    if (doc.schema_version !== 2) throw new Error(`${rel}: unknown schema_version ${doc.schema_version}`);
    if (doc.dialect !== 'keras') continue;
    files.push({ rel, doc });
  }
  return files;
}

// ---- replay ------------------------------------------------------------------------------------
function runVector(A, vec, dtype, mode) {
  const f = dtype === 'float32' ? Math.fround : (x) => x;
  const config = Object.assign({}, vec.config);
  const recorded = config.learning_rate !== null && typeof config.learning_rate === 'object' &&
    config.learning_rate.callable === 'recorded';
  // A recorded callable replays the values of all steps, concatenated, one per call (SPEC.md
  // section 11). Called more often than recorded, it returns NaN: the gate then reports the
  // wrong learning_rate_calls (and the state) instead of this script dying.
  const recordedValues = recorded ? [].concat(...vec.steps.map((s) => s.learning_rate_calls || [])) : [];
  const callsBefore = [0];
  for (const s of vec.steps) callsBefore.push(callsBefore[callsBefore.length - 1] + (s.learning_rate_calls || []).length);
  let position = 0;
  if (recorded) {
    config.learning_rate = () => {
      if (position >= recordedValues.length) {
        position++;
        return NaN;
      }
      return decodeBits(recordedValues[position++]);
    };
  }
  // config_integers: JSON Pointers of the integers in config (JSON.parse reads 1 and 1.0 alike);
  // the top-level ones are the arguments Keras sees as Python ints.
  const integerKeys = Array.isArray(vec.config_integers)
    ? vec.config_integers.filter((p) => /^\/[^/]+$/.test(p)).map((p) => p.slice(1).replace(/~1/g, '/').replace(/~0/g, '~'))
    : undefined;
  let opt;
  try {
    opt = new A.Adafactor(config, { dtype, integerKeys });
  } catch (e) {
    return errorEntry(e, null, []);
  }
  const variables = vec.variables.map((v) => {
    const t = decodeArray(v.initial);
    return { name: v.name, value: { shape: t.shape, data: t.data.map(f) } };
  });
  opt.build(variables);
  const ex = vec.exclude_from_weight_decay;
  if (ex) opt.excludeFromWeightDecay({ varNames: ex.var_names || null, varIndex: ex.var_index || null });
  // Teacher forcing starts from the vector's initial_state; a trajectory starts from the port's
  // own build (all zeros), reported as `initial` so that the gate grades it against initial_state.
  let initial = null;
  if (mode === 'teacher') {
    if (vec.initial_state) opt.setState(decodeState(vec.initial_state));
  } else {
    initial = encodeState(opt);
  }
  const steps = [];
  for (let k = 0; k < vec.steps.length; k++) {
    const step = vec.steps[k];
    if (mode === 'teacher' && k > 0) {
      opt.setState(decodeState(vec.steps[k - 1].expected));
      // The callable's position is state too: teacher forcing loads it with the rest.
      position = callsBefore[k];
      opt.learningRateCalls = callsBefore[k];
    }
    try {
      opt.apply(step.grads.map(decodeArray));
    } catch (e) {
      return errorEntry(e, k, steps);
    }
    const out = encodeState(opt);
    out.is_update_step = opt.lastIsUpdateStep;
    out.ema_overwritten = opt.lastEmaOverwritten;
    if (recorded) out.learning_rate_calls = opt.learningRateCalls;
    steps.push(out);
  }
  return initial ? { steps, initial } : { steps };
}

function encodeState(opt) {
  const s = opt.getState();
  return {
    iterations: s.iterations,
    variables: encodeList(s.variables),
    r: encodeList(s.r), c: encodeList(s.c), v: encodeList(s.v),
    average: encodeList(s.average), accumulator: encodeList(s.accumulator),
  };
}

function errorEntry(e, step, steps) {
  if (!(e instanceof Error) || !['ValueError', 'TypeError'].includes(e.name)) throw e;
  const entry = { error: e.name, message: e.message };
  if (step !== null) { entry.step = step; entry.steps = steps; }  // the states before the raising step
  return entry;
}

function main() {
  const opts = parseArgs(process.argv);
  const A = require(opts.adafactor);
  const files = loadCorpus(opts.vectors);
  fs.mkdirSync(opts.out, { recursive: true });
  const implementation = `adafactor-node-port 0.1.0 (Node ${process.version})`;
  const lanes = [];
  for (const dtype of opts.dtype) {
    for (const mode of opts.mode) {
      const vectors = {};
      for (const { doc } of files) for (const vec of doc.vectors) vectors[vec.id] = runVector(A, vec, dtype, mode);
      lanes.push({ dialect: 'keras', dtype, mode, vectors });
    }
  }
  const written = [];
  if (opts.schemaVersion === 2) {
    const file = path.join(opts.out, 'results.json');
    const results = { format: 'adafactor-conformance-results', schema_version: 2, implementation, device: 'cpu', lanes };
    fs.writeFileSync(file, JSON.stringify(results) + '\n');
    written.push(file);
  } else {
    for (const { dtype, mode, vectors } of lanes) {
      // Version 1 records the error class only.
      for (const v of Object.values(vectors)) delete v.message;
      const results = { format: 'adafactor-conformance-results', schema_version: 1, implementation, dtype, mode, device: 'cpu', vectors };
      const file = path.join(opts.out, `results-${dtype}-${mode}.json`);
      fs.writeFileSync(file, JSON.stringify(results) + '\n');
      written.push(file);
    }
  }
  for (const file of written) process.stdout.write(file + '\n');
}

main();
