"""Operating webgate: the REST API (``api``), Prometheus metrics (``metrics``) and call
detail records (``cdr``). See docs/operations.md."""
