"""The lake writer: Kafka topics → Iceberg tables (bronze, silver, gold), exactly once, with maintenance."""
