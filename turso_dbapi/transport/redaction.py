"""Secrets out of third-party log lines: urllib3 logs each request's URL at DEBUG.

Our own log lines use ``url.redact`` already. urllib3's connection pool logs
``"GET /db?token=<secret> HTTP/1.1" 200`` (and its retry and redirect helpers log whole
URLs); a presigned or token-carrying URL cannot move its secret into a header, so a filter
on those loggers rewrites the record's text with ``url.redact_text`` before any handler
sees it. Installed once, when the transport is imported; records without a secret pass
unchanged.
"""

from __future__ import annotations

import logging

from ..url import redact_text

URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager", "urllib3.connection")


class SecretFilter(logging.Filter):
    """Replaces a record's message with its redacted text (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        clean = redact_text(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


_FILTER = SecretFilter()


def install() -> None:
    for name in URLLIB3_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
