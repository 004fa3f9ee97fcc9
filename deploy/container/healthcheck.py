"""The image's HEALTHCHECK: GET /healthz on the address the recorder listens on.

Reads TSRECORDER_LISTEN as the recorder does, so the check follows a changed listen address;
a wildcard address is asked on loopback. Standard library only: the slim image has no curl.
"""

import os
import sys
import urllib.request

listen = os.environ.get("TSRECORDER_LISTEN", "0.0.0.0:80")
host, _, port = listen.rpartition(":")
host = host.strip("[]")
if host in ("", "0.0.0.0"):
    host = "127.0.0.1"
elif host == "::":
    host = "::1"
url = f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"
try:
    with urllib.request.urlopen(url, timeout=4) as answer:  # noqa: S310 (a fixed http URL)
        sys.exit(0 if answer.status == 200 else 1)
except OSError as e:
    print(f"healthcheck: {url}: {e}", file=sys.stderr)
    sys.exit(1)
