"""The feed: exchange WebSocket streams → raw Kafka topics, plus capture, replay and a local simulator."""
