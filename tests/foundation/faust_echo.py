"""A minimal Faust app for the foundation test: copies records from k2.test.in to k2.test.out."""

import os

import faust

app = faust.App(
    os.environ.get("ECHO_APP_ID", "k2-test-echo"),
    broker=f"kafka://{os.environ['K2_KAFKA_BOOTSTRAP']}",
    store="memory://",
    web_port=int(os.environ.get("ECHO_WEB_PORT", "6066")),
    web_host="127.0.0.1",
    topic_replication_factor=1,
    topic_allow_declare=True,
)
source = app.topic("k2.test.in", value_serializer="raw", key_serializer="raw", partitions=1)
sink = app.topic("k2.test.out", value_serializer="raw", key_serializer="raw", partitions=1)


@app.agent(source)
async def echo(stream):
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value)


if __name__ == "__main__":
    app.main()
