"""A small NumPy Adafactor with Keras 3's semantics: the template port of the Adafactor
conformance gate (examples/python-port in the gate's repository)."""

from adafactor_port.adafactor import Adafactor

__version__ = "0.1.0"
__all__ = ["Adafactor", "__version__"]
