"""The golden vector of a native dialect's case (torch, optax, transformers): the same
schema as a Keras vector, from the dialect's reference (reference/dialects/).

A dialect vector differs from a Keras one only where the dialect's state does:
  * ``config`` holds the framework's own constructor arguments (every one, defaults
    filled in, as the dialect's ``get_config`` returns them; tuples become lists);
  * ``r``/``c`` are the dialect's factored statistics, squeezed: ``r`` lacks the column
    axis, ``c`` the row axis (torch keeps them as ``[..., n, 1]`` and ``[..., 1, m]``;
    optax factors its two largest axes, so which axes depends on the shape);
  * ``v`` is ``null`` for a variable whose dialect keeps no full second moment;
  * ``momentum`` (only where some variable has one) is the first moment of optax's
    ``momentum`` / transformers' ``beta1``, and ``state_dtypes`` names its dtype where the
    configuration fixes one (optax's ``dtype_momentum``);
  * ``learning_rate`` is the learning rate the dialect used at that step (optax with
    ``learning_rate=None``: 1), ``is_update_step`` is always true, ``ema_overwritten`` false;
  * ``rms_floor`` is the dialect's floor of RMS(x) in the step size (None: 0).
Every variable has a gradient on every step (see reference/dialects/base.py).
"""

from __future__ import annotations

import numpy as np

from conformance import replay
from conformance import vectorfile as vf
from conformance.generator.encoding import encode_expected, encode_initial_state, encode_state_dtypes
from conformance.generator.flags import SPECIAL_GRADIENT_FLAGS, special_value_flags
from reference.dialects import optimizer_class


def dialect_vector(case, vector: dict, initial, grads, expect_error) -> dict:
    """Complete ``vector`` (the fields every vector starts with) for the dialect ``case`` on
    the drawn ``initial`` values and ``grads``."""
    flags = set(case.flags)
    cls = optimizer_class(case.dialect)
    try:
        opt = cls(**case.config)
    except Exception as exc:  # an invalid vector must fail exactly as declared
        expect_error(case, exc, "construction")
        vector.update(config=vf.as_jsonable(dict(case.config)), steps=[], result="invalid",
                      flags=sorted(flags | {"INVALID_CONFIGURATION"}), initial_state=None, state_dtypes={},
                      rms_floor=None)
        return vector
    if case.error:
        raise AssertionError(f"case {case.id}: expected {case.error['class']} at construction")
    if any(g is None for row in grads for g in row):
        raise AssertionError(f"case {case.id}: dialect vectors give every variable a gradient on every step")

    variables = [np.array(x, dtype=np.float64) for x in initial]
    excluded = set((case.exclude or {}).get("var_index", []))
    opt.build(variables, decays=[i not in excluded for i in range(len(variables))])
    if case.start_iterations:
        opt.iterations = case.start_iterations  # resumed: the initial state records it
    vector.update(initial_state=encode_initial_state(replay.dialect_snapshot(opt, variables)),
                  rms_floor=vf.float_to_bits(replay.dialect_rms_floor(opt)))
    steps = []
    for row in grads:
        lr = opt.learning_rate(opt.iterations + 1)
        with np.errstate(all="ignore"):
            opt.apply([np.asarray(g, dtype=np.float64) for g in row], variables)
        expected = replay.dialect_snapshot(opt, variables, lr)
        steps.append({"grads": [vf.encode_array(np.asarray(g, dtype=np.float64)) for g in row],
                      "expected": encode_expected(expected), "margins": None})
        for a in expected["variables"] + [a for k in ("r", "c", "v") for a in expected[k] if a is not None]:
            if not np.all(np.isfinite(a)):
                flags.add("NONFINITE_STATE")
    _flags(flags, case, opt, grads, replay.dialect_has_momentum(opt))
    config = opt.get_config()
    if case.given_only:  # only the arguments given: a replay leaves the others to the framework
        config = {key: value for key, value in config.items() if key in case.config}
        flags.add("DEFAULT_ARGUMENTS")
    config = vf.as_jsonable(config)
    vector.update(config=config, state_dtypes=encode_state_dtypes(state_dtypes(case.dialect, config)), steps=steps,
                  flags=sorted(flags))
    vector["result"] = "acceptable" if flags & SPECIAL_GRADIENT_FLAGS else "valid"
    return vector


def state_dtypes(dialect: str, config: dict) -> dict:
    """{kind: dtype name} the vector's recorded configuration keeps whatever the lane: optax
    keeps its momentum in ``dtype_momentum`` (optax/_src/alias.py adafactor: ``transform.ema(momentum,
    debias=False, accumulator_dtype=dtype_momentum)``)."""
    if dialect == "optax" and config.get("momentum") is not None and config.get("dtype_momentum"):
        return {"momentum": str(np.dtype(config["dtype_momentum"]))}
    # pytorch_optimizer keeps exp_avg in momentum_dtype, bfloat16 by default (its adafactor.py:55, :129)
    if dialect == "pytorch_optimizer" and (config.get("betas") or [0.9])[0] is not None:
        return {"momentum": config.get("momentum_dtype", "bfloat16")}
    # timm's AdafactorBigVision keeps exp_avg in momentum_dtype, bfloat16 by default (adafactor_bv.py:64-65, :172)
    if dialect == "timm_bigvision" and config.get("momentum", 0.9) is not None:
        return {"momentum": config.get("momentum_dtype", "bfloat16")}
    return {}


def _flags(flags: set, case, opt, grads, has_momentum: bool) -> None:
    shapes = [shape for _, shape in case.variables]
    for shape in shapes:
        if len(shape) == 0:
            flags.add("SCALAR")
        elif len(shape) == 1:
            flags.add("VECTOR")
        elif replay.dialect_factored_axes(opt, shape) is None:
            flags.add("UNFACTORED_MATRIX")
        else:
            flags.add("FACTORED")
            if 1 in shape:
                flags.add("SIZE_ONE_AXIS")
            if len(shape) >= 3:
                flags.add("BATCH_AXES")
        if int(np.prod(shape, dtype=np.int64)) >= 8:
            flags.add("LONG_REDUCTION")
    if len(shapes) > 1:
        flags.add("MULTI_VARIABLE")
    if case.steps >= 30:
        flags.add("LONG_RUN")
    if has_momentum:
        flags.add("MOMENTUM")
    if replay.dialect_weight_decay(opt):
        flags.add("WEIGHT_DECAY")
    if case.exclude:
        flags.add("WEIGHT_DECAY_EXCLUSION")
    for g in (g for row in grads for g in row):
        flags |= special_value_flags(g)
