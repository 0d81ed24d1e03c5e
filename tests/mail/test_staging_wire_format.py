"""Known-answer vectors of a staged import chunk's plaintext (``workloads.mail.staging``, wire
format version 1), written out byte by byte from the module's docstring, not produced by the
code under test: each record's encoding, a whole chunk decoded, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from customerkey.workloads.mail.staging import decode_chunk, encode_record

MESSAGE = b"Subject: a\r\n\r\nx"
WHEN = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)  # 1767323045000006 µs after 1970

# folder length, "INBOX", envelope date (signed µs, big-endian), message length, message
RECORD_INBOX = bytes.fromhex(
    "0005"
    + "494e424f58"
    + "0006475ef64cf346"
    + "000000000000000f"
    + "5375626a6563743a20610d0a0d0a78"
)
# no envelope date: -2**63; a folder name in UTF-8 ("é" is two bytes)
RECORD_NO_DATE = bytes.fromhex("0002" + "c3a9" + "8000000000000000" + "0000000000000001" + "6d")
# "CKMS", version 1, first message index 5, two records
HEAD = bytes.fromhex("434b4d53" + "01" + "0000000000000005" + "00000002")


def test_each_record_is_encoded_as_the_docstring_says() -> None:
    assert encode_record("INBOX", MESSAGE, WHEN) == RECORD_INBOX
    assert encode_record("é", b"m", None) == RECORD_NO_DATE


def test_a_chunk_decodes_to_its_first_index_and_records() -> None:
    first, records = decode_chunk(HEAD + RECORD_INBOX + RECORD_NO_DATE)
    assert first == 5
    assert records == [("INBOX", MESSAGE, WHEN), ("é", b"m", None)]


@pytest.mark.parametrize(
    "plaintext",
    [
        HEAD[:16],  # shorter than the head
        b"CKMX" + HEAD[4:] + RECORD_INBOX + RECORD_NO_DATE,  # another magic
        HEAD[:4] + b"\x02" + HEAD[5:] + RECORD_INBOX + RECORD_NO_DATE,  # another version
        HEAD + RECORD_INBOX + RECORD_NO_DATE[:-1],  # the last message cut short
        HEAD + RECORD_INBOX + RECORD_NO_DATE[:5],  # a record's head cut short
        HEAD + RECORD_INBOX + RECORD_NO_DATE + b"\x00",  # a byte after the last record
    ],
    ids=["short", "magic", "version", "truncated", "cut-head", "trailing"],
)
def test_anything_else_is_refused(plaintext: bytes) -> None:
    with pytest.raises(ValueError):
        decode_chunk(plaintext)
