"""One complaint at a time over HTTP: ``python -m pipeline.serve RUN`` (LitServe, the ``serve`` extra)."""
