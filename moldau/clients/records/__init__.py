"""Record batch format: pure functions of bytes, no I/O."""

from moldau.clients.records.batch import (
    HEADER_SIZE,
    MAGIC,
    BatchBuilder,
    BatchHeader,
    Compression,
    CorruptRecordError,
    Record,
    build_batch,
    decode_all,
    decode_records,
    encode_values,
    iter_batches,
    parse_header,
    set_base_offset,
    set_leader_epoch,
    validate_batch,
)

__all__ = [
    "HEADER_SIZE", "MAGIC", "BatchBuilder", "BatchHeader", "Compression", "CorruptRecordError",
    "Record", "build_batch", "decode_all", "decode_records", "encode_values", "iter_batches",
    "parse_header", "set_base_offset", "set_leader_epoch", "validate_batch",
]
