"""What the environment says about a request (proxies, ``NO_PROXY``, a CA bundle), read
once per scheme and host instead of at every request.

Why: ``requests.Session.request`` scans ``os.environ`` twice per request
(``merge_environment_settings``: ~0.1 ms with a small environment, more with a large one),
about a tenth of a cold Turso point lookup's client CPU (benchmarks/cold_breakdown.py).
``send`` is ``Session.request(method, url, headers=..., data=..., stream=True,
verify=..., allow_redirects=True, timeout=...)`` step for step, with that lookup cached:
the same answer unless the environment changes while the client lives.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple, Union

import requests


class EnvironSettings:
    def __init__(self, verify: Union[bool, str]):
        self.verify = verify
        self._by_host: Dict[str, Dict[str, Any]] = {}
        self._lock = threading.Lock()

    def settings(self, session: requests.Session, url: str) -> Dict[str, Any]:
        """``session.merge_environment_settings`` for ``url``, once per scheme://host."""
        key = "/".join(url.split("/", 3)[:3])
        found = self._by_host.get(key)
        if found is None:
            found = session.merge_environment_settings(url, {}, True, self.verify, None)
            with self._lock:
                self._by_host[key] = found
        return dict(found, proxies=dict(found["proxies"]))  # send may fill in the copy

    def send(self, session: requests.Session, method: str, url: str, headers: Dict[str, str],
             data: Optional[bytes], timeout: Tuple[float, float]) -> requests.Response:
        prep = session.prepare_request(requests.Request(method, url, headers=headers, data=data or {}))
        return session.send(prep, timeout=timeout, allow_redirects=True, **self.settings(session, prep.url))
