"""A minimal faust app used by the broker tests: an agent counting words into a table.

Run as `python -m tests.support.faust_counter worker` with PREFIX and BOOTSTRAP in the environment.
"""

from __future__ import annotations

import os

import faust

PREFIX = os.environ["PREFIX"]
BOOTSTRAP = os.environ["BOOTSTRAP"]

app = faust.App(
    f"{PREFIX}-counter",
    broker=f"kafka://{BOOTSTRAP}",
    store="memory://",
    topic_partitions=1,
    topic_replication_factor=1,
    web_enabled=False,
)
words = app.topic(f"{PREFIX}.words", key_type=str, value_type=str, internal=True)
counts_out = app.topic(f"{PREFIX}.counts", key_type=str, value_type=str, internal=True)
counts = app.Table(f"{PREFIX}-counts", default=int, partitions=1)


@app.agent(words)
async def count(stream: faust.StreamT[str]) -> None:
    async for word in stream:
        counts[word] += 1
        await counts_out.send(key=word, value=f"{word}={counts[word]}")


if __name__ == "__main__":
    app.main()
