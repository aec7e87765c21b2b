"""adapterxfer: intermediate-task training (STILTs) for zero-shot cross-lingual transfer."""

__version__ = "0.1.0"
