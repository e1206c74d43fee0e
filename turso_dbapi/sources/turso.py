"""``TursoSyncSource``: pages of a Turso sync server over ``POST /pull-updates``.

Spec: shared/spec/turso-sync-protocol.md §1.2 (headers), §1.3 (status handling), §2
(messages, framing, 0-based page ids, omitted pages), §2.8 (request shapes).

One source per connection; it owns the connection's HTTP client and network counters
(``SourceStats``: requests, request-body bytes sent, response-body bytes received, pages).
Lazy fetches (``fetch``) are pinned to ``pinned_revision``, which the replica moves to the
latest synced revision after each pull (see ``sync.replica`` for why that is safe).

The server's page 1 says "WAL" (bytes 18/19 = 2); every page 1 this source returns is
patched to 1/1 (``storage.header.rollback_journal``): a bootstrap starts from a
rollback-journal file (DESIGN §2.5), which a new replica then switches to WAL (its default,
``journal_mode``), and a WAL replica's pulls set 2/2 again (``sync.wal_plan.page1_for_wal``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Mapping, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..protocol import roaring
from ..protocol.revision import same_history
from ..errors import HistoryResetError, ProtocolError, RemoteError
from ..transport.http import HttpClient, Reply, TransientReplyError, client_from_options
from ..protocol.protobuf import DecodeError
from ..storage.page_check import header_problem, in_header_size
from ..protocol.sync_wire import (
    APPLY_INCREMENTAL,
    PAGE_SIZE,
    STREAM_PAGES,
    PageData,
    PageRun,
    PullUpdatesRequest,
    PullUpdatesResponseHeader,
    PullUpdatesStreamParser,
)
from ..storage.header import rollback_journal
from ..url import normalize_remote_url, redact
from ..transport.stats import SourceStats

PULL_PATH = "/pull-updates"
_EXCERPT = 300
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


def history_reset(display_url: str, what: str, detail: str) -> HistoryResetError:
    return HistoryResetError(
        f"{what}: {display_url} no longer has the history this replica is based on: the "
        f"server's revisions were reset ({detail}). Nothing was changed and no page of the "
        "new history was mixed in; bootstrap a fresh replica (another local_path, or move "
        "this replica's files away) to read the server's new state", url=display_url)


def base_url(url: str) -> str:
    """The server's base URL: libsql:// and turso:// mean https://; no trailing slash, no
    query string (endpoints are built from the path; libSQL's ``?authToken=`` became the
    auth_token option before this, see ``url.split_url_options``)."""
    parts = urlsplit(normalize_remote_url(url))
    return urlunsplit(parts._replace(path=parts.path.rstrip("/"), query="", fragment=""))


def endpoint_url(url: str, path: str) -> str:
    """``path`` under the server's base path, keeping other query parameters."""
    parts = urlsplit(normalize_remote_url(url))
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path, fragment=""))


class PullReply:
    """A parsed ``/pull-updates`` reply: the header and the pages (1-based pgno -> bytes)."""

    def __init__(self, header: PullUpdatesResponseHeader, pages: Dict[int, bytes]):
        self.header = header
        self.pages = pages

    @property
    def revision(self) -> str:
        return self.header.server_revision

    @property
    def db_size(self) -> int:  # pages
        return int(self.header.db_size)


class TursoSyncSource:
    """A ``PageSource`` over ``/pull-updates`` (see the module docstring)."""

    page_size = PAGE_SIZE

    def __init__(self, url: str, options: Mapping[str, Any], *, pinned_revision: str = "",
                 size: int = 0, client: Optional[HttpClient] = None,
                 pin: Optional[Callable[[], Optional[str]]] = None,
                 page_observer: Optional[Callable[[int, bytes], None]] = None):
        """``pinned_revision``: the revision lazy fetches use; ``pin`` (a replica's: it reads
        the synced revision from the metadata) moves it before each fetch, None keeps it.
        ``page_observer(pgno, page)`` sees every page a fetch returns (B-tree hints).
        ``client``: an HTTP client (and its counters) to carry on, e.g. the bootstrap's."""
        self.url = base_url(url)
        self.display_url = redact(self.url)
        self.endpoint = endpoint_url(url, PULL_PATH)
        self.stats = SourceStats()
        name = str(options.get("client_name") or "turso-dbapi")
        # §1.2: User-Agent is exactly client_name; accept-encoding is NOT a compression ask.
        headers = {"User-Agent": name, "content-type": "application/protobuf",
                   "accept-encoding": "application/protobuf"}
        # Statuses reach check() so their body lands in the message (§1.3); check() marks
        # the transient ones for retry itself: the client's policy retries no status.
        self.http = client or client_from_options(self.url, options, stats=self.stats, headers=headers,
                                                  retry_statuses=frozenset())
        if client is not None:  # another source's client (the bootstrap's), configured the same
            self.stats = client.stats
        self.long_poll_timeout_ms = int(options.get("long_poll_timeout_ms") or 0)
        self.pinned_revision = pinned_revision
        self._pin = pin
        self._page_observer = page_observer
        self.size = size
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self.pinned_revision

    def open(self) -> bytes:
        """PageSource.open: nothing to pin (the replica's metadata holds the revision)."""
        return b""

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"<TursoSyncSource {self.display_url} @{self.pinned_revision!r}>"

    # -- the one request ---------------------------------------------------------------

    def pull_updates(self, req: PullUpdatesRequest, what: str, *,
                     on_header: Optional[Callable[[PullUpdatesResponseHeader], None]] = None,
                     on_page: Optional[Callable[[int, bytes], None]] = None,
                     on_reset: Optional[Callable[[], None]] = None,
                     selected: Optional[Callable[[int], bool]] = None,
                     on_pages: Optional[Callable[[PageRun], None]] = None) -> PullReply:
        """POST one request; the parsed reply. Errors name the URL and what to do.

        The body is parsed as it arrives (64 KiB chunks). With ``on_page`` each page goes
        there instead of into the reply (a full bootstrap never holds the database in
        memory); ``on_pages`` (with ``on_page``) takes whole runs of pages at once, as
        ``PageRun`` with 1-based ``page_ids`` (one store call per chunk instead of one per
        page; page 1 always goes to ``on_page``); ``on_header`` runs first, ``on_reset``
        when a retry starts over.
        ``selected(page_id)`` says whether the request's selector asked for a page: a
        page it did not ask for is a protocol error (§2.6), refused before it is stored.
        """
        rx = _Receiver(self, what, on_header, on_page, on_reset, selected,
                       latest=not req.server_revision, on_pages=on_pages)

        def check(reply: Reply) -> PullReply:
            if reply.status != 200:
                excerpt = self.http.redact(bytes(rx.error_body).decode("utf-8", "replace").strip())
                text = f"remote server returned an error: status={reply.status}, body={excerpt!r}"
                if reply.status in _TRANSIENT:
                    raise TransientReplyError(f"{text}; the server failed: retry later")
                if reply.status == 410:  # our reference server: a revision of a lost history
                    raise history_reset(self.display_url, what, f"HTTP 410: {excerpt!r}")
                raise RemoteError(
                    f"{what}: {text} ({reply.where()}); check the URL, the auth token and "
                    "the server's log", url=self.display_url, status=reply.status)
            return rx.finish()

        try:
            # /pull-updates only reads, so a retry after a lost reply is harmless: idempotent.
            return self.http.request("POST", self.endpoint, data=req.encode(), idempotent=True,
                                     read_body=rx.read_body, sink=rx.sink, check=check, what=what)
        except DecodeError as exc:
            raise ProtocolError(f"{what}: bad /pull-updates reply from {self.display_url}: {exc}; "
                                "is this a Turso sync server?", url=self.display_url) from None

    def _check_header(self, hdr: PullUpdatesResponseHeader, what: str) -> None:
        problem = None
        if hdr.zstd_encoding is not None:
            problem = "zstd encoding is not supported"
        elif hdr.stream_kind != STREAM_PAGES:
            problem = f"stream_kind {hdr.stream_kind} (MVCC logical log) is not supported; only page streams"
        elif hdr.apply_mode != APPLY_INCREMENTAL:
            problem = f"apply_mode {hdr.apply_mode} (replace-base) is not supported"
        if problem:
            raise ProtocolError(f"{what}: {self.display_url}: {problem}", url=self.display_url)

    # -- request shapes (§2.8) -----------------------------------------------------------

    def bootstrap(self, *, prefix_pages: Optional[int] = None, query: Optional[str] = None,
                  sink: Any = None) -> PullReply:
        """A bootstrap request (§2.8); ``sink`` (on_header/on_page/on_reset) takes the pages."""
        selected: Optional[Callable[[int], bool]] = None
        if query is not None:
            req = PullUpdatesRequest(server_query_selector=query)
        elif prefix_pages is not None:
            req = PullUpdatesRequest(server_pages_selector=roaring.serialize_range(0, prefix_pages))
            selected = prefix_pages.__gt__  # page ids [0, prefix_pages)
        else:
            req = PullUpdatesRequest()  # full: a zero-byte body
        if sink is None:
            return self.pull_updates(req, "bootstrap", selected=selected)
        return self.pull_updates(req, "bootstrap", on_header=sink.on_header, on_page=sink.on_page,
                                 on_reset=sink.on_reset, selected=selected,
                                 on_pages=getattr(sink, "on_pages", None))

    def changes_since(self, client_revision: str, **stream: Any) -> PullReply:
        """An incremental pull; ``stream`` (on_page, on_pages, on_reset) takes the pages as
        they arrive."""
        req = PullUpdatesRequest(client_revision=client_revision,
                                 long_poll_timeout_ms=self.long_poll_timeout_ms)
        return self.pull_updates(req, "pull", **stream)

    def fetch_at(self, pgnos: Sequence[int], revision: str) -> PullReply:
        ids = {p - 1 for p in pgnos}
        req = PullUpdatesRequest(server_revision=revision, server_pages_selector=roaring.serialize(ids))
        return self.pull_updates(req, f"fetching {len(pgnos)} page(s)", selected=ids.__contains__)

    def fetch(self, pgnos: Sequence[int]) -> Dict[int, bytes]:
        """PageSource.fetch at the pinned revision; pages beyond the server size are absent."""
        if not pgnos:
            return {}
        revision = self.current_pin()
        reply = self.fetch_at(pgnos, revision)
        if not same_history(revision, reply.revision):  # never pages of another history
            raise history_reset(self.display_url, f"fetching pages at revision {revision!r}",
                                f"it answered with revision {reply.revision!r}")
        pages = reply.pages
        omitted = [p for p in pgnos if p not in pages]
        # §2.6: a server may only omit pages at or past its size (0-based id >= db_size).
        bad = [p for p in omitted if p - 1 < reply.db_size]
        if bad:
            raise ProtocolError(
                f"{self.display_url} omitted page(s) {bad[:5]} although its database has "
                f"{reply.db_size} pages at revision {reply.revision!r}", url=self.display_url)
        wanted = set(pgnos)
        out = {p: data for p, data in pages.items() if p in wanted}
        observer = self._page_observer
        if observer is not None:
            for p, data in out.items():
                observer(p, data)
        return out

    def current_pin(self) -> str:
        """The revision lazy fetches use now: what ``pin()`` says (the replica reads its
        metadata, so a pull by any process moves this pin too), else the last one known."""
        revision = self._pin() if self._pin is not None else None
        with self._lock:
            if revision is not None:
                self.pinned_revision = revision
            return self.pinned_revision


class _Receiver:
    """Parses one /pull-updates body chunk by chunk (the HTTP layer's ``sink``)."""

    def __init__(self, source: TursoSyncSource, what: str,
                 on_header: Optional[Callable[[PullUpdatesResponseHeader], None]],
                 on_page: Optional[Callable[[int, bytes], None]],
                 on_reset: Optional[Callable[[], None]],
                 selected: Optional[Callable[[int], bool]] = None, latest: bool = False,
                 on_pages: Optional[Callable[[PageRun], None]] = None):
        self.source, self.what = source, what
        self.on_header, self.on_page, self.on_reset = on_header, on_page, on_reset
        self.on_pages = on_pages if on_page is not None else None
        self.selected = selected
        # At the latest revision, db_size is the size page 1 records (a historic page 1
        # may differ: servers report the current size, spec §2.6 caveat).
        self.latest = latest
        self.status = 0
        self.error_body = bytearray()
        self._start()

    def _start(self) -> None:
        self.parser = PullUpdatesStreamParser(PAGE_SIZE)
        self.pages: Dict[int, bytes] = {}
        self.count = 0

    def read_body(self, reply: Reply) -> bool:
        self.status = reply.status
        return True

    def sink(self, chunk: Optional[bytes]) -> None:
        if chunk is None:  # the HTTP layer retries: start over
            self.error_body.clear()
            self._start()
            if self.on_reset is not None:
                self.on_reset()
            return
        if self.status != 200:
            self.error_body += chunk[:max(0, _EXCERPT - len(self.error_body))]
            return
        for msg in self.parser.feed_runs(chunk):
            if isinstance(msg, PageRun):
                self._run(msg)
            elif isinstance(msg, PageData):
                if self.selected is not None and not self.selected(msg.page_id):
                    raise DecodeError(f"page_id {msg.page_id} was not asked for")
                self._page(msg.page_id + 1, msg.encoded_page)
            else:
                self.source._check_header(msg, self.what)
                if self.on_header is not None:
                    self.on_header(msg)

    def _run(self, run: PageRun) -> None:
        """A run of pages: checked as ``_page`` checks each, handed on whole when the sink
        takes runs and page 1 (checked and patched on its own) is not in it."""
        ids = run.page_ids
        if self.selected is not None:
            for pid in ids:
                if not self.selected(pid):
                    raise DecodeError(f"page_id {pid} was not asked for")
        if self.on_pages is None or 0 in ids:
            for i, pid in enumerate(ids):
                self._page(pid + 1, run.page(i))
            return
        self._check_size()
        self.count += len(ids)
        self.on_pages(PageRun(run.buf, [pid + 1 for pid in ids], run.offsets))

    def _check_size(self) -> None:
        hdr = self.parser.header
        if hdr is not None and hdr.db_size <= 0:
            raise ProtocolError(f"{self.what}: {self.source.display_url} sent pages with db_size 0",
                                url=self.source.display_url)

    def _page(self, pgno: int, data: bytes) -> None:
        self._check_size()
        hdr = self.parser.header
        if pgno == 1:
            problem = header_problem(data, PAGE_SIZE)
            if problem is not None:  # refused before anything is stored (issue 14, item 5)
                raise DecodeError(f"page 1 is not a database header: {problem}")
            recorded = in_header_size(data)
            if self.latest and hdr is not None and recorded is not None and recorded != hdr.db_size:
                raise DecodeError(f"db_size {hdr.db_size} disagrees with page 1, which records "
                                  f"{recorded} pages")
            data = rollback_journal(data)
        self.count += 1
        if self.on_page is not None:
            self.on_page(pgno, data)
        else:
            self.pages[pgno] = data

    def finish(self) -> PullReply:
        header = self.parser.finish()
        self.source.stats.add(pages=self.count)
        return PullReply(header, self.pages)


__all__ = ["TursoSyncSource", "PullReply", "base_url"]
