"""The server's log in tritonserver's layout, so scripts that grep a Triton log (`^E[0-9]{4}`
for errors, say) read bertserve's the same way.

`--log-format default`: `E0819 17:23:47.123456 4242 loader.py:88] message`
`--log-format ISO8601`: `2026-08-19T17:23:47Z E 4242 loader.py:88] message`
`--log-info/warning/error` switch each level on or off; `--log-verbose N` (N > 0) adds the
verbose (debug) lines; `--log-file` writes to a file instead of stderr. The engine's process
and each HTTP worker process (`endpoints/http_worker.py`) set their logs up here, the same
way, so a worker's lines (its pid in them) land where the engine's do."""

from __future__ import annotations

import logging
import os
import re
import time

from bertserve.settings import ServerSettings

__all__ = ["LOG_LINE", "TritonFormatter", "configure_logging"]

#: A line of the log in the default layout (the start-up lines on stdout are not log lines).
LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ [^ :]+:\d+\] ")

_LETTER = {"DEBUG": "I", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "E"}


class TritonFormatter(logging.Formatter):
    def __init__(self, iso8601: bool = False) -> None:
        super().__init__()
        self.iso8601 = iso8601

    def format(self, record: logging.LogRecord) -> str:
        letter = _LETTER.get(record.levelname, "I")
        where = f"{record.process} {record.filename}:{record.lineno}]"
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if self.iso8601:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
            return f"{stamp} {letter} {where} {message}"
        local = time.localtime(record.created)
        micros = int((record.created % 1) * 1_000_000)
        stamp = time.strftime("%m%d %H:%M:%S", local)
        return f"{letter}{stamp}.{micros:06d} {where} {message}"


class _Levels(logging.Filter):
    """Drops the levels switched off (tritonserver switches each level on its own)."""

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__()
        self.verbose = settings.log_verbose > 0
        self.info, self.warning, self.error = (
            settings.log_info,
            settings.log_warning,
            settings.log_error,
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return self.error
        if record.levelno >= logging.WARNING:
            return self.warning
        if record.levelno >= logging.INFO:
            return self.info
        return self.verbose


def configure_logging(settings: ServerSettings) -> None:
    if settings.log_file:
        handler: logging.Handler = logging.FileHandler(
            os.path.expanduser(settings.log_file), encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(TritonFormatter(iso8601=settings.log_format == "ISO8601"))
    handler.addFilter(_Levels(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if settings.log_verbose > 0 else logging.INFO)
    # One line per request and per batch: tritonserver's verbose log, so only with
    # --log-verbose (their loggers check isEnabledFor first, so off costs nothing).
    for per_request in ("bertserve.requests", "bertserve.batches"):
        logging.getLogger(per_request).setLevel(
            logging.INFO if settings.log_verbose > 0 else logging.WARNING
        )
    # Libraries' chatter stays at warnings unless asked for.
    for noisy in ("uvicorn", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
