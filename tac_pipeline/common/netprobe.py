"""One bounded question before any download: can this machine reach that host at all?"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from typing import Any


def reachable(url: str, timeout: float) -> tuple[bool, str]:
    """Can a TCP connection be opened to ``url``'s host (or the proxy for it) within ``timeout`` seconds?

    Runs in a daemon thread so that DNS resolution, which socket timeouts do not bound, is bounded too.
    Returns ``(True, "")`` or ``(False, why)``.
    """
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parsed.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or 8080
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=probe, name="tac-net-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if result.get("ok"):
        return True, ""
    return False, result.get("error", f"no answer within {timeout:g} s")
