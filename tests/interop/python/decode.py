#!/usr/bin/env python3
"""Reads Switchboard's topics as a consumer that knows nothing but the .avsc files.

    decode.py BOOTSTRAP SCHEMAS_DIR TOPIC=RECORD_NAME...

Every record value must be Avro single-object encoding (C3 01, the writer schema's CRC-64-AVRO
fingerprint, the datum) that fastavro decodes whole. The fingerprints are fastavro's own: the
Parsing Canonical Form of each .avsc file (fastavro.schema.to_parsing_canonical_form) and its
CRC-64-AVRO fingerprint (fastavro.schema.fingerprint). RECORD_NAME is a record's name
(RawWebhook) or full name (io.switchboard.RawWebhook); its records are read with the current
schema (name.avsc) from whichever version (name.avsc, name.vN.avsc) the fingerprint names.

Each topic is read from the beginning to its high watermarks at start-up, by assignment (no
consumer group). Prints one line per schema file with its fingerprint, one
"RESULT topic=... decoded=N failed=M" line per topic, and exits 0 only when every record of every
topic decoded and no topic was empty; 1 otherwise, 2 on a usage error.
"""

import io
import json
import re
import sys
import time
import uuid
from pathlib import Path

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
DEADLINE_SECONDS = 120
ERRORS_SHOWN = 5
VERSIONED = re.compile(r".*\.v[0-9]+\.avsc$")


class Family:
    """The versions of one record: the current schema to read with, every writer by fingerprint."""

    def __init__(self, name):
        self.name = name
        self.current = None
        self.writers = {}  # the 8 fingerprint bytes on the wire -> parsed writer schema


def load_families(directory):
    files = sorted(Path(directory).glob("*.avsc"))
    if not files:
        raise SystemExit(f"no .avsc files in {directory}")
    families = {}
    for path in files:
        # Separate named types per file: the versions of one record share their names.
        schema = parse_schema(json.loads(path.read_text(encoding="utf-8")), named_schemas={})
        canonical = to_parsing_canonical_form(schema)
        # fastavro gives CRC-64-AVRO as the hex of its little-endian bytes, as on the wire.
        wire = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        name = schema["name"]
        print(f"schema {path.name} {name} fingerprint {wire.hex()}")
        family = families.setdefault(name, Family(name))
        if wire in family.writers:
            raise SystemExit(f"{path.name}: the same fingerprint as another version of {name}")
        family.writers[wire] = schema
        if not VERSIONED.match(path.name):
            if family.current is not None:
                raise SystemExit(f"two current schemas named {name}")
            family.current = schema
    for family in families.values():
        if family.current is None:
            raise SystemExit(f"older versions of {family.name} but no current schema")
    return families


def decode_one(family, value):
    """None when `value` decoded whole, else what went wrong."""
    if value is None:
        return "a record without a value"
    if len(value) < HEADER_LEN or value[:2] != MAGIC:
        return "not single-object encoding (no C3 01 header)"
    writer = family.writers.get(value[2:HEADER_LEN])
    if writer is None:
        return f"unknown fingerprint {value[2:HEADER_LEN].hex()} for {family.name}"
    stream = io.BytesIO(value[HEADER_LEN:])
    try:
        fastavro.schemaless_reader(stream, writer, family.current)
    except Exception as error:  # noqa: BLE001 - any failure is a failed record
        return f"{type(error).__name__}: {error}"
    left = len(value) - HEADER_LEN - stream.tell()
    if left:
        return f"{left} bytes after the datum"
    return None


def read_topic(bootstrap, topic, family):
    """Reads `topic` from its beginning to its high watermarks; returns (decoded, failed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # Required by the client; never joined (assign, no subscribe) and never committed.
            "group.id": f"switchboard-interop-python-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "client.id": "switchboard-interop-python",
            "log_level": 3,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            print(f"{topic}: no such topic ({info.error if info else 'absent'})", file=sys.stderr)
            return 0, 0
        end = {}
        for partition in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if high > low:
                end[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in end])
        decoded = failed = 0
        fingerprints = set()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while end:
            if time.monotonic() > deadline:
                print(f"{topic}: partitions {sorted(end)} not read to their end within "
                      f"{DEADLINE_SECONDS} s", file=sys.stderr)
                failed += 1
                break
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is not None:
                    raise KafkaException(message.error())
                value = message.value()
                if value is not None and len(value) >= HEADER_LEN:
                    fingerprints.add(value[2:HEADER_LEN].hex())
                error = decode_one(family, value)
                if error is None:
                    decoded += 1
                else:
                    if failed < ERRORS_SHOWN:
                        print(f"{topic}-{message.partition()}@{message.offset()}: {error}", file=sys.stderr)
                    failed += 1
                if message.offset() + 1 >= end.get(message.partition(), 0):
                    end.pop(message.partition(), None)
            # Offsets without a record (transaction markers) end no message: ask the position.
            for position in consumer.position([TopicPartition(topic, p) for p in end]):
                if position.offset >= end[position.partition]:
                    end.pop(position.partition, None)
        print(f"topic {topic} ({family.name}): fingerprints on the wire {sorted(fingerprints)}")
        return decoded, failed
    finally:
        consumer.close()


def main(argv):
    if len(argv) < 3:
        print("usage: decode.py BOOTSTRAP SCHEMAS_DIR TOPIC=RECORD_NAME...", file=sys.stderr)
        return 2
    bootstrap, directory, pairs = argv[0], argv[1], argv[2:]
    families = load_families(directory)
    topics = {}
    for pair in pairs:
        topic, sep, name = pair.rpartition("=")
        if not sep or not topic:
            print(f"not TOPIC=RECORD_NAME: {pair}", file=sys.stderr)
            return 2
        full = name if name in families else f"io.switchboard.{name}"
        if full not in families:
            print(f"no schema named {name} in {directory}; known: {sorted(families)}", file=sys.stderr)
            return 2
        topics[topic] = families[full]
    ok = True
    for topic, family in sorted(topics.items()):
        decoded, failed = read_topic(bootstrap, topic, family)
        print(f"RESULT topic={topic} decoded={decoded} failed={failed}", flush=True)
        if decoded + failed == 0:
            print(f"{topic}: no records", file=sys.stderr)
        ok = ok and failed == 0 and decoded > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
