"""Logging configuration for the processes: ``text`` (default), ``json`` (one object per line), ``short``."""

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
    formatters: dict[str, dict[str, Any]] = {
        "json": {"()": JsonFormatter},
        # `orchestrator dev` prefixes each line with the process that wrote it
        "short": {"format": "%(asctime)s %(levelname)-7s %(message)s", "datefmt": "%H:%M:%S"},
        "text": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
    }
    formatter = formatters.get(fmt, formatters["text"])
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
