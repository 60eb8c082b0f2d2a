"""Benchmarks of jaxca components (host-side; timing protocol in `jaxca.bench`)."""
