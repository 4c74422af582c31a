"""Logging: text and JSON formats, third-party loggers quietened, the redaction safety net."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.logging_setup import (
    OUR_LOGGERS,
    THIRD_PARTY_LOGGERS,
    RedactingFilter,
    configure_logging,
    redact,
)

TS = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    names = ("", *OUR_LOGGERS, *THIRD_PARTY_LOGGERS)
    saved_levels = {name: logging.getLogger(name).level for name in names}
    yield
    for handler in root.handlers[:]:
        if handler not in saved_handlers:
            root.removeHandler(handler)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(False)


def configured(level: str = "DEBUG", fmt: str = "text") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream=stream)  # type: ignore[arg-type]
    return stream


# -- formats -------------------------------------------------------------------------------------


def test_text_format() -> None:
    stream = configured("INFO")
    logging.getLogger("syncd.engines.mirror").info(
        "applied %d records", 50, extra={"entity": "contact"}
    )
    line = stream.getvalue()
    expected = r" INFO syncd\.engines\.mirror: applied 50 records entity=contact\n"
    assert re.fullmatch(TS + expected, line)


def test_text_format_quotes_values_with_spaces() -> None:
    stream = configured("INFO")
    logging.getLogger("syncd").warning("x", extra={"error": "timed out", "n": 3, "ok": True})
    assert stream.getvalue().rstrip("\n").endswith('x error="timed out" n=3 ok=true')


def test_json_format_parses() -> None:
    stream = configured("DEBUG", "json")
    logging.getLogger("syncd.connectors.crm").debug(
        "page %s", 2, extra={"entity": "device", "n": 50}
    )
    record = json.loads(stream.getvalue())
    assert record["level"] == "DEBUG"
    assert record["logger"] == "syncd.connectors.crm"
    assert record["msg"] == "page 2"
    assert record["entity"] == "device" and record["n"] == 50
    assert re.fullmatch(TS, record["ts"])


def test_json_one_object_per_line_with_exception() -> None:
    stream = configured("INFO", "json")
    log = logging.getLogger("syncd.state")
    log.info("first line\nsecond line")
    try:
        raise ValueError("contact jaan.tamm@example.ee failed")
    except ValueError:
        log.exception("boom")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "first line\nsecond line"
    assert "ValueError" in second["exc"]
    assert "jaan.tamm@example.ee" not in second["exc"] and "<email>" in second["exc"]


def test_levels_and_reconfiguring_replaces_the_handler() -> None:
    first = configured("WARNING")
    logging.getLogger("syncd").info("hidden")
    second = configured("INFO")
    logging.getLogger("syncd.mappings.bitrix24").info("shown")
    assert first.getvalue() == ""
    assert "shown" in second.getvalue()
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_SyncdHandler"]
    assert len(ours) == 1


def test_bad_level_or_format() -> None:
    with pytest.raises(ValueError):
        configure_logging("LOUD", "text")
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]


# -- third-party loggers -------------------------------------------------------------------------


def test_third_party_loggers_quiet_at_info() -> None:
    configured("INFO")
    for name in THIRD_PARTY_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    for name in OUR_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == logging.INFO, name


def test_httpx_never_below_info_even_at_debug() -> None:
    stream = configured("DEBUG")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("httpcore").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("httpcore.http11").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("zeep").getEffectiveLevel() == logging.INFO  # envelopes at DEBUG
    logging.getLogger("httpcore.http11").debug("send_request_headers.started headers=...")
    assert stream.getvalue() == ""


def test_local_api_vat_paths_are_redacted() -> None:
    stream = configured("DEBUG")
    logging.getLogger("httpx").info(
        'HTTP Request: GET http://127.0.0.1:8787/v1/vat/EE101819093?fresh=true "HTTP/1.1 200 OK"'
    )
    out = stream.getvalue()
    assert "EE101819093" not in out and "/v1/vat/<vat>?fresh=true" in out


def test_httpx_request_line_is_redacted() -> None:
    stream = configured("DEBUG")
    logging.getLogger("httpx").info(
        'HTTP Request: POST https://b24.example.eu/rest/1/abc123xyz/crm.item.list "HTTP/1.1 200 OK"'
    )
    out = stream.getvalue()
    assert "abc123xyz" not in out
    assert "/rest/1/***/crm.item.list" in out


def test_third_party_quiet_at_error_level() -> None:
    configured("ERROR")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.ERROR


# -- redaction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret", "replacement"),
    [
        ("mail jaan.tamm@example.ee now", "jaan.tamm@example.ee", "<email>"),
        ("to: Mari.M+crm@sub.example.co.uk.", "Mari.M+crm@sub.example.co.uk", "<email>"),
        ("phone +3725123456 x", "+3725123456", "<phone>"),
        ("phone +372 5123 4567.", "+372 5123 4567", "<phone>"),
        ("us +1 (555) 123-4567", "+1 (555) 123-4567", "<phone>"),
        ("lv +371-2912-3456", "+371-2912-3456", "<phone>"),
        ("local 5123 4567 called", "5123 4567", "<phone>"),
        ("local 555-123-4567", "555-123-4567", "<phone>"),
        (
            "GET https://b24.example.eu/rest/12/k9x8f7e6d5c4b3a2/crm.contact.get?id=5",
            "k9x8f7e6d5c4b3a2",
            "/rest/12/***/crm.contact.get",
        ),
        ("https://b24.example.eu/rest/1/tok3n", "tok3n", "/rest/1/***"),
        ("https://x.example/api?auth=abc123&start=50", "abc123", "auth=***&start=50"),
        ("https://x.example/a?x=1&access_token=eyJhbGci.eyJ.sig", "eyJhbGci", "access_token=***"),
        ("retry token=zzz999 next", "zzz999", "token=***"),
        ("download?tempauth=v1.eyJ0eXAi&x=1", "v1.eyJ0eXAi", "tempauth=***"),
        ("headers={'Authorization': 'Bearer abc.def.ghi'}", "abc.def.ghi", "'Bearer ***'"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "Authorization: Basic ***"),
        ("authorization=s3cret", "s3cret", "authorization=***"),
        ("got bearer eyJraWQiOiJ4In0.payload", "eyJraWQiOiJ4In0", "bearer ***"),
        ("lookup vat_number=LV40003245752 failed", "LV40003245752", "vat_number=<personal>"),
        ("erase vat=\"EE 100 931 558\" now", "EE 100 931 558", "vat=<personal> now"),
        ("subject first_name=Jaan last_name=Tamm", "Tamm", "last_name=<personal>"),
        ("selector=+37255512345", "55512345", "selector=<personal>"),
        ("Requester_VAT=EE100931558;", "EE100931558", "Requester_VAT=<personal>;"),
    ],
)
def test_redaction_of_each_kind(text: str, secret: str, replacement: str) -> None:
    result = redact(text)
    assert secret not in result
    assert replacement in result
    assert redact(result) == result  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "cycle finished at 2026-11-21T12:00:00+02:00 in 1234 ms",
        "applied 50 of 100 000 records; cursor 2026-11-21 12:00:00",
        "outbox 550e8400-e29b-41d4-a716-446655440000 sent, crm id 123456789",
        "listening on 127.0.0.1:8080, version 1.2.3, +5 retries",
        "GET https://b24.example.eu/rest/crm.contact.list (oauth, no token in path)",
        "error code=QUERY_LIMIT_EXCEEDED status=503",
        "job_name=mirror store=vies_answers rows=3 state=overfilled",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_filter_redacts_message_args_exception_and_extras() -> None:
    stream = configured("INFO")
    log = logging.getLogger("syncd.engines.push")
    try:
        raise RuntimeError("upload to https://h/rest/1/sekret99/disk failed for a@b.ee")
    except RuntimeError:
        log.exception(
            "contact %s (%s)",
            "jaan@example.ee",
            "+372 5123 4567",
            extra={"authorization": "Bearer x", "url": "https://h/rest/1/sekret99/", "n": 3},
        )
    out = stream.getvalue()
    for leaked in ("jaan@example.ee", "5123 4567", "sekret99", "a@b.ee", "Bearer x"):
        assert leaked not in out, leaked
    assert "contact <email> (<phone>)" in out
    assert "authorization=***" in out and "n=3" in out


def test_filter_survives_broken_format_args() -> None:
    # Checked on a bare record: pytest's own capture handler would raise on it first.
    record = logging.LogRecord(
        "syncd", logging.INFO, __file__, 1, "%d items for %s", ("not-a-number", "x@y.ee"), None
    )
    assert RedactingFilter().filter(record) is True
    message = record.getMessage()
    assert "items for" in message and "x@y.ee" not in message


def test_filter_is_a_handler_filter() -> None:
    configure_logging("INFO", "text", stream=io.StringIO())
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_SyncdHandler"]
    assert any(isinstance(f, RedactingFilter) for f in ours[0].filters)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_redact_never_raises(text: str) -> None:
    result = redact(text)
    assert isinstance(result, str)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.emails(), st.text())
def test_embedded_email_is_always_removed(before: str, email: str, after: str) -> None:
    assert email not in redact(f"{before} {email} {after}")


phone_digits = st.text(alphabet="0123456789", min_size=7, max_size=14)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Nd"])), phone_digits, st.data())
def test_embedded_e164_phone_is_always_removed(
    before: str, digits: str, data: st.DataObject
) -> None:
    # Spaced in groups of 2-4 digits, like "+372 5123 4567".
    sizes = data.draw(st.lists(st.integers(2, 4), min_size=1, max_size=6))
    groups: list[str] = []
    rest = digits
    for size in sizes:
        if rest:
            groups.append(rest[:size])
            rest = rest[size:]
    if rest:
        groups.append(rest)
    phone = "+" + " ".join(groups)
    result = redact(f"{before} {phone} .")
    assert phone not in result
    assert digits not in re.sub(r"\D", "", result)


@settings(max_examples=100, deadline=None)
@given(st.text(), st.text(min_size=1))
def test_filter_never_raises_on_arbitrary_records(msg: str, arg: str) -> None:
    record = logging.LogRecord("syncd", logging.INFO, __file__, 1, msg, (arg,), None)
    assert RedactingFilter().filter(record) is True
    assert isinstance(record.getMessage(), str)


def test_extras_named_after_personal_fields_are_masked() -> None:
    stream = configured("INFO")
    logging.getLogger("syncd.cli.subject").info(
        "subject erased",
        extra={"vat_number": "LV40003245752", "first_name": "Jaan", "store": "contacts", "n": 2},
    )
    out = stream.getvalue()
    assert "LV40003245752" not in out and "Jaan" not in out
    assert "vat_number=<personal>" in out and "first_name=<personal>" in out
    assert "store=contacts" in out and "n=2" in out
