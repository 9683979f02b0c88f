#!/usr/bin/env python3
"""Runs each vendor's conformance script against its sandbox, started here from the rollcall
binary on a free loopback port and stopped afterwards.

Usage: run.py ROLLCALL_BINARY [VENDOR...]   (default: every vendor)
Each script gets the sandbox's base URL as its only argument and exits non-zero on any failure.
"""
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VENDORS = ["xero", "quickbooks", "connectwise", "graph"]
# No script may hang the suite: the whole suite is one bounded step of scripts/test.
SCRIPT_SECONDS = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, process, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the sandbox did not listen on {port} within {seconds}s")


def run(binary, vendor):
    port = free_port()
    sandbox = subprocess.Popen([binary, "sandbox", vendor, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(port, sandbox)
        script = os.path.join(HERE, f"sdk_{vendor}.py")
        return subprocess.run([sys.executable, script, f"http://127.0.0.1:{port}"],
                              cwd=HERE, timeout=SCRIPT_SECONDS).returncode
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"{vendor}: {e}")
        return 1
    finally:
        sandbox.terminate()
        try:
            sandbox.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sandbox.kill()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    vendors = sys.argv[2:] or VENDORS
    failed = [v for v in vendors if run(binary, v) != 0]
    if failed:
        sys.exit(f"conformance: failed for {', '.join(failed)}")
    print(f"conformance: {', '.join(vendors)} passed")


if __name__ == "__main__":
    main()
