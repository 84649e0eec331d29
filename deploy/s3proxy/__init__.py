"""S3Proxy, a local S3-compatible server for s3:// warehouses (see server.py)."""
