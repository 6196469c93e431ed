"""TF-Serving export tools: ``python -m export.export`` (writes a version) and ``export.grpc_client`` (queries it)."""
