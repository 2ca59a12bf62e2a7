"""``Idempotency-Key`` records of the generation pipeline: what a replay returns, stored without
image bytes, and completed on every path once a request was charged.

A response's ``b64_json`` images are put in the image store and the record keeps only
their file ids (``b64_json_file``); a replay reads them back. So the database never holds
image bytes for 24 hours, and a replay returns the same images. A stream's record is its
completed event, replayed as a one-event stream.

The record is completed in the same transaction as the settlement, so a request is
charged exactly when its record says so; a store that is down only costs the replay its
images.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from imagegate.accounts.idempotency import StoredResponse, complete_in
from imagegate.core.types import OUTPUT_FORMATS, OutputFormat
from imagegate.generation.services import Services

log = logging.getLogger("imagegate.idempotency")

REF = "b64_json_file"
EVENT_HEADER = "x-imagegate-stream-event"  # kept in a stream's record: the event's type


class Record:
    """The claimed ``Idempotency-Key`` of one request in flight.

    The response is stored by the settlement's own transaction (:meth:`writer`), so a
    request is charged exactly when its record is completed: no outage between the two can
    leave a charged request whose retry runs again.
    """

    def __init__(self, gw: Services, key_id: str, idem_key: str) -> None:
        self.gw = gw
        self.key_id = key_id
        self.idem_key = idem_key
        self.finished = False

    async def prepare(self, status: int, headers: dict[str, str], payload: Any) -> StoredResponse:
        """The response to keep, its images put in the store; never raises (a store that
        is down leaves the response without its images). ``payload`` is left as it is:
        the dicts that lose their images are copied (the base64 strings are not)."""
        kept = {k: v for k, v in headers.items() if k.startswith("x-imagegate-")}
        payload = _detached(payload)
        try:
            body = orjson.dumps(await _stash(self.gw, payload))
        except Exception as exc:
            log.warning("images not kept for an idempotent replay", extra={"error": str(exc)})
            body = orjson.dumps(_strip(payload))
        return StoredResponse(status, kept, body)

    def writer(self, stored: StoredResponse) -> Callable[[Connection], None]:
        """The write that completes the record, to run in the settlement's transaction."""

        def write(conn: Connection) -> None:
            complete_in(conn, self.key_id, self.idem_key, stored)

        return write

    def settled(self) -> None:
        """The settlement (and with it the record) committed: nothing left to undo."""
        self.finished = True

    async def abandon(self) -> None:
        """Nothing was charged: delete the record so that a retry runs; never raises."""
        if self.finished:
            return
        self.finished = True
        try:
            await _shielded(self.gw.idempotency.abandon, self.key_id, self.idem_key)
        except Exception as exc:  # the pending record then expires after its TTL
            log.warning("idempotency record not abandoned", extra={"error": str(exc)})


async def _shielded(func: Any, *args: Any) -> None:
    await asyncio.shield(asyncio.ensure_future(run_in_threadpool(func, *args)))


def items_of(payload: Any) -> list[dict[str, Any]]:
    """The image objects of a response body (``data``) or of a stream event (itself)."""
    if not isinstance(payload, dict):
        return []
    if isinstance(payload.get("data"), list):
        return [item for item in payload["data"] if isinstance(item, dict)]
    return [payload]


def _detached(payload: Any) -> Any:
    """A copy of ``payload`` whose image objects can be changed without changing the
    response: the body (or event) and its ``data`` items are new dicts, their values shared.
    Cheaper than a JSON round trip, which copies megabytes of base64."""
    if not isinstance(payload, dict):
        return payload
    copy = dict(payload)
    if isinstance(copy.get("data"), list):
        copy["data"] = [dict(item) if isinstance(item, dict) else item for item in copy["data"]]
    return copy


async def _stash(gw: Services, payload: Any) -> Any:
    for item in items_of(payload):
        data = item.get("b64_json")
        if data is not None:
            item[REF] = await gw.store.put(base64.b64decode(data), _format(item, payload))
            del item["b64_json"]
    return payload


def _format(item: dict[str, Any], payload: dict[str, Any]) -> OutputFormat:
    """The file extension to store under (the bytes are returned as they were)."""
    for value in (item.get("output_format"), payload.get("output_format")):
        if value in OUTPUT_FORMATS:
            fmt: OutputFormat = value
            return fmt
    return "png"


def _strip(payload: Any) -> Any:
    for item in items_of(payload):
        if item.pop("b64_json", None) is not None:
            item[REF] = None
    return payload
