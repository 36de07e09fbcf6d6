"""Artifact stores (local folder, S3), stage results, lineage, cache pointers, model files."""
