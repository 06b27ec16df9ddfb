"""The course's word count: tweets' text from topic ``twitterText``, split into lower-case
words, counted per word in a sliding processing-time window of 15 s every 5 s, printed as
Flink prints a ``Tuple2``: ``(word,count)``.

    moldau run examples/wordcount.py --bootstrap-servers 127.0.0.1:9092 --topic twitterText

Korean (and any other script) splits on whitespace and punctuation: a word is a run of
letters or digits (``\\w+``), which needs no dictionary.
"""

from __future__ import annotations

import argparse
import re
import sys

from moldau.clients.stream import (
    KafkaOffsetsInitializer,
    KafkaSource,
    SimpleStringSchema,
    SlidingProcessingTimeWindows,
    StreamExecutionEnvironment,
    Time,
    WatermarkStrategy,
)

WORD = re.compile(r"\w+")


def tokenize(sentence: str) -> list[tuple[str, int]]:
    """Flink's Tokenizer: lower-case words, each with a count of one."""
    return [(w, 1) for w in WORD.findall(sentence.lower())]


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description="Sliding-window word count over a topic")
    ap.add_argument("--bootstrap-servers", "--bootstrap.servers", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="twitterText")
    ap.add_argument("--window-seconds", type=float, default=15)
    ap.add_argument("--slide-seconds", type=float, default=5)
    ap.add_argument("--from-beginning", action="store_true",
                    help="read the topic from its start (default: only new records)")
    args = ap.parse_args(argv)

    env = StreamExecutionEnvironment.get_execution_environment()
    source = (KafkaSource.builder()
              .set_bootstrap_servers(args.bootstrap_servers)
              .set_topics(args.topic)
              .set_starting_offsets(KafkaOffsetsInitializer.earliest() if args.from_beginning
                                    else KafkaOffsetsInitializer.latest())
              .set_value_only_deserializer(SimpleStringSchema())
              .build())
    size = Time.milliseconds(int(args.window_seconds * 1000))
    slide = Time.milliseconds(int(args.slide_seconds * 1000))
    (env.from_source(source, WatermarkStrategy.no_watermarks(), "Kafka: " + args.topic)
        .flat_map(tokenize).name("Tokenizer")
        .key_by(lambda pair: pair[0])
        .window(SlidingProcessingTimeWindows.of(size, slide))
        .sum(1).name("Window count")
        .map(lambda pair: f"({pair[0]},{pair[1]})").name("Tuple2")
        .print())
    env.execute("Window WordCount")


if __name__ == "__main__":
    main(sys.argv[1:])
