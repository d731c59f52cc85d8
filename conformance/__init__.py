"""The conformance gate: golden-vector files, adapters and the runner."""

#: The gate's version (the package's, read by pyproject.toml); ``reference.__version__`` is the same.
__version__ = "1.2.0"
