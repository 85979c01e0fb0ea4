"""Logging configuration for the processes (text by default, JSON lines with ORCH_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from webhooks.models import format_timestamp


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the flow context if any."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a JSON line."""
        doc: dict[str, Any] = {
            "time": format_timestamp(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run_id", "attempt", "trace_id"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure(*, level: str = "INFO", fmt: str = "text") -> None:
    """Install the logging configuration for one process."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": formatter},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default"}},
            "root": {"handlers": ["console"], "level": level.upper()},
            "loggers": {"arq": {"level": "WARNING"}, "uvicorn.access": {"level": "WARNING"}},
        }
    )
