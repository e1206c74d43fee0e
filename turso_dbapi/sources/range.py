"""``HttpRangeSource``: pages of a SQLite file on any static host, S3 or CDN, by HTTP Range.

Rules (numbered; the code tags them):

(1) open() is ONE ranged GET of the leading bytes (``Range: bytes=0-N``, never HEAD). The
    file size comes from ``Content-Range``, the page size from header offset 16 (big-endian
    u16; the value 1 means 65536). N is one aligned 4 KiB block (``DEFAULT_OPEN_BYTES``):
    page 1 of the common page sizes and nothing more. Reading the first segment instead
    (128 KiB) cost a cold point lookup ~14x its minimum bytes for at most one request fewer
    (issue 13); the pages a query needs next are fetched by the miss policy, on evidence.
(2) Every reply must be ``206`` with a ``Content-Range`` equal to the range asked for and a
    body of exactly that length. A short body or a wrong range is retried, then a
    ``ProtocolError``. ``Accept-Encoding: identity`` is sent and a ``Content-Encoding`` in
    the reply is refused: byte ranges of a compressed body do not address the file.
(3) A ``200`` carrying the whole file means the server ignores Range: the body is not read
    and ``RangeNotSupportedError`` is raised (unless (4) says the file changed).
(4) The version is pinned at open (ETag, Last-Modified, S3 ``x-amz-version-id``): a strong ETag is sent as ``If-Match`` and ``If-Range``;
    with only Last-Modified, it is sent as ``If-Unmodified-Since`` and ``If-Range``; a weak
    ETag cannot be used in either, so it is only compared. Every reply's ETag, Last-Modified
    and total size are compared with the pinned ones too (servers and CDNs that ignore the
    preconditions are still caught). Any difference, a 412 or a 416 raises
    ``RemoteChangedError``: pages of two versions are never mixed.
(5) fetch() asks one request per contiguous run of the requested pages (at most
    ``parallel`` runs at once) and drops pages past the pinned size; a last page shorter than the page
    size (a file not a multiple of it) is zero-padded, as SQLite reads it.
(6) Multi-range: several runs go in ONE request (``Range: bytes=a-b,c-d``, at most
    ``max_ranges`` runs and ``MAX_RANGE_HEADER`` characters per request; more runs: more
    requests, ``parallel`` at once). The ``multipart/byteranges`` reply is parsed strictly:
    every part needs a ``Content-Range`` with the pinned size, an exact body, and the parts
    must cover the runs asked (any order; a server may merge ranges into one part). A
    ``206`` with one range covering every run is accepted and sliced too. A server that
    answers a multi-range request with ``200`` (body not read), with one range that does
    not cover them all, or with parts that do not, disables multi-range for this source,
    and the runs are fetched by (7). (4) applies to
    multi-range replies unchanged (preconditions, validators, size).
(7) Without multi-range (refused, or ``max_ranges=1``), runs separated by a gap of at most
    ``coalesce_bytes`` go in one span (a small gap costs far less than a round trip),
    read as the aligned blocks of (9); the gap's bytes are dropped, only the pages asked
    are returned.
(8) Every fetched page must be plausible as a page of the pinned database
    (``storage/page_check.py``: page 1's header equal to the pinned one, sane B-tree
    headers, ...): a body of garbage with the right length is fetched again, up to
    ``retries`` times, then refused with a ``ProtocolError``; it is never cached.
(9) Every range asked is one aligned block of a few fixed sizes (``range_align``: one
    page, 4 KiB, 16 KiB, ... 4 MiB, starting at a multiple of its size), so the requests of
    many readers of one file hit the same CDN/S3 cache entries: a run is split into such
    blocks (one multi-range request, or one request each; (7)'s gap-filled spans too,
    widened to block boundaries within (7)'s bound so they stay few).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from ..errors import DatabaseError, ProtocolError, RangeNotSupportedError, RemoteChangedError
from ..storage.page_check import PageGeometry, freelist_leaves, header_problem, page_problem
from ..transport.http import (
    DEFAULT_RETRIES, DEFAULT_TIMEOUT, HttpClient, Reply, Retry, Signer, Token, TransientReplyError,
)
from ..transport.stats import SourceStats
from .range_align import aligned_blocks, page_runs, rounded_span
from .range_reply import (
    UNSATISFIED_RANGE,
    Validators,
    body_sink,
    content_range,
    encoding_error,
    is_encoded,
    parse_byteranges,
    version_string,
)

SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_OPEN_BYTES = 4096  # (1) page 1 of the common page sizes (<= 4096), one aligned block
DEFAULT_PARALLEL = 4  # concurrent runs per fetch(); the session pool holds 8 connections
DEFAULT_MAX_RANGES = 200  # runs per multi-range request (6); Apache's MaxRanges default
MAX_RANGE_HEADER = 4000  # characters of one Range header (nginx's default header buffer is 8k)
DEFAULT_COALESCE_BYTES = 128 * 1024  # (7) largest gap fetched to join two runs without multi-range

_Body = Union[bytes, bytearray, memoryview]  # a body, or one run's part of it


class _MultiRangeRefused(Exception):
    """The server answered a multi-range request with 200 or another single range (6)."""


def parse_page_size(header: bytes) -> int:
    """Page size from the 100-byte SQLite header (offset 16, big-endian; 1 means 65536)."""
    raw = int.from_bytes(header[16:18], "big")
    size = 65536 if raw == 1 else raw
    if size < 512 or size > 65536 or size & (size - 1):
        raise DatabaseError(f"file is not a database: invalid page size {raw} in the SQLite header")
    return size


class HttpRangeSource:
    """A ``PageSource`` over HTTP Range requests (see the module rules).

    Options mirror ``url.OPTIONS``: ``auth_token`` (str or callable), ``http_timeout``,
    ``retries`` (or a full ``retry`` policy), ``verify``, ``client_name``; plus ``headers``
    (extra request headers, e.g. an API key), ``open_bytes`` (leading bytes read by
    open(); page 1 needs a second request only when the page size is larger) and
    ``parallel`` (runs of one fetch() requested concurrently; 1 = one after another).
    ``sign`` and ``explain`` are the transport's per-request hooks (``transport.http``
    rules (3) and (6)); a subclass may pin the version in the URL (``_pinned_url``).
    Safe to use from several threads.
    """

    def __init__(
        self,
        url: str,
        *,
        auth_token: Token = None,
        headers: Optional[Mapping[str, str]] = None,
        http_timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        retry: Optional[Retry] = None,
        verify: Union[bool, str] = True,
        client_name: str = "turso-dbapi",
        open_bytes: int = DEFAULT_OPEN_BYTES,
        parallel: int = DEFAULT_PARALLEL,
        max_ranges: int = DEFAULT_MAX_RANGES,
        coalesce_bytes: int = DEFAULT_COALESCE_BYTES,
        stats: Optional[SourceStats] = None,
        http_deadline: Optional[float] = None,
        sign: Optional[Signer] = None,
        explain: Optional[Any] = None,
    ):
        self.stats = stats if stats is not None else SourceStats()
        extra = {"Accept-Encoding": "identity"}  # (2)
        extra.update(headers or {})
        self._http = HttpClient(
            url, auth_token=auth_token, headers=extra, timeout=http_timeout,
            retry=retry if retry is not None else Retry(total=retries), verify=verify,
            client_name=client_name, stats=self.stats, deadline=http_deadline, sign=sign, explain=explain,
        )
        self.display_url = self._http.display_url
        self.open_bytes = max(100, int(open_bytes))
        self.page_size = 0
        self.size = 0
        self.version = ""
        self._pinned: Optional[Validators] = None
        self._fetch_url: Optional[str] = None  # pages are read here (None: the URL itself)
        self._geometry: Optional[PageGeometry] = None  # of the pinned page 1 (8)
        self._free_leaves: Optional[Set[int]] = None
        self.parallel = max(1, int(parallel))
        self.max_ranges = max(1, int(max_ranges))  # 1: never multi-range
        self.multi_range = self.max_ranges > 1  # False once the server refused (6)
        self.coalesce_bytes = max(0, int(coalesce_bytes))  # (7)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()

    # Pages never change under an open source (a pinned version; a change raises
    # RemoteChangedError), so a background read-ahead may hold pages and store them later.
    pinned_pages = True

    @classmethod
    def from_options(cls, url: str, options: Mapping[str, Any], **extra: Any) -> HttpRangeSource:
        """Build from a parsed ``url.OPTIONS`` dict; options this source does not use are ignored."""
        keys = ("auth_token", "http_timeout", "http_deadline", "retries", "verify", "client_name")
        kwargs = {k: options[k] for k in keys if options.get(k) is not None}
        kwargs.update(extra)
        return cls(url, **kwargs)

    def __repr__(self) -> str:
        return f"<HttpRangeSource {self.display_url} version={self.version or '-'}>"

    @property
    def n_pages(self) -> int:
        return -(-self.size // self.page_size) if self.page_size else 0

    # -- open / revalidate ---------------------------------------------------------------

    def open(self) -> bytes:
        """One ranged GET: pin the version, learn size and page size (1), return leading bytes."""
        want_end = self.open_bytes - 1

        def read_body(reply: Reply) -> bool:
            return reply.status == 206 and not is_encoded(reply)

        def check(reply: Reply) -> Tuple[bytes, int, Validators]:
            if is_encoded(reply):
                raise encoding_error(reply)
            if reply.status == 200 and reply.headers.get("Content-Length") == "0":
                return b"", 0, Validators(reply.headers)  # nginx answers a range of an empty file so
            if reply.status == 200:
                raise RangeNotSupportedError(  # (3)
                    f"cannot read {self.display_url} lazily: the server ignored the Range header "
                    "(HTTP 200 with the whole file); use a server or CDN that supports byte ranges",
                    url=self.display_url, status=200,
                )
            if reply.status == 416:
                m = UNSATISFIED_RANGE.match(reply.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == 0:
                    return b"", 0, Validators(reply.headers)  # an empty file is an empty database
                raise self._http.error(reply, "cannot open remote database")
            if reply.status != 206:
                raise self._http.error(reply, "cannot open remote database")
            first, last, total = content_range(reply)
            if first != 0 or total is None or last != min(want_end, total - 1):
                raise TransientReplyError(f"wrong Content-Range {reply.headers.get('Content-Range')!r}"
                                          f" for bytes=0-{want_end}")
            body = reply.body or b""
            if len(body) != last + 1:
                raise TransientReplyError(f"short body: {len(body)} of {last + 1} bytes")
            return body, total, Validators(reply.headers)

        body, total, validators = self._http.request(
            "GET", headers={"Range": f"bytes=0-{want_end}"}, read_body=read_body, check=check,
            what="cannot open remote database",
        )
        if total == 0:
            page_size = 4096
        else:
            if len(body) < 100 or body[:16] != SQLITE_MAGIC:
                raise DatabaseError(f"file is not a database: {self.display_url} does not start with the SQLite header")
            page_size = parse_page_size(body)
            problem = header_problem(body, page_size)
            if problem is not None:
                raise DatabaseError(f"file is not a database: {self.display_url}: {problem}")
        self._pinned = validators
        self._fetch_url = self._pinned_url(validators)
        self.size = total
        self.page_size = page_size
        self.version = version_string(validators, total)
        self._geometry = PageGeometry(body[:page_size], page_size, self.n_pages) if total else None
        self._free_leaves = None
        return body[:self._plausible_prefix(body)] if total else body

    # -- page checks (8) -----------------------------------------------------------------
    # A body of garbage with the right length passes every HTTP check; cached, it would be
    # served (checksum-verified) forever. Pages that cannot belong to the pinned database
    # are fetched again, up to ``retries`` times, then refused with a ProtocolError.

    def _plausible_prefix(self, body: bytes) -> int:
        """Bytes of open()'s leading pages up to the first implausible one (those pages are
        fetched, and checked, when read)."""
        ps = self.page_size
        for i in range(len(body) // ps):
            if self._problems({i + 1: body[i * ps:(i + 1) * ps]}):
                return i * ps
        return len(body)

    def _problems(self, pages: Mapping[int, bytes]) -> Dict[int, str]:
        geo = self._geometry
        if geo is None:
            return {}
        bad = {p: why for p, page in pages.items() if (why := page_problem(p, page, geo))}
        if bad and geo.freelist_count:  # (4) a freelist leaf may hold anything
            if self._free_leaves is None:
                self._free_leaves = freelist_leaves(geo, lambda p: self._fetch_raw([p])[p])
            bad = {p: why for p, why in bad.items() if p not in self._free_leaves}
        return bad

    def _pinned_url(self, validators: Validators) -> Optional[str]:
        """The URL pages are read from after open() pinned ``validators`` (None: the same
        URL). S3 names the pinned object version in it (``versionId``)."""
        return None

    def revalidate(self, version: str) -> bool:
        """Open again (exactly one request) and tell whether the remote is still at ``version``.

        Afterwards the source is pinned to whatever version the remote has now, so a False
        answer means: drop what was cached for ``version`` and read from this source.
        """
        self.open()
        return self.version == version

    # -- fetch ---------------------------------------------------------------------------

    def fetch(self, pgnos: Sequence[int]) -> Dict[int, bytes]:
        """Pages by 1-based number at the pinned version (5); pages past the size are absent.
        Pages that cannot be pages of the pinned database are fetched again, then refused."""
        out = self._fetch_raw(pgnos)
        bad = self._problems(out)
        attempts = 1
        while bad:
            if attempts > self._http.retry.total:
                p, why = next(iter(sorted(bad.items())))
                raise ProtocolError(
                    f"{self.display_url} sent bytes that are not page {p} of the database it "
                    f"opened ({why}; {len(bad)} such page(s), {attempts} attempt(s)); the file or "
                    "a proxy or CDN on the way serves corrupt data. Nothing was cached",
                    url=self.display_url)
            attempts += 1
            self.stats.add(retries=1)
            again = self._fetch_raw(sorted(bad))
            out.update(again)
            bad = self._problems({p: again[p] for p in bad if p in again})
        return out

    def _fetch_raw(self, pgnos: Sequence[int]) -> Dict[int, bytes]:
        if self._pinned is None:
            raise RuntimeError("HttpRangeSource.fetch() before open()")
        n_pages = self.n_pages
        wanted = [p for p in pgnos if 1 <= p <= n_pages]
        out: Dict[int, bytes] = {}
        runs = page_runs(wanted)
        if not self.multi_range and self.coalesce_bytes >= self.page_size:  # (7)
            runs = [self._rounded(g[0][0], g[-1][1]) for g in self._coalesced(runs)]
        blocks = self._blocks(runs)  # (9)
        if self.multi_range:
            groups = self._groups(blocks) if len(blocks) > 1 else [[b] for b in blocks]
        else:
            groups = [[b] for b in blocks]
        if len(groups) > 1 and self.parallel > 1:
            datas = list(self._executor().map(self._read_group, groups))
        else:
            datas = [self._read_group(group) for group in groups]
        ps = self.page_size
        for group, parts in zip(groups, datas):
            for (first, last), data in zip(group, parts):
                view = memoryview(data)  # one copy per page, none of the whole body
                for i, p in enumerate(range(first, last + 1)):
                    page = view[i * ps:(i + 1) * ps].tobytes()
                    out[p] = page if len(page) == ps else page.ljust(ps, b"\x00")
        if len(out) > len(wanted):  # a gap filled by (7): only the pages asked are returned
            asked = set(wanted)
            out = {p: page for p, page in out.items() if p in asked}
        self.stats.add(pages=len(out))
        return out

    def _rounded(self, first: int, last: int) -> Tuple[int, int]:
        """(9) A gap-filled span widened to block boundaries (``range_align`` R3)."""
        return rounded_span(first, last, self.page_size, self.n_pages, self.coalesce_bytes // self.page_size)

    def _blocks(self, runs: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
        """(9) Runs as aligned blocks of a few fixed sizes (``range_align``)."""
        ps = self.page_size
        return [b for first, last in runs for b in aligned_blocks(first, last, ps)]

    def _byte_range(self, first: int, last: int) -> Tuple[int, int]:
        return (first - 1) * self.page_size, min(last * self.page_size, self.size) - 1

    def _coalesced(self, runs: List[Tuple[int, int]]) -> List[List[Tuple[int, int]]]:
        """(7) Runs grouped by small gaps: each group is one ranged request."""
        gap_pages = self.coalesce_bytes // self.page_size
        groups: List[List[Tuple[int, int]]] = []
        for run in runs:
            if groups and run[0] - groups[-1][-1][1] - 1 <= gap_pages:
                groups[-1].append(run)
            else:
                groups.append([run])
        return groups

    def _groups(self, runs: List[Tuple[int, int]]) -> List[List[Tuple[int, int]]]:
        """Runs in groups of one multi-range request each (6)."""
        groups: List[List[Tuple[int, int]]] = []
        length = 0
        for run in runs:
            a, b = self._byte_range(*run)
            item = len(f"{a}-{b},")
            if not groups or len(groups[-1]) >= self.max_ranges or length + item > MAX_RANGE_HEADER:
                groups.append([])
                length = len("bytes=")
            groups[-1].append(run)
            length += item
        return groups

    def _read_group(self, group: List[Tuple[int, int]]) -> List[_Body]:
        if len(group) == 1:
            return [self._read_run(*group[0])]
        if self.multi_range:
            try:
                return self._read_multi(group)
            except _MultiRangeRefused:
                self.multi_range = False
        return self._read_runs(group)

    def _read_runs(self, runs: List[Tuple[int, int]]) -> List[_Body]:
        """One ranged request per span of runs whose gaps are small (7); bodies per run."""
        spans = self._coalesced(runs) if self.coalesce_bytes >= self.page_size else [[run] for run in runs]
        out: List[_Body] = []
        ps = self.page_size
        for span in spans:
            first, last = self._rounded(span[0][0], span[-1][1])
            parts = [self._read_run(a, b) for a, b in self._blocks([(first, last)])]  # (9)
            view = memoryview(b"".join(parts) if len(parts) > 1 else parts[0])
            out.extend(view[(a - first) * ps:(b - first + 1) * ps] for a, b in span)
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="tdb-range")
            return self._pool

    def _read_run(self, first: int, last: int) -> _Body:
        ps = self.page_size
        start = (first - 1) * ps
        end = min(last * ps, self.size) - 1
        pinned = self._pinned
        assert pinned is not None
        headers = {"Range": f"bytes={start}-{end}"}
        headers.update(pinned.preconditions())  # (4)
        buf, sink = body_sink()

        def read_body(reply: Reply) -> bool:
            return reply.status == 206 and not is_encoded(reply) and pinned.differs(reply.headers) is None

        def check(reply: Reply) -> bytes:
            change = pinned.differs(reply.headers)
            if reply.status == 412 or (reply.status == 416) or change:
                raise self._changed(change or f"{pinned.describe()} -> another version (HTTP {reply.status})",
                                    reply)
            if is_encoded(reply):
                raise encoding_error(reply)
            if reply.status == 200:
                raise RangeNotSupportedError(  # (3)
                    f"cannot read {self.display_url} lazily: the server ignored the Range header "
                    "(HTTP 200 with the whole file); use a server or CDN that supports byte ranges",
                    url=self.display_url, status=200,
                )
            if reply.status != 206:
                raise self._http.error(reply, f"cannot read pages {first}-{last}")
            got_first, got_last, total = content_range(reply)
            if total is not None and total != self.size:
                raise self._changed(f"size {self.size} -> {total} bytes", reply)
            if (got_first, got_last) != (start, end):
                raise TransientReplyError(f"wrong Content-Range {reply.headers.get('Content-Range')!r}"
                                          f" for bytes={start}-{end}")
            if len(buf) != end - start + 1:
                raise TransientReplyError(f"short body: {len(buf)} of {end - start + 1} bytes")
            return buf

        return self._http.request("GET", self._fetch_url, headers=headers, read_body=read_body, check=check,
                                  what=f"cannot read pages {first}-{last}", sink=sink)

    def _read_multi(self, group: List[Tuple[int, int]]) -> List[bytes]:
        """One multi-range request for several runs (6); bodies in the order of ``group``."""
        ranges = [self._byte_range(*run) for run in group]
        pinned = self._pinned
        assert pinned is not None
        spec = ",".join(f"{a}-{b}" for a, b in ranges)
        headers = {"Range": f"bytes={spec}"}
        headers.update(pinned.preconditions())  # (4)
        buf, sink = body_sink()
        what = f"cannot read pages {group[0][0]}-{group[-1][1]} ({len(group)} runs)"

        def read_body(reply: Reply) -> bool:
            return reply.status == 206 and not is_encoded(reply) and pinned.differs(reply.headers) is None

        def check(reply: Reply) -> List[bytes]:
            change = pinned.differs(reply.headers)
            if reply.status == 412 or reply.status == 416 or change:
                raise self._changed(change or f"{pinned.describe()} -> another version (HTTP {reply.status})",
                                    reply)
            if is_encoded(reply):
                raise encoding_error(reply)
            if reply.status == 200:
                raise _MultiRangeRefused()  # body not read; per-run requests tell the rest (3)
            if reply.status != 206:
                raise self._http.error(reply, what)
            body = bytes(buf)
            ctype = reply.headers.get("Content-Type", "")
            if not ctype.lower().lstrip().startswith("multipart/byteranges"):
                got_first, got_last, total = content_range(reply)
                if total is not None and total != self.size:
                    raise self._changed(f"size {self.size} -> {total} bytes", reply)
                if len(body) != got_last - got_first + 1:
                    raise TransientReplyError(f"short body: {len(body)} of {got_last - got_first + 1} bytes")
                if got_first <= ranges[0][0] and got_last >= ranges[-1][1]:  # merged by the server
                    return [body[a - got_first:b - got_first + 1] for a, b in ranges]
                raise _MultiRangeRefused()
            parts = parse_byteranges(body, ctype)
            for _first, _last, total, _data in parts:
                if total is not None and total != self.size:
                    raise self._changed(f"size {self.size} -> {total} bytes", reply)
            out: List[_Body] = []
            for a, b in ranges:  # each range asked, from the part that holds it (servers may merge)
                part = next((p for p in parts if p[0] <= a and b <= p[1]), None)
                if part is None:
                    raise _MultiRangeRefused()  # parts that do not cover what was asked
                out.append(memoryview(part[3])[a - part[0]:b - part[0] + 1])
            return out

        return self._http.request("GET", self._fetch_url, headers=headers, read_body=read_body, check=check,
                                  what=what, sink=sink)

    def _changed(self, change: str, reply: Reply) -> RemoteChangedError:
        return RemoteChangedError(
            f"remote database changed since it was opened: {change}; reopen to read the new version"
            f" ({self.display_url})",
            url=self.display_url, status=reply.status,
        )

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self._http.close()

    def __enter__(self) -> HttpRangeSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
