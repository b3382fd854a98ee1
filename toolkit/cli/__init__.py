"""The `edgespec` command line: thin commands over the public API."""
