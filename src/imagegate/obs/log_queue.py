"""Log records written by a thread, not by the event loop.

A ``StreamHandler`` formats the record (JSON) and writes it (a syscall that can block on a
full pipe or a slow disk) in the thread that logs: for the access log, the event loop, once
per request. Here the loop only puts the record on a queue; a ``QueueListener`` thread
formats and writes it. The request id, a context variable the formatter would read in the
wrong thread, is copied onto the record first.
"""

from __future__ import annotations

import atexit
import logging
import queue
from logging.handlers import QueueHandler, QueueListener

from imagegate.obs.logs import request_id_var

_listener: QueueListener | None = None


class _ContextQueueHandler(QueueHandler):
    """Queues the record itself: no formatting in the logging thread (the default
    ``prepare`` formats the message there)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if not hasattr(record, "request_id"):
            request_id = request_id_var.get()
            if request_id:
                record.request_id = request_id
        return record


def threaded(handler: logging.Handler) -> logging.Handler:
    """A handler that hands records to ``handler`` on a background thread.

    Replaces the thread of an earlier call (its queue is drained first); the last one is
    drained at exit, so no line is lost on a clean shutdown.
    """
    global _listener
    stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = QueueListener(records, handler, respect_handler_level=True)
    _listener.start()
    return _ContextQueueHandler(records)


def stop() -> None:
    """Write out what is queued and end the thread."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop)
