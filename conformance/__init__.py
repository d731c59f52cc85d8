"""The conformance gate: golden-vector files, adapters and the runner."""
