"""Vulnerability template families, one module per theme; `emkit.datasets.vulns` gathers them."""
