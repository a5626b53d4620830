"""The ``vidbatch`` command line (Typer)."""
