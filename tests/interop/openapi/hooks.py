"""Schemathesis hooks for docs/openapi.yaml (tests/openapi.rs loads them).

The document uses two string formats of its own, which no schema keyword can spell out:
`phone-number` (a number in any notation that parses as a valid one) and `cursor` (a
`next_cursor` the query API issued). Generated data must satisfy them for "schema-valid requests
are accepted" to mean anything, so each format gets a strategy that draws only valid values.
Values outside a format cannot be generated from the schema, so negative tests never rely on them.
"""

import base64
import json
from datetime import datetime

import schemathesis
from hypothesis import strategies as st

# International notations, valid whatever `region` a request also carries. (The router reads
# numbers with `PhoneNumber::parse_lenient`, which does not take the `+44 (0)20` notation that
# the query API's `number` filter also reads, nor, with a North American `region`, a French
# number such as `+33 1 42 68 53 00`: each is checked to parse with every region.)
_NUMBERS = [
    "+44 20 7946 0000",
    "+442079460001",
    "442079460003",
    "+44 7911 123456",
    "+7 495 123-45-67",
    "+7 (916) 123-45-67",
    "74951234568",
    "+49 30 901820",
]

schemathesis.openapi.format("phone-number", st.sampled_from(_NUMBERS))


def _cursor(micros: int, source: str, call: str) -> str:
    key = json.dumps([micros, source, call]).encode()
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


# What `Cursor::encode` writes (services/api/src/filter.rs): unpadded base64url of
# `[started_at in Unix microseconds, source id, call id]`, for a call that could be stored.
schemathesis.openapi.format(
    "cursor",
    st.builds(
        _cursor,
        st.integers(min_value=0, max_value=4_102_444_800_000_000),
        st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z"),
        st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40),
    ),
)


def _time(text):
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None


@schemathesis.hook
def filter_case(context, case):
    """Cases the document cannot describe, or the tester cannot send as meant."""
    # `from` must be earlier than `to` (a 400 otherwise), which a schema cannot say.
    if case.operation.path == "/v1/calls" and isinstance(case.query, dict):
        start, end = _time(case.query.get("from")), _time(case.query.get("to"))
        try:
            if start is not None and end is not None and start >= end:
                return False
        except TypeError:  # one with an offset, one without: not comparable, not sent as such
            return False
    # A CSV import is any text. The tester sends a non-string body meant as "not a string" as its
    # text form, which is valid CSV; it knows this only for text/plain.
    if (case.media_type or "").startswith("text/csv") and not isinstance(case.body, (str, bytes)):
        return False
    return True
