"""Structured (JSON lines) logging with the request id and trace id of the current context."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("llmserve_request_id", default="")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, request_id, trace_id."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        trace_id = _current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _current_trace_id() -> str:
    try:
        from opentelemetry import trace
    except ImportError:  # tracing is optional
        return ""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def configure_logging(service: str, level: str | None = None, json_format: bool | None = None) -> None:
    """Sends the root logger's records to stderr: JSON lines unless `json_format` is false.

    Unset arguments come from LLMSERVE_LOG_LEVEL (default INFO) and LLMSERVE_LOG_FORMAT
    (`json`, the default, or `text`).
    """
    import os

    level = level or os.environ.get("LLMSERVE_LOG_LEVEL", "INFO")
    if json_format is None:
        json_format = os.environ.get("LLMSERVE_LOG_FORMAT", "json").lower() != "text"
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime
