"""The ``vqcodec`` command-line interface (Typer + rich)."""
