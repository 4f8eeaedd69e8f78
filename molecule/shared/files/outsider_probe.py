"""Probe a deployment from a host that holds no credentials and is in no inventory group.

Run inside the outsider container as ``python3 - PLAN_JSON < outsider_probe.py``. The plan::

    {"closed": [["192.168.57.11", 5432], ...],       # must not accept a TCP connection
     "open": [["192.168.57.11", 443], ...],          # must accept one (proves the probe can see)
     "redirect": ["http://192.168.57.11/"],          # plain HTTP: a redirect to https, nothing else
     "https": ["https://192.168.57.11/health"],      # TLS verified against the CA, HSTS on
     "ca": "-----BEGIN CERTIFICATE-----..."}         # the deployment's CA (public)

Prints one JSON line per check and exits 1 when any check fails. Only the standard library: the
outsider is a bare Debian image.
"""

import http.client
import json
import socket
import ssl
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

CONNECT_TIMEOUT_S = 3.0


def tcp_state(host: str, port: int) -> str:
    """'open', 'refused' or 'timeout': a dropped SYN times out, a rejected one is refused."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"


def check_redirect(url: str) -> dict:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
    conn.request("GET", parts.path or "/")
    response = conn.getresponse()
    body = response.read().decode(errors="replace")
    location = response.getheader("Location") or ""
    ok = response.status in (301, 308) and location.startswith("https://") and "superset" not in body.lower()
    return {"check": "redirect", "url": url, "status": response.status, "location": location, "ok": ok}


def check_https(url: str, ca_pem: str) -> dict:
    context = ssl.create_default_context(cadata=ca_pem)
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=10, context=context)
    conn.request("GET", parts.path or "/")
    response = conn.getresponse()
    body = response.read().decode(errors="replace").strip()
    hsts = response.getheader("Strict-Transport-Security") or ""
    ok = response.status == 200 and "max-age=" in hsts
    return {"check": "https", "url": url, "status": response.status, "hsts": hsts, "body": body[:40], "ok": ok}


def main() -> int:
    plan = json.loads(sys.argv[1])
    ca_pem = plan.get("ca", "")
    results: list[dict] = []
    ports = [(host, int(port), "closed") for host, port in plan.get("closed", [])]
    ports += [(host, int(port), "open") for host, port in plan.get("open", [])]
    with ThreadPoolExecutor(max_workers=32) as pool:
        states = list(pool.map(lambda item: tcp_state(item[0], item[1]), ports))
    for (host, port, expected), state in zip(ports, states, strict=True):
        ok = (state == "open") == (expected == "open")
        results.append({"check": "tcp", "host": host, "port": port, "expected": expected, "state": state, "ok": ok})
    for url in plan.get("redirect", []):
        try:
            results.append(check_redirect(url))
        except OSError as error:
            results.append({"check": "redirect", "url": url, "error": str(error), "ok": False})
    for url in plan.get("https", []):
        try:
            results.append(check_https(url, ca_pem))
        except (OSError, ssl.SSLError) as error:
            results.append({"check": "https", "url": url, "error": str(error), "ok": False})
    for result in results:
        print(json.dumps(result, sort_keys=True))
    return 0 if results and all(result["ok"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
