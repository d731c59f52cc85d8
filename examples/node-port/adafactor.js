'use strict';
// A plain-JavaScript port of Keras 3's Adafactor (keras.optimizers.Adafactor), written from
// reference/SPEC.md and vectors/README.md. No dependencies.
//
// Arithmetic runs in a lane dtype: "float64" (JavaScript's own numbers) or "float32" (every
// operation's result rounded with Math.fround, which is exactly float32 arithmetic for
// + - * / and sqrt, since double rounding from binary64 is innocuous for those).
//
// A tensor is {shape: number[], data: Float64Array} in row-major order; in the float32 lane
// its values are float32 values held in doubles.

class ValueError extends Error {
  constructor(message) { super(message); this.name = 'ValueError'; }
}
class TypeError_ extends Error {
  constructor(message) { super(message); this.name = 'TypeError'; }
}

const KNOWN_ARGUMENTS = [
  'learning_rate', 'beta_2_decay', 'epsilon_1', 'epsilon_2', 'clip_threshold', 'relative_step',
  'name', 'weight_decay', 'clipnorm', 'clipvalue', 'global_clipnorm', 'use_ema', 'ema_momentum',
  'ema_overwrite_frequency', 'loss_scale_factor', 'gradient_accumulation_steps',
];

const DEFAULTS = {
  learning_rate: 0.001, beta_2_decay: -0.8, epsilon_1: 1e-30, epsilon_2: 1e-3,
  clip_threshold: 1.0, relative_step: true, name: 'adafactor', weight_decay: null,
  clipnorm: null, clipvalue: null, global_clipnorm: null, use_ema: false, ema_momentum: 0.99,
  ema_overwrite_frequency: null, loss_scale_factor: null, gradient_accumulation_steps: null,
};

function roundingFor(dtype) {
  if (dtype === 'float64') return (x) => x;
  if (dtype === 'float32') return Math.fround;
  throw new ValueError(`unsupported dtype ${dtype}`);
}

// Python's repr of a config value, for error messages.
function pyRepr(v) {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'string') return `'${v}'`;
  return String(v);
}

const size = (shape) => shape.reduce((a, b) => a * b, 1);
const tensor = (shape, data) => ({ shape: shape.slice(), data: data || new Float64Array(size(shape)) });
const copy = (t) => (t === null ? null : tensor(t.shape, Float64Array.from(t.data)));
const zerosLike = (t) => tensor(t.shape);

// ---------------------------------------------------------------------------------------------
// Learning-rate schedules (Keras's keras.optimizers.schedules), each called with the raw step.
// They compute in float64 (the spec); the optimizer casts the result to the lane dtype.

const SCHEDULES = {
  ExponentialDecay(c) {
    return (step) => {
      let p = step / c.decay_steps;
      if (c.staircase) p = Math.floor(p);
      return c.initial_learning_rate * Math.pow(c.decay_rate, p);
    };
  },
  PiecewiseConstantDecay(c) {
    // Keras's code: boundaries truncated to integers, then a sum of indicator * value from 0.0.
    const b = c.boundaries.map(Math.trunc), v = c.values;
    return (step) => {
      let lr = 0.0;
      lr += (step <= b[0] ? 1 : 0) * v[0];
      lr += (step > b[b.length - 1] ? 1 : 0) * v[v.length - 1];
      for (let i = 1; i < b.length; i++) lr += (b[i - 1] < step && step <= b[i] ? 1 : 0) * v[i];
      return lr;
    };
  },
  PolynomialDecay(c) {
    const power = c.power === undefined ? 1.0 : c.power;
    const end = c.end_learning_rate === undefined ? 0.0001 : c.end_learning_rate;
    return (step) => {
      let s = step, ds = c.decay_steps;
      if (c.cycle) {
        const mult = s === 0 ? 1.0 : Math.ceil(s / c.decay_steps);
        ds = ds * mult;
      } else {
        s = Math.min(s, ds);
      }
      const p = s / ds;
      return (c.initial_learning_rate - end) * Math.pow(1 - p, power) + end;
    };
  },
  InverseTimeDecay(c) {
    return (step) => {
      let p = step / c.decay_steps;
      if (c.staircase) p = Math.floor(p);
      return c.initial_learning_rate / (1 + c.decay_rate * p);
    };
  },
  CosineDecay(c) {
    const alpha = c.alpha === undefined ? 0.0 : c.alpha;
    const warmupSteps = c.warmup_steps === undefined ? 0 : c.warmup_steps;
    const target = c.warmup_target === undefined ? null : c.warmup_target;
    const decay = (s, ds, from) => {
      const frac = s / ds;
      const cosd = 0.5 * (1.0 + Math.cos(Math.PI * frac));
      const decayed = (1 - alpha) * cosd + alpha;
      return from * decayed;
    };
    return (step) => {
      const ds = c.decay_steps;
      if (target === null) return decay(Math.min(step, ds), ds, c.initial_learning_rate);
      const s = Math.min(step, ds + warmupSteps);
      if (s < warmupSteps) {
        const frac = s / warmupSteps;
        return (target - c.initial_learning_rate) * frac + c.initial_learning_rate;
      }
      return decay(s - warmupSteps, ds, target);
    };
  },
  CosineDecayRestarts(c) {
    const tMul = c.t_mul === undefined ? 2.0 : c.t_mul;
    const mMul = c.m_mul === undefined ? 1.0 : c.m_mul;
    const alpha = c.alpha === undefined ? 0.0 : c.alpha;
    return (step) => {
      let frac = step / c.first_decay_steps;
      let iRestart;
      if (tMul === 1.0) {
        iRestart = Math.floor(frac);
        frac = frac - iRestart;
      } else {
        iRestart = Math.floor(Math.log(1.0 - frac * (1.0 - tMul)) / Math.log(tMul));
        const sumR = (1.0 - Math.pow(tMul, iRestart)) / (1.0 - tMul);
        frac = (frac - sumR) / Math.pow(tMul, iRestart);
      }
      const mFac = Math.pow(mMul, iRestart);
      const cosd = 0.5 * mFac * (1.0 + Math.cos(Math.PI * frac));
      const decayed = (1 - alpha) * cosd + alpha;
      return c.initial_learning_rate * decayed;
    };
  },
};

function deserializeSchedule(obj) {
  const make = SCHEDULES[obj.class_name];
  if (!make) throw new ValueError(`Unknown learning rate schedule: ${obj.class_name}`);
  const fn = make(obj.config || {});
  fn.isSchedule = true;
  fn.className = obj.class_name;
  return fn;
}

// ---------------------------------------------------------------------------------------------
// Reductions: a sum followed by one division by the count. Sums over contiguous data use
// NumPy's pairwise summation (what the spec's reference sums with): below 8 elements a plain
// loop; up to 128, eight interleaved partial sums combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))
// and the remainder added one by one; above, split at n/2 rounded down to a multiple of 8.
// A mean over the second-to-last axis adds the rows in order (NumPy's order for a strided axis).

function pairwise(f, a, start, n, stride) {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res = f(res + a[start + i * stride]);
    return res;
  }
  if (n <= 128) {
    const r = new Array(8);
    for (let j = 0; j < 8; j++) r[j] = a[start + j * stride];
    let i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (let j = 0; j < 8; j++) r[j] = f(r[j] + a[start + (i + j) * stride]);
    }
    let res = f(f(f(r[0] + r[1]) + f(r[2] + r[3])) + f(f(r[4] + r[5]) + f(r[6] + r[7])));
    for (; i < n; i++) res = f(res + a[start + i * stride]);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return f(pairwise(f, a, start, n2, stride) + pairwise(f, a, start + n2 * stride, n - n2, stride));
}

function sumRange(f, data, start, count, stride) {
  if (stride !== 1) {
    let s = 0;
    for (let k = 0; k < count; k++) s = f(s + data[start + k * stride]);
    return s;
  }
  return f(0 + pairwise(f, data, start, count, 1));
}

function sumOfSquares(f, data) {
  const sq = new Float64Array(data.length);
  for (let i = 0; i < data.length; i++) sq[i] = f(data[i] * data[i]);
  return sumRange(f, sq, 0, sq.length, 1);
}

function rms(f, t) {
  return f(Math.sqrt(f(sumOfSquares(f, t.data) / t.data.length)));
}

// ---------------------------------------------------------------------------------------------

class Adafactor {
  // config: keyword arguments as Keras takes them (snake_case). options.integerKeys: the config
  // keys whose value is an integer (JSON cannot tell 1 from 1.0 once parsed; Keras can).
  // options.dtype: "float64" (default) or "float32".
  constructor(config = {}, options = {}) {
    // Without integerKeys, a JavaScript number is an integer exactly when Number.isInteger says so
    // (then learning_rate=1 cannot be told from 1.0 and is accepted). A boolean is an integer,
    // as in Python.
    const integerKeys = options.integerKeys ? new Set(options.integerKeys) : null;
    const isInt = (k) => typeof config[k] === 'boolean' ||
      (Number.isInteger(config[k]) && (integerKeys ? integerKeys.has(k) : k !== 'learning_rate'));
    const isNumber = (v) => typeof v === 'number' || typeof v === 'boolean';
    const pyType = (v) => (typeof v === 'string' ? 'str' : Array.isArray(v) ? 'list' : 'dict');
    // The checks of SPEC.md section 9, in its order; the first that fails raises.
    config = Object.assign({}, config);
    delete config.decay;  // Keras removes `decay` (with a warning when not None) before the check
    const unknown = Object.keys(config).filter((k) => !KNOWN_ARGUMENTS.includes(k));
    if (unknown.length) {
      const kw = '{' + unknown.map((k) => `'${k}': ${pyRepr(config[k])}`).join(', ') + '}';
      throw new ValueError(`Argument(s) not recognized: ${kw}`);
    }
    const c = Object.assign({}, DEFAULTS, config);
    this.dtype = options.dtype || 'float64';
    this.f = roundingFor(this.dtype);

    if (c.gradient_accumulation_steps) {
      const n = c.gradient_accumulation_steps;
      if (!isNumber(n)) {
        throw new TypeError_(`'>=' not supported between instances of '${pyType(n)}' and 'int'`);
      }
      if (!(n >= 2)) {
        throw new ValueError('`gradient_accumulation_steps` must be an integer >= 2. ' +
          `Received: gradient_accumulation_steps=${pyRepr(n)}`);
      }
    }
    if (c.use_ema) {
      const m = c.ema_momentum;
      if (!isNumber(m)) throw new TypeError_(`'>' not supported between instances of '${pyType(m)}' and 'int'`);
      if (m > 1 || m < 0) {
        throw new ValueError('`ema_momentum` must be in the range [0, 1]. ' +
          `Received: ema_momentum=${pyRepr(m)}`);
      }
      const f = c.ema_overwrite_frequency;
      if (f && (!isInt('ema_overwrite_frequency') || f < 1)) {
        throw new ValueError('`ema_overwrite_frequency` must be an integer >= 1 or None. ' +
          `Received: ema_overwrite_frequency=${pyRepr(f)}`);
      }
    }
    const setCount = ['clipnorm', 'clipvalue', 'global_clipnorm']
      .filter((k) => c[k] !== null && c[k] !== undefined).length;
    if (setCount > 1) {
      throw new ValueError(
        'Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: ' +
        `clipnorm=${pyRepr(c.clipnorm)}, clipvalue=${pyRepr(c.clipvalue)}, ` +
        `global_clipnorm=${pyRepr(c.global_clipnorm)}`);
    }
    const lr = c.learning_rate;
    if (typeof lr === 'function') {
      this.learningRateKind = 'callable';
    } else if (lr !== null && typeof lr === 'object' && lr.class_name) {
      this.learningRateKind = 'schedule';
      c.learning_rate = deserializeSchedule(lr);
    } else if (typeof lr === 'number' && !isInt('learning_rate')) {
      this.learningRateKind = 'float';
    } else {
      throw new ValueError(
        'Argument `learning_rate` should be float, or an instance of LearningRateSchedule, ' +
        'or a callable (that takes in the current iteration value and returns the ' +
        `corresponding learning rate value). Received instead: learning_rate=${pyRepr(lr)}`);
    }
    this.config = c;
    this.rawIterations = 0;
    this.learningRateCalls = 0;
    this.built = false;
  }

  get accumulationSteps() {
    const n = this.config.gradient_accumulation_steps;
    return n ? n : 0;
  }

  // Public iterations counter (Keras's `iterations`).
  get iterations() {
    const n = this.accumulationSteps;
    return n ? Math.floor(this.rawIterations / n) : this.rawIterations;
  }

  // variables: [{name, value: tensor}]; the tensors are updated in place.
  build(variables) {
    this.variables = variables.map((v) => ({ name: v.name, value: v.value }));
    this.excluded = this.variables.map(() => false);
    this.r = []; this.c = []; this.v = [];
    for (const { value } of this.variables) {
      const s = value.shape;
      if (s.length >= 2) {
        this.r.push(tensor(s.slice(0, -1)));
        this.c.push(tensor(s.slice(0, -2).concat(s.slice(-1))));
      } else {
        this.r.push(null); this.c.push(null);
      }
      this.v.push(zerosLike(value));
    }
    this.average = this.config.use_ema ? this.variables.map((v) => zerosLike(v.value)) : null;
    this.accumulator = this.accumulationSteps ? this.variables.map((v) => zerosLike(v.value)) : null;
    this.built = true;
  }

  // Keras's exclude_from_weight_decay(var_list=..., var_names=...); varIndex stands for
  // var_list (identity) since the variables here are plain objects.
  excludeFromWeightDecay({ varNames = null, varIndex = null } = {}) {
    if (varIndex) for (const i of varIndex) this.excluded[i] = true;
    if (varNames && varNames.length) {
      const re = new RegExp(varNames.join('|'));
      this.variables.forEach((v, i) => { if (re.test(v.name)) this.excluded[i] = true; });
    }
  }

  // Reads the current learning rate (a callable is called on every read).
  readLearningRate() {
    const lr = this.config.learning_rate;
    if (this.learningRateKind === 'float') return lr;
    if (this.learningRateKind === 'schedule') return lr(this.rawIterations);
    this.learningRateCalls += 1;
    return lr();
  }

  // grads: one tensor or null per variable, in build order.
  apply(grads) {
    const f = this.f;
    this.lastLearningRate = null;
    this.lastIsUpdateStep = false;
    this.lastEmaOverwritten = false;
    if (grads.length === 0) return;
    const idx = [];
    grads.forEach((g, i) => { if (g !== null && g !== undefined) idx.push(i); });
    if (idx.length === 0) throw new ValueError('No gradients provided for any variable.');
    let gs = idx.map((i) => tensor(grads[i].shape, Float64Array.from(grads[i].data, f)));
    const lsf = this.config.loss_scale_factor;
    if (lsf !== null && lsf !== undefined) {
      const s = f(lsf);
      gs = gs.map((g) => tensor(g.shape, g.data.map((x) => f(x / s))));
    }
    const n = this.accumulationSteps;
    if (n) {
      if ((this.rawIterations + 1) % n === 0) {
        const fn = f(n);
        gs = gs.map((g, k) => {
          const acc = this.accumulator[idx[k]].data;
          return tensor(g.shape, g.data.map((x, j) => f(f(x + acc[j]) / fn)));
        });
        this.update(idx, gs);
        for (const a of this.accumulator) a.data.fill(0);
      } else {
        gs.forEach((g, k) => {
          const acc = this.accumulator[idx[k]].data;
          for (let j = 0; j < acc.length; j++) acc[j] = f(g.data[j] + acc[j]);
        });
      }
    } else {
      this.update(idx, gs);
    }
    if (this.config.use_ema) this.ema();
    this.rawIterations += 1;
  }

  clip(gs) {
    const f = this.f;
    const c = this.config;
    if (c.clipnorm && c.clipnorm > 0) {
      const cn = f(c.clipnorm);
      return gs.map((g) => {
        const norm = f(Math.sqrt(sumOfSquares(f, g.data)));
        const d = Math.max(norm, cn);
        return tensor(g.shape, g.data.map((x) => f(f(x * cn) / d)));
      });
    }
    if (c.global_clipnorm && c.global_clipnorm > 0) {
      const cn = f(c.global_clipnorm);
      // One reduction over the per-tensor sums (Keras stacks them and sums the stack), so with
      // eight or more gradients the outer sum is pairwise too.
      const sums = Float64Array.from(gs, (g) => sumOfSquares(f, g.data));
      const total = sumRange(f, sums, 0, sums.length, 1);
      const nrm = f(Math.sqrt(total));
      const scale = f(f(cn * Math.min(f(1 / nrm), f(1 / c.global_clipnorm))) + f(nrm - nrm));
      return gs.map((g) => tensor(g.shape, g.data.map((x) => f(x * scale))));
    }
    if (c.clipvalue && c.clipvalue > 0) {
      const cv = f(c.clipvalue);
      return gs.map((g) => tensor(g.shape, g.data.map((x) => (x > cv ? cv : x < -cv ? -cv : x))));
    }
    return gs;
  }

  update(idx, gs) {
    const f = this.f;
    this.lastIsUpdateStep = true;
    gs = this.clip(gs);
    const wd = this.config.weight_decay;
    if (wd !== null && wd !== undefined) {
      for (const i of idx) {
        if (this.excluded[i]) continue;
        const lr = f(this.readLearningRate());
        const w = f(wd);
        const x = this.variables[i].value.data;
        for (let j = 0; j < x.length; j++) x[j] = f(x[j] - f(f(x[j] * w) * lr));
      }
    }
    const lr = this.readLearningRate();
    this.lastLearningRate = f(lr);
    idx.forEach((i, k) => this.step(i, gs[k], f(lr)));
  }

  // The Adafactor step for variable i (SPEC.md section 2).
  step(i, g, lr) {
    const f = this.f;
    const c = this.config;
    const x = this.variables[i].value;
    const xd = x.data, gd = g.data;
    const N = xd.length;
    const t = f(this.iterations + 1);
    const s = f(1 / f(Math.sqrt(t)));
    const rho = Math.min(lr, s);
    const alpha = f(Math.max(f(c.epsilon_2), rms(f, x)) * rho);
    const eps1 = f(c.epsilon_1);
    const q = new Float64Array(N);
    for (let j = 0; j < N; j++) q[j] = f(f(gd[j] * gd[j]) + eps1);
    const beta = f(1 - f(Math.pow(t, c.beta_2_decay)));
    const omb = f(1 - beta);
    const v = this.v[i].data;
    if (x.shape.length >= 2) {
      const m = x.shape[x.shape.length - 2], n = x.shape[x.shape.length - 1];
      const B = N / (m * n);
      const r = this.r[i].data, cc = this.c[i].data;
      for (let b = 0; b < B; b++) {
        const base = b * m * n;
        for (let a = 0; a < m; a++) {
          const mean = f(sumRange(f, q, base + a * n, n, 1) / n);
          r[b * m + a] = f(f(beta * r[b * m + a]) + f(omb * mean));
        }
        for (let e = 0; e < n; e++) {
          const mean = f(sumRange(f, q, base + e, m, n) / m);
          cc[b * n + e] = f(f(beta * cc[b * n + e]) + f(omb * mean));
        }
        const rmean = f(sumRange(f, r, b * m, m, 1) / m);
        for (let a = 0; a < m; a++) {
          const rowf = f(r[b * m + a] / rmean);
          for (let e = 0; e < n; e++) v[base + a * n + e] = f(rowf * cc[b * n + e]);
        }
      }
    } else {
      for (let j = 0; j < N; j++) v[j] = f(f(beta * v[j]) + f(omb * q[j]));
    }
    const u = new Float64Array(N);
    for (let j = 0; j < N; j++) u[j] = f(gd[j] / f(Math.sqrt(v[j])));
    const rmsU = rms(f, tensor(x.shape, u));
    const denom = Math.max(1, f(rmsU / f(c.clip_threshold)));
    for (let j = 0; j < N; j++) xd[j] = f(xd[j] - f(alpha * f(u[j] / denom)));
  }

  ema() {
    const f = this.f;
    const c = this.config;
    const m = f((this.iterations !== 0 ? 1 : 0) * f(c.ema_momentum));
    const om = f(1 - m);
    this.variables.forEach((v, i) => {
      const avg = this.average[i].data, x = v.value.data;
      for (let j = 0; j < x.length; j++) avg[j] = f(f(m * avg[j]) + f(om * x[j]));
    });
    const freq = c.ema_overwrite_frequency;
    if (freq && (this.iterations + 1) % freq === 0) {
      this.variables.forEach((v, i) => v.value.data.set(this.average[i].data));
      this.lastEmaOverwritten = true;
    }
  }

  // The whole state (copies), in the vectors' layout.
  getState() {
    return {
      iterations: this.rawIterations,
      variables: this.variables.map((v) => copy(v.value)),
      r: this.r.map(copy), c: this.c.map(copy), v: this.v.map(copy),
      average: this.average ? this.average.map(copy) : null,
      accumulator: this.accumulator ? this.accumulator.map(copy) : null,
    };
  }

  // Loads a state (teacher forcing); values are rounded to the lane dtype.
  setState(state) {
    const f = this.f;
    const load = (dst, src) => { if (dst && src) for (let j = 0; j < dst.data.length; j++) dst.data[j] = f(src.data[j]); };
    this.rawIterations = state.iterations;
    if (state.variables) this.variables.forEach((v, i) => load(v.value, state.variables[i]));
    this.r.forEach((t, i) => load(t, state.r[i]));
    this.c.forEach((t, i) => load(t, state.c[i]));
    this.v.forEach((t, i) => load(t, state.v[i]));
    if (this.average) this.average.forEach((t, i) => load(t, state.average[i]));
    if (this.accumulator) this.accumulator.forEach((t, i) => load(t, state.accumulator[i]));
  }
}

module.exports = { Adafactor, ValueError, TypeError: TypeError_, SCHEDULES, deserializeSchedule, tensor };
