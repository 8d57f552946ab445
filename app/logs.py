"""Logging for `optline serve` and `optline worker`: one JSON object per line on stderr.

Every record carries `ts`, `level`, `logger`, `msg`, the `request_id` of the HTTP request it
was logged in (when there is one), any `extra={...}` fields, and `exc` for a traceback.
Phone numbers are masked twice over: the code calls `app.phone.mask` where it logs a number,
and `MaskPhones` masks anything E.164-looking left in the final text, because a number that
slips into a log through an exception message or a library is still personal data.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from app.phone import mask

# Set by app.web.request_id for the duration of one HTTP request (and the threads it calls).
request_id: ContextVar[str | None] = ContextVar("optline_request_id", default=None)

# "+14155550123", and its form-encoded "%2B14155550123" (query strings, raw bodies).
_PHONE = re.compile(r"(?:\+|%2[Bb])(\d{8,15})")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
# uvicorn passes an ANSI-coloured copy of each message; it is noise in JSON.
_DROPPED = frozenset({"color_message"})
_TRACEBACKS = logging.Formatter()


# A national number without its +: a run of 9 to 15 digits standing alone, as PostgreSQL's
# error details and contexts quote a parameter a client sent ("4155550123").
_NATIONAL = re.compile(r"(?<![\w.+%-])(\d{9,15})(?![\w.])")


def mask_text(text: str) -> str:
    """`text` with every phone-number-looking run masked (+14155550123 -> +1415***0123, 4155550123 -> 415*****23)."""
    if "+" in text or "%2" in text:
        text = _PHONE.sub(lambda m: mask("+" + m.group(1)), text)
    if any(ch.isdigit() for ch in text):
        text = _NATIONAL.sub(lambda m: m.group(1)[:3] + "*" * (len(m.group(1)) - 5) + m.group(1)[-2:], text)
    return text


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return mask_text(str(value))


class MaskPhones(logging.Filter):
    """Mask phone numbers in the final message, the extras and the traceback of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place (message rendered once, args dropped); never drops a record."""
        message = record.getMessage()
        record.msg, record.args = mask_text(message), None
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED:
                record.__dict__[key] = _mask_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, request_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED and key not in out:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, default=str)


def json_handler(stream: Any = None) -> logging.Handler:
    """A handler writing masked JSON lines to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(MaskPhones())
    handler._optline = True  # type: ignore[attr-defined] - so setup_logging can replace its own
    return handler


def setup_logging(level: str = "INFO") -> None:
    """Send every logger (uvicorn's too) to one JSON handler on stderr; safe to call again."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_optline", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(json_handler())
    root.setLevel(level.upper())
    # What the JSON lines never show is not gathered for each record (the Logging HOWTO's
    # "Optimization"): the caller's file and line (a walk up the stack), the thread, the
    # process. At INFO a webhook logs a line or two, and this was a third of their cost.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn's loggers keep no handlers of their own (it runs with log_config=None) and
    # propagate here; warnings.warn output becomes a JSON line like the rest.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The twilio library logs every request it makes at INFO (method, URL with the Account
    # SID, headers): eight lines a send. Its warnings and errors still come through.
    logging.getLogger("twilio").setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
