"""A real single-node Apache Kafka (KRaft broker+controller) run as a local process, no Docker."""
