"""Apache Iceberg's REST catalog test-fixture server, run locally (see server.py)."""
