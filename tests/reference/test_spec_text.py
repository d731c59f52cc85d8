"""reference/SPEC.md against the reference: the spec's text must not drift from the code.

SPEC.md is written for people porting Adafactor without reading our Python, so every table in
it that states a checkable fact is parsed here and run against ``reference``: the validation
rules (each example raises the stated class with the stated keyword, in the stated order), the
accepted edge values, the learning-rate call counts, the schedules' worked values, the state
shapes, and the quirks' numbering (Q1..Qn, each once, in order; numbers are never reused). Every
``invalid`` Keras vector must be covered by a row of the validation table.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import reference
from reference import Adafactor, adafactor_step, clipping, reductions, schedules
from reference.optimizer import apply_weight_decay

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:Gradients do not exist", "ignore:invalid value:RuntimeWarning")

SPEC = (Path(reference.__file__).resolve().parent / "SPEC.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- parsing
def section(number: int) -> str:
    """The text of ``## <number>. ...`` up to the next ``## `` heading."""
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", SPEC, flags=re.M | re.S)
    assert match, f"SPEC.md has no section {number}"
    return match.group(0)


def split_row(line: str) -> list:
    """The cells of one markdown table row; a ``|`` inside backticks is not a separator."""
    cells, cell, code = [], "", False
    for ch in line.strip().strip("|"):
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
    cells.append(cell.strip())
    return cells


def tables(text: str) -> list:
    """Every markdown table in ``text`` as (header cells, [row cells, ...])."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            rows = [split_row(b) for b in block]
            out.append((rows[0], rows[2:]))
        block = []
    return out


def table_with(text: str, column: str):
    found = [t for t in tables(text) if column in t[0]]
    assert len(found) == 1, f"expected one table with a {column!r} column, found {len(found)}"
    return found[0]


def code_spans(cell: str) -> list:
    return re.findall(r"`([^`]*)`", cell)


def json_spans(cell: str) -> list:
    return [json.loads(s) for s in code_spans(cell) if s.startswith("{")]


def class_names(exc: BaseException) -> list:
    return [c.__name__ for c in type(exc).__mro__]


def construct(config: dict) -> Adafactor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Adafactor(**config)


def raised(config: dict, at: str):
    """What the reference raises for ``config`` (at construction, or at the first step of an
    all-None ``apply`` when ``at`` is "step"); None when nothing is raised."""
    try:
        opt = construct(config)
        if at == "step":
            x = [np.ones((2, 3)), np.ones(3)]
            opt.apply([None, None], x)
    except Exception as exc:  # noqa: BLE001 - the exception is what is checked
        return exc
    return None


# ----------------------------------------------------------------------------- structure
def test_sections_are_numbered_consecutively_and_listed_in_the_contents():
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", SPEC, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1))
    contents = re.search(r"^Contents: (.*?)\n\n", SPEC, flags=re.M | re.S).group(1)
    listed = [int(n) for n in re.findall(r"(?:^|;\s+)(\d+) ", contents)]
    assert listed == numbers


def quirk_numbers() -> list:
    return [int(n) for n in re.findall(r"^\* \*\*Q(\d+) ", section(4), flags=re.M)]


def test_quirks_are_numbered_once_each_in_order():
    numbers = quirk_numbers()
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    # defined only in section 4, exactly once each
    for n in numbers:
        assert len(re.findall(rf"\*\*Q{n} ", SPEC)) == 1, f"Q{n} is defined more than once"
    # the contents line names the range, and every quirk cited anywhere exists
    assert f"quirks Q1-Q{numbers[-1]}" in SPEC
    cited = {int(n) for n in re.findall(r"\bQ(\d+)\b", SPEC)}
    assert cited <= set(numbers), f"SPEC.md cites quirks it does not define: {sorted(cited - set(numbers))}"


def test_quirk_numbers_are_never_reused():
    """The first twelve quirks keep the names other documents cite (MUTATION.md, tests)."""
    names = dict(re.findall(r"^\* \*\*(Q\d+) ([^*]+)\*\*", section(4), flags=re.M))
    assert names["Q1"].startswith("`relative_step` is a no-op")
    assert names["Q3"].startswith("Factoring rule")
    assert names["Q7"].startswith("Weight decay")
    assert names["Q8"].startswith("A callable learning rate")
    assert names["Q11"].startswith("`global_clipnorm` is not exact")


# ----------------------------------------------------------------------------- validation
def validation_rows() -> list:
    header, rows = table_with(section(9), "message contains")
    col = {name: i for i, name in enumerate(header)}
    out = []
    for cells in rows:
        out.append({
            "order": int(cells[col["order"]]),
            "examples": json_spans(cells[col["examples, each refused"]]),
            "at": cells[col["at"]],
            "class": cells[col["class"]],
            "keyword": cells[col["message contains"]],
        })
    return out


def test_validation_table_is_in_check_order_with_examples():
    rows = validation_rows()
    assert [r["order"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["examples"] for r in rows)
    assert {r["at"] for r in rows} <= {"construction", "step"}


@pytest.mark.parametrize("row", validation_rows(), ids=lambda r: f"row{r['order']}")
def test_every_validation_example_raises_the_stated_error(row):
    for example in row["examples"]:
        exc = raised(example, row["at"])
        assert exc is not None, f"{example} raised nothing at {row['at']}"
        assert row["class"] in class_names(exc), f"{example}: {type(exc).__name__}: {exc}"
        assert row["keyword"] in str(exc), f"{example}: {exc!r} lacks {row['keyword']!r}"
        if row["at"] == "step":  # and it is not a construction error
            assert raised(example, "construction") is None


def test_the_first_failing_check_in_table_order_wins():
    rows = [r for r in validation_rows() if r["at"] == "construction"]
    for first, later in itertools.combinations(rows, 2):
        alone = raised(first["examples"][0], "construction")
        merged = {**later["examples"][0], **first["examples"][0]}
        both = raised(merged, "construction")
        assert both is not None and type(both) is type(alone) and str(both) == str(alone), (
            f"{merged}: expected row {first['order']}'s error {alone!r}, got {both!r}")


def test_every_accepted_example_constructs():
    header, rows = table_with(section(9), "why it is accepted")
    examples = [json_spans(cells[0]) for cells in rows]
    assert all(len(e) == 1 for e in examples)
    for (config,) in examples:
        assert raised(config, "construction") is None, config


def test_accepted_ema_overwrite_frequencies_do_what_the_table_says():
    for frequency, overwrites in ((True, [True, True, True]), (0, [False, False, False])):
        opt = construct({"use_ema": True, "ema_overwrite_frequency": frequency, "learning_rate": 0.1})
        x = [np.linspace(1.0, 2.0, 4)]
        seen = []
        for _ in range(3):
            opt.apply([np.ones(4)], x)
            seen.append(opt.last_step.ema_overwritten)
        assert seen == overwrites


def keras_vectors() -> list:
    out = []
    for path in sorted((ROOT / "vectors" / "keras").glob("*.json")):
        out.extend(json.loads(path.read_text(encoding="utf-8"))["vectors"])
    return out


def test_every_invalid_vector_is_covered_by_a_validation_row():
    rows = validation_rows()
    invalid = [v for v in keras_vectors() if v["result"] == "invalid"]
    assert invalid
    used = set()
    for vector in invalid:
        error = vector["error"]
        covering = [r for r in rows if (r["class"], r["at"], r["keyword"])
                    == (error["class"], error["at"], error["message_contains"])]
        assert covering, f"{vector['id']}: no row of SPEC.md section 9 states {error}"
        used.update(r["order"] for r in covering)
        if error["at"] == "construction":  # the vector's own config trips that very rule
            exc = raised(vector["config"], "construction")
            assert exc is not None and error["message_contains"] in str(exc), vector["id"]
    assert used == {r["order"] for r in rows}, "a validation row no vector exercises"


def test_error_contract_as_the_gate_applies_it():
    """Section 10: class by name or any base class, place, 0-based step, message substring."""
    from conformance.grading import error_problems

    class Refused(ValueError):
        pass

    expected = {"class": "ValueError", "message_contains": "No gradients provided", "at": "step", "step": 1}
    assert error_problems(expected, Refused("No gradients provided here"), at="step", step=1) == []
    assert error_problems(expected, ValueError("No gradients provided"), at="step", step=0)
    assert error_problems(expected, ValueError("No gradients provided"), at="construction")
    assert error_problems(expected, ValueError("no gradients provided"), at="step", step=1)
    assert error_problems(expected, TypeError("No gradients provided"), at="step", step=1)
    assert error_problems(expected, None, at="step", step=1)


def test_a_step_that_raises_changes_nothing():
    """Q16."""
    calls = []

    def lr():
        calls.append(1)
        return 0.01

    opt = construct({"learning_rate": lr, "weight_decay": 0.1, "use_ema": True})
    x = [np.ones((2, 3))]
    opt.apply([np.ones((2, 3))], x)
    before, values, count = opt.get_state(), x[0].copy(), len(calls)
    with pytest.raises(ValueError, match="No gradients provided"):
        opt.apply([None], x)
    after = opt.get_state()
    assert after.iterations == before.iterations == 1 and len(calls) == count
    assert np.array_equal(x[0], values)
    for (k, i, a), (_, _, b) in zip(before.arrays(), after.arrays()):
        assert np.array_equal(a, b), (k, i)


# ----------------------------------------------------------------------------- learning rates
def calls_rows() -> list:
    header, rows = table_with(section(11), "calls in each of the four applies")
    return [(json_spans(cells[0])[0], [int(n) for n in cells[1].split(",")]) for cells in rows]


@pytest.mark.parametrize("setup,expected", calls_rows(), ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_learning_rate_calls_per_apply(setup, expected):
    calls = []

    def lr():
        calls.append(1)
        return 0.01

    names = ["kernel", "bias", "scale"]
    x = [np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([1.0, 2.0]), np.array(0.5)]
    opt = construct({**setup["config"], "learning_rate": lr})
    if setup.get("exclude"):  # before build, as Keras documents it
        opt.exclude_from_weight_decay(var_names=setup["exclude"])
    opt.build(x, names=names)
    per_apply = []
    for _ in range(4):
        grads = [None if n in setup.get("no_grad", ()) else np.full_like(v, 0.25) for n, v in zip(names, x)]
        before = len(calls)
        opt.apply(grads, x)
        per_apply.append(len(calls) - before)
    assert per_apply == expected


def schedule_rows() -> list:
    header, rows = table_with(section(11), "step: value")
    out = []
    for cells in rows:
        spec = json_spans(cells[0])[0]
        points = [re.fullmatch(r"(\d+): (\S+)", s).groups() for s in code_spans(cells[1])]
        out.append((spec, [(int(k), float(v)) for k, v in points]))
    return out


def test_the_worked_schedule_values_cover_all_six_schedules():
    assert {spec["class_name"] for spec, _ in schedule_rows()} == set(schedules.ALL_SCHEDULES)


@pytest.mark.parametrize("spec,points", schedule_rows(), ids=lambda v: v.get("class_name") if isinstance(v, dict) else None)
def test_worked_schedule_values(spec, points):
    schedule = schedules.deserialize(spec)
    for step, value in points:
        got = schedule(step)
        assert (math.isnan(got) and math.isnan(value)) or got == value, (spec, step, got, value)


def test_a_schedule_is_called_with_the_raw_counter_before_it_is_incremented():
    seen = []

    class Probe(schedules.ExponentialDecay):
        def __call__(self, step):
            seen.append(step)
            return super().__call__(step)

    opt = construct({"learning_rate": Probe(0.5, 3, 0.5), "gradient_accumulation_steps": 2})
    x = [np.ones(3)]
    for _ in range(6):
        opt.apply([np.ones(3)], x)
    assert seen == [1, 3, 5]  # updates on micro-steps 2, 4, 6 see raw counters 1, 3, 5


# ----------------------------------------------------------------------------- state, step, clipping
def shape_rows() -> list:
    header, rows = table_with(section(6), "variable shape")
    parse = lambda cell: None if cell == "null" else tuple(json.loads(code_spans(cell)[0]))
    return [tuple(parse(c) for c in cells) for cells in rows]


@pytest.mark.parametrize("shape,r,c,v", shape_rows())
def test_state_shapes(shape, r, c, v):
    opt = construct({"use_ema": True, "gradient_accumulation_steps": 2})
    opt.build([np.zeros(shape)])
    state = opt.state
    assert (None if state.r[0] is None else state.r[0].shape) == r
    assert (None if state.c[0] is None else state.c[0].shape) == c
    assert state.v[0].shape == v == state.average[0].shape == state.accumulator[0].shape


def _other_order(r, c, axes):
    """(r outer c) / mean(r): the order section 2 forbids."""
    row, col = axes
    row_in_r = row if row < col else row - 1
    return (np.expand_dims(r, col) * np.expand_dims(c, row)) / np.expand_dims(
        reductions.mean(r, axis=row_in_r, keepdims=True), col)


def _float32_step(scale, monkeypatch, other_order):
    with monkeypatch.context() as m:
        if other_order:
            m.setattr(adafactor_step, "estimate", _other_order)
        cls = type("Adafactor_float32", (Adafactor,), {"dtype": np.float32})
        x = [np.full((3, 4), 0.5, np.float32)]
        g = ((1 + np.arange(12).reshape(3, 4) / 12) * scale).astype(np.float32)
        opt = cls()
        with np.errstate(all="ignore"):
            opt.apply([g], x)
        return x[0], opt.state.v[0]


def test_normalising_first_is_required(monkeypatch):
    """Section 2: in float32 the other order turns zero and 1e-12 gradients into NaN and
    freezes 1e10 ones; Keras's order does neither."""
    text = section(2)
    assert "all-zero\ngradient, or gradients of about `1e-12`" in text and "about `1e10`" in text
    for scale in (0.0, 1e-12, 1e10):
        x, v = _float32_step(scale, monkeypatch, other_order=False)
        assert np.isfinite(x).all() and np.isfinite(v).all() and (v > 0).all(), scale
        assert (x != 0.5).all() == (scale != 0.0), scale  # a zero gradient does not move x
    for scale in (0.0, 1e-12):
        x, v = _float32_step(scale, monkeypatch, other_order=True)
        assert np.isnan(x).all() and (v == 0).all(), scale
    x, v = _float32_step(1e10, monkeypatch, other_order=True)
    assert np.isinf(v).all() and (x == 0.5).all()


def test_global_clipnorm_quirk_q11():
    assert "49.0 * (1/49.0) = 0.9999999999999999" in section(4)
    assert 49.0 * (1 / 49.0) == 0.9999999999999999
    g = np.array([1.0, 2.0, 3.0])  # norm 3.74 < 49: should not clip, moves by an ulp
    (clipped,) = clipping.clip_by_global_norm([g], 49.0)
    assert np.array_equal(clipped, g * 0.9999999999999999) and not np.array_equal(clipped, g)


def test_clippers_act_only_when_truthy_and_positive():
    """Section 3: accepted at construction when alone, and then no clipping at all."""
    def run(config):
        opt = construct({"learning_rate": 0.1, **config})
        x = [np.array([[1.0, 2.0], [3.0, 4.0]])]
        opt.apply([np.array([[10.0, -20.0], [5.0, 0.5]])], x)
        return opt.state.r[0]  # r sees the clipped gradient
    plain = run({})
    for config in ({"clipnorm": 0.0}, {"clipnorm": -1.0}, {"clipnorm": float("nan")},
                   {"global_clipnorm": 0.0}, {"clipvalue": 0.0}, {"clipvalue": -1.0}):
        assert np.array_equal(run(config), plain), config
    assert not np.array_equal(run({"clipnorm": 1.0}), plain)


def test_weight_decay_zero_is_not_none():
    """Q14: the stage runs: -0.0 becomes +0.0, inf becomes NaN; None leaves x alone."""
    x = np.array([-0.0, np.inf, 1.0])
    decayed = apply_weight_decay(x, 0.0, 0.01)
    assert not np.signbit(decayed[0]) and np.isnan(decayed[1]) and decayed[2] == 1.0
    assert np.isnan(apply_weight_decay(np.array([1.0]), 0.0, math.inf)[0])


# ----------------------------------------------------------------------------- summation order
def _pairwise(a: list) -> float:
    """NumPy's pairwise sum as section 2 writes it out."""
    n = len(a)
    if n < 8:
        s = 0.0
        for v in a:
            s = s + v
        return s
    if n <= 128:
        p = list(a[:8])
        i = 8
        while i < n - n % 8:
            for j in range(8):
                p[j] = p[j] + a[i + j]
            i += 8
        s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]))
        for v in a[i:]:
            s = s + v
        return s
    m = n // 2
    m -= m % 8
    return _pairwise(a[:m]) + _pairwise(a[m:])


def test_the_written_out_summation_order_is_the_references():
    """Section 2's pseudocode gives the reference's float64 sums bit for bit (a NumPy upgrade
    that changed its order would fail here, and the vectors' freshness check with it)."""
    assert "block size 128" in section(2)
    rng = np.random.default_rng(14)
    for shape in [(1,), (7,), (8,), (9,), (127,), (128,), (129,), (300,), (1000,), (4099,),
                  (5, 3), (3, 17), (2, 1024), (300, 2), (1, 640, 2), (4, 6, 3), (7, 130, 3), (2, 3, 4, 5)]:
        x = rng.normal(size=shape) * np.exp(rng.normal(size=shape) * 5)
        assert reductions.total(x) == 0.0 + _pairwise([float(v) for v in x.ravel()]), shape
        if x.ndim >= 2:
            last = [0.0 + _pairwise([float(v) for v in row]) for row in x.reshape(-1, shape[-1])]
            assert np.array_equal(reductions.total(x, axis=-1), np.reshape(last, shape[:-1])), shape
            down = np.zeros(shape[:-2] + shape[-1:])
            for i in range(shape[-2]):
                down = down + x[..., i, :]
            assert np.array_equal(reductions.total(x, axis=-2), down), shape
    norms = [float(v) for v in rng.uniform(size=11)]
    assert clipping.global_norm([np.array([v]) for v in norms]) == math.sqrt(0.0 + _pairwise([v * v for v in norms]))
