"""vinci_data: the datasets of vinci-jax (JAX-free).

One record schema (`records.Record`) is shared by the synthetic corpus (`vinci_data.synth`) and the converted public
VinciCoder data (`vinci_data.convert`), so the Grain pipelines read both the same way. Records live in ArrayRecord
shards next to a `stats.json` report.
"""

from vinci_data.records import (
    DOMAINS,
    SPLITS,
    TASKS,
    Record,
    RecordWriter,
    decode_record,
    encode_record,
    list_shards,
    read_records,
)

__all__ = [
    "DOMAINS",
    "SPLITS",
    "TASKS",
    "Record",
    "RecordWriter",
    "decode_record",
    "encode_record",
    "list_shards",
    "read_records",
]
