"""Property-based testing and fuzzing of Adafactor implementations (Hypothesis).

* ``conformance.fuzz.strategies``: Hypothesis strategies for every Keras Adafactor argument
  (valid and rejected configurations), variable shapes and names, input values, and whole
  golden-vector cases (``conformance.generator.Case`` with explicit inputs) that
  ``conformance.generator.generate_vector`` turns into vectors.
* ``conformance.fuzz.differential``: the reference against an adapter on drawn cases
  (``python -m conformance.fuzz``), in quotas: most examples built to reach one deep regime
  (``strategies.REGIMES``, ``strategies.fuzz_cases``), checked on the reference
  (``conformance.fuzz.regimes``) and counted in every run; ``conformance.fuzz.mutants`` holds
  ports wrong in one regime only, which the CI profile must catch.
* ``tests/reference/test_properties.py``: mathematical properties of the reference itself, drawn with
  the same strategies; Hypothesis profiles (``ci``, ``dev``, ``campaign``) are chosen with
  ``ADAFACTOR_HYPOTHESIS_PROFILE`` (see tests/conftest.py; the fuzzer's own settings, quotas,
  depth and example databases: ``conformance.fuzz.profiles``).

Hypothesis is a test dependency (``pip install -e '.[test]'``); nothing in ``reference/``
or the conformance gate imports this package.
"""
