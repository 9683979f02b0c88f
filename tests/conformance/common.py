"""What every conformance script shares: the sandbox's URL, checks that say what broke, and
an OAuth consent walked the way a browser walks it (the sandboxes approve consent at once)."""
import os
import sys
import traceback
import urllib.parse
from decimal import Decimal

import requests

# The sandboxes are plain HTTP on loopback; oauthlib refuses that unless told.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")

REDIRECT = "http://127.0.0.1:1/callback"


def base_url():
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} SANDBOX_URL")
    return sys.argv[1].rstrip("/")


class Suite:
    """Named steps; a failed step is reported and the rest still run, so one run shows every gap."""

    def __init__(self, vendor):
        self.vendor = vendor
        self.failed = []
        self.passed = 0

    def step(self, name):
        suite = self

        class Step:
            def __enter__(self):
                return self

            def __exit__(self, kind, error, tb):
                if kind is None:
                    suite.passed += 1
                    print(f"  ok   {suite.vendor}: {name}")
                    return False
                suite.failed.append(name)
                print(f"  FAIL {suite.vendor}: {name}: {kind.__name__}: {error}")
                traceback.print_exception(kind, error, tb, limit=-4)
                return True

        return Step()

    def finish(self):
        print(f"{self.vendor}: {self.passed} passed, {len(self.failed)} failed")
        sys.exit(1 if self.failed else 0)


def same(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def money(value):
    """An amount as the SDK handed it (float, str or Decimal), exactly, for comparison."""
    return Decimal(str(value)).normalize()


def consent(authorize_url):
    """Follows the authorization URL to its redirect and returns the redirect's query."""
    answer = requests.get(authorize_url, allow_redirects=False, timeout=10)
    if answer.status_code not in (302, 303):
        raise AssertionError(f"consent answered {answer.status_code}: {answer.text[:200]}")
    location = answer.headers["Location"]
    return location, dict(urllib.parse.parse_qsl(urllib.parse.urlparse(location).query))
