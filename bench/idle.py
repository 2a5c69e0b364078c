#!/usr/bin/python3
"""Idle-session scale: hold N sessions open after EHLO (default 10,000) against mxgate
without filters, report mxgate's RSS per session (VmRSS delta / N) and how fast one more
polite client is greeted meanwhile. Targets (issue 8): <= 16 KiB per idle session, a
greeting in < 50 ms.

  bench/idle.py [--sessions 10000] [--mxgate PATH] [--json FILE]

The fd limit of this script is raised with setrlimit (mxgate inherits it) and mxgate's
limits.max_connections / max_connections_per_ip are raised to fit. All sessions come from
127.0.0.1. See bench/README.md."""

import argparse
import json
import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import HOST, log, median, percentile  # noqa: E402


class IdleClient:
    """One session driven without blocking: connect, read the 220, EHLO, read the 250."""

    __slots__ = ("sock", "state", "buffer")

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex((HOST, port))
        self.state = "greeting"
        self.buffer = b""

    def on_readable(self):
        """Returns True when the session reached its idle state (EHLO answered)."""
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return False
        if not data:
            raise ConnectionError("closed by mxgate")
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line[3:4] != b" ":
                continue  # a continuation line of a multi-line reply
            if self.state == "greeting":
                if not line.startswith(b"220"):
                    raise ConnectionError(f"greeting {line[:60]!r}")
                self.sock.send(b"EHLO idle.bench\r\n")
                self.state = "ehlo"
            elif self.state == "ehlo":
                if not line.startswith(b"250"):
                    raise ConnectionError(f"EHLO reply {line[:60]!r}")
                self.state = "idle"
                return True
        return False


def open_idle_sessions(port, count, batch=400, timeout=120):
    """Opens `count` sessions, at most `batch` in their handshake at once (so the
    listen backlog never overflows). Returns the idle clients and the number that
    failed or did not finish within `timeout`."""
    selector = selectors.DefaultSelector()
    idle, failures, pending = [], 0, 0
    opened = 0
    deadline = time.monotonic() + timeout
    while len(idle) + failures < count and time.monotonic() < deadline:
        while opened < count and pending < batch:
            client = IdleClient(port)
            selector.register(client.sock, selectors.EVENT_READ, client)
            opened += 1
            pending += 1
        for key, _ in selector.select(timeout=1.0):
            client = key.data
            try:
                done = client.on_readable()
            except (ConnectionError, OSError) as error:
                if failures < 3:
                    log(f"idle session failed: {error}")
                selector.unregister(client.sock)
                client.sock.close()
                failures += 1
                pending -= 1
                continue
            if done:
                selector.unregister(client.sock)
                idle.append(client)
                pending -= 1
    for key in list(selector.get_map().values()):  # unfinished at the timeout
        key.fileobj.close()
    selector.close()
    return idle, count - len(idle)


def greeting_latency(port, probes=20):
    """Seconds from connect() to the whole 220 line, for `probes` polite clients, one
    after the other; each then says QUIT."""
    results = []
    for _ in range(probes):
        t0 = time.perf_counter()
        sock = socket.create_connection((HOST, port), timeout=10)
        try:
            buffer = b""
            while b"\r\n" not in buffer:
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError("closed before the greeting")
                buffer += data
            results.append(time.perf_counter() - t0)
            sock.sendall(b"QUIT\r\n")
        finally:
            sock.close()
        time.sleep(0.02)
    return results


def run_idle(sessions, binary=None, affinity="split", probes=20, hold=1.0, rounds=1):
    benchlib.raise_fd_limit(sessions * 2 + 4096)
    aff = benchlib.Affinity(affinity)
    aff.pin_self()
    binary = benchlib.find_mxgate(binary)
    parts = []
    idle = []
    result = {"sessions": sessions, "affinity": aff.describe(), "mxgate": binary,
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "load": benchlib.load_average()}
    try:
        sink = benchlib.Sink(aff)
        parts.append(sink)
        limit = max(20000, sessions + 1000)
        mx = benchlib.Mxgate(binary, aff, sink.port, name="idle",
                             extra_config={"limits": {"max_connections": limit,
                                                      "max_connections_per_ip": limit}})
        parts.append(mx)
        # Warm-up: a few full transactions and idle sessions fault in code and pools.
        benchlib.probe(mx.port, 20, 4096)
        warm, _ = open_idle_sessions(mx.port, min(200, sessions))
        for client in warm:
            client.sock.close()
        time.sleep(1.0)
        result["greeting_before"] = greeting_latency(mx.port, probes)
        rss_before, fds_before = benchlib.rss_kib(mx.pid), benchlib.fd_count(mx.pid)
        cpu_before = benchlib.cpu_seconds(mx.pid)
        t0 = time.monotonic()
        idle, failures = open_idle_sessions(mx.port, sessions)
        result["open_seconds"] = time.monotonic() - t0
        result["open_cpu_seconds"] = benchlib.cpu_seconds(mx.pid) - cpu_before
        time.sleep(hold)
        rss_held, fds_held = benchlib.rss_kib(mx.pid), benchlib.fd_count(mx.pid)
        result["greeting_during"] = greeting_latency(mx.port, probes)
        result.update(failures=failures, held=len(idle), rss_before_kib=rss_before,
                      rss_held_kib=rss_held, fds_before=fds_before, fds_held=fds_held)
        result["rss_per_session_kib"] = (rss_held - rss_before) / max(1, len(idle))
        for client in idle:
            client.sock.close()
        idle = []
        time.sleep(1.5)
        result["rss_after_close_kib"] = benchlib.rss_kib(mx.pid)
        result["fds_after_close"] = benchlib.fd_count(mx.pid)
        # Later rounds: memory freed after the first round is reused, not added to (a
        # leak would add ~the first round's growth each time).
        result["later_rounds_rss_held_kib"] = []
        for _ in range(rounds - 1):
            idle, _ = open_idle_sessions(mx.port, sessions)
            time.sleep(hold)
            result["later_rounds_rss_held_kib"].append(benchlib.rss_kib(mx.pid))
            for client in idle:
                client.sock.close()
            idle = []
            time.sleep(1.5)
        result["mxgate_running"] = mx.proc.poll() is None
    finally:
        for client in idle:
            client.sock.close()
        for part in reversed(parts):
            part.cleanup()
    g = result["greeting_during"]
    result["greeting_p50_ms"] = 1000 * median(g)
    result["greeting_max_ms"] = 1000 * max(g)
    result["greeting_p90_ms"] = 1000 * percentile(g, 0.9)
    return result


def report(result):
    per = result["rss_per_session_kib"]
    lines = [
        f"idle sessions held: {result['held']} of {result['sessions']} "
        f"(failures {result['failures']}), opened in {result['open_seconds']:.1f}s "
        f"({result['open_cpu_seconds']:.2f}s mxgate CPU)",
        f"mxgate RSS {result['rss_before_kib']} KiB -> {result['rss_held_kib']} KiB: "
        f"{per:.1f} KiB per idle session (target <= 16) "
        f"{'ok' if per <= 16 else 'MISSED'}",
        f"fds {result['fds_before']} -> {result['fds_held']}; after closing all: RSS "
        f"{result['rss_after_close_kib']} KiB, fds {result['fds_after_close']}"
        + (f"; RSS held in later rounds: {result['later_rounds_rss_held_kib']} KiB"
           if result.get("later_rounds_rss_held_kib") else ""),
        f"greeting of a polite client meanwhile: p50 {result['greeting_p50_ms']:.2f} ms, "
        f"p90 {result['greeting_p90_ms']:.2f} ms, max {result['greeting_max_ms']:.2f} ms "
        f"(before: p50 {1000 * median(result['greeting_before']):.2f} ms) (target < 50 ms) "
        f"{'ok' if result['greeting_max_ms'] < 50 else 'MISSED'}",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--mxgate")
    parser.add_argument("--affinity", choices=["split", "none"], default="split")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1,
                        help="open and close the sessions this many times (leak check)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    result = run_idle(args.sessions, args.mxgate, args.affinity, args.probes,
                      rounds=args.rounds)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    ok = result["held"] == result["sessions"] and result["mxgate_running"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
