"""edgespec: one general image model in, small fast specialists for edge devices out, with numbers."""

__version__ = "0.1.0"
