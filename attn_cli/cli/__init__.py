"""The `attn` command line: the Typer app and its registry (``main``), shared options, inference
input/output, the console, and one module per command group. The only layer that prints."""
