"""Golden vectors of the native dialects (torch, optax, transformers): the same schema and
the same generator as the Keras corpus (tools/generate_vectors.py calls this module for
every case whose ``dialect`` is not ``keras``).

A dialect vector differs from a Keras one only where the dialect's state does:
  * ``config`` holds the framework's own constructor arguments (every one, defaults
    filled in, as the dialect's ``get_config`` returns them; tuples become lists);
  * ``r``/``c`` are the dialect's factored statistics, squeezed: ``r`` lacks the column
    axis, ``c`` the row axis (torch keeps them as ``[..., n, 1]`` and ``[..., 1, m]``;
    optax factors its two largest axes, so which axes depends on the shape);
  * ``v`` is ``null`` for a variable whose dialect keeps no full second moment;
  * ``momentum`` (only where some variable has one) is the first moment of optax's
    ``momentum`` / transformers' ``beta1``;
  * ``learning_rate`` is the learning rate the dialect used at that step (optax with
    ``learning_rate=None``: 1), ``is_update_step`` is always true, ``ema_overwritten`` false.
Every variable has a gradient on every step (see reference/dialects/base.py).
"""

from __future__ import annotations

import numpy as np

from conformance import replay
from conformance import vectorfile as vf
from reference.dialects import optimizer_class
from tools.gradient_flags import special_value_flags


def generate_dialect_vector(case, vector: dict, initial, grads, expect_error) -> dict:
    """The vector of a dialect ``case`` on the drawn ``initial`` values and ``grads``;
    ``vector`` holds the fields every vector starts with (tools/generate_vectors.py)."""
    flags = set(case.flags)
    cls = optimizer_class(case.dialect)
    try:
        opt = cls(**case.config)
    except Exception as exc:  # an invalid vector must fail exactly as declared
        expect_error(case, exc, "construction")
        vector.update(config=vf.as_jsonable(dict(case.config)), steps=[], result="invalid",
                      flags=sorted(flags | {"INVALID_CONFIGURATION"}))
        return vector
    if case.error:
        raise AssertionError(f"case {case.id}: expected {case.error['class']} at construction")
    if any(g is None for row in grads for g in row):
        raise AssertionError(f"case {case.id}: dialect vectors give every variable a gradient on every step")

    variables = [np.array(x, dtype=np.float64) for x in initial]
    excluded = set((case.exclude or {}).get("var_index", []))
    opt.build(variables, decayed=[i not in excluded for i in range(len(variables))])
    has_momentum = any("momentum" in s for s in opt.slots)
    steps = []
    for row in grads:
        t = opt.iterations + 1
        lr = opt.learning_rate(t)
        with np.errstate(all="ignore"):
            opt.apply([np.asarray(g, dtype=np.float64) for g in row], variables)
        expected = {
            "iterations": opt.iterations, "is_update_step": True,
            "learning_rate": None if lr is None else float(lr), "ema_overwritten": False,
            "variables": [x.copy() for x in variables],
            "r": [s.get("r") for s in opt.slots], "c": [s.get("c") for s in opt.slots],
            "v": [s.get("v") for s in opt.slots],
            "average": None, "accumulator": None,
            "momentum": [s.get("momentum") for s in opt.slots] if has_momentum else None,
        }
        steps.append({"grads": [vf.encode_array(np.asarray(g, dtype=np.float64)) for g in row],
                      "expected": replay.encode_expected(expected), "margins": None})
        for a in expected["variables"] + [a for k in ("r", "c", "v") for a in expected[k] if a is not None]:
            if not np.all(np.isfinite(a)):
                flags.add("NONFINITE_STATE")
    _flags(flags, case, opt, grads, has_momentum)
    config = opt.get_config()
    if case.given_only:  # only the arguments given: a replay leaves the others to the framework
        config = {key: value for key, value in config.items() if key in case.config}
        flags.add("DEFAULT_ARGUMENTS")
    vector.update(config=vf.as_jsonable(config), steps=steps, flags=sorted(flags))
    special = {"NONFINITE_GRADIENT", "SQUARE_OVERFLOW", "SUBNORMAL_GRADIENT"}
    vector["result"] = "acceptable" if flags & special else "valid"
    return vector


def _flags(flags: set, case, opt, grads, has_momentum: bool) -> None:
    shapes = [shape for _, shape in case.variables]
    for shape in shapes:
        if len(shape) == 0:
            flags.add("SCALAR")
        elif len(shape) == 1:
            flags.add("VECTOR")
        elif opt.stage.factored_axes(shape) is None:
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
    if opt.stage.weight_decay:
        flags.add("WEIGHT_DECAY")
    if case.exclude:
        flags.add("WEIGHT_DECAY_EXCLUSION")
    for g in (g for row in grads for g in row):
        flags |= special_value_flags(g)


#: Flags only dialect vectors carry (merged into the generator's NOTES).
NOTES = {
    "UNFACTORED_MATRIX": "a variable with two or more axes that this dialect does not factor (optax: the "
                         "second-largest axis is below min_dim_size_to_factor)",
    "MOMENTUM": "the dialect keeps a first moment (optax momentum, transformers beta1): graded as `momentum`",
}
