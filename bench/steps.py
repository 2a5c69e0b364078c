#!/usr/bin/env python3
"""Where the added latency sits: the median time of each SMTP step of one transaction at
concurrency 1 (greeting, EHLO, MAIL, RCPT, DATA, end of data, QUIT, EOF), for `direct`
(smtp-sink), `nofilter` and `full` (warm), with the same servers and CPU affinity as
bench/e2e.py. A raw-socket client waits for each reply before the next command.

    bench/steps.py [--mxgate PATH] [--transactions 300]
"""

import argparse
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import benchlib  # noqa: E402
import e2e  # noqa: E402

STEPS = ["greeting", "EHLO", "MAIL", "RCPT", "DATA", "end of data", "QUIT", "EOF"]


def timed_steps(port, message):
    """Seconds per step of one transaction."""
    marks = [time.perf_counter()]
    sock = socket.create_connection((benchlib.HOST, port), timeout=30)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        for data in (None, f"EHLO {benchlib.HELO}\r\n".encode(),
                     f"MAIL FROM:<{benchlib.SENDER}>\r\n".encode(),
                     f"RCPT TO:<{benchlib.RECIPIENT}>\r\n".encode(), b"DATA\r\n", message,
                     b"QUIT\r\n"):
            if data is not None:
                sock.sendall(data)
            _, buffer = benchlib._read_reply(sock, buffer)
            marks.append(time.perf_counter())
        sock.recv(16)  # the server closes after 221
        marks.append(time.perf_counter())
    finally:
        sock.close()
    return [after - before for before, after in zip(marks, marks[1:])]


def without_variants(env):
    """The full pipeline's config minus one part each: {part: config}."""
    full = benchlib.full_pipeline_config(env.rbldnsd, env.redis,
                                         benchlib.write_content_rules(env.work_dir, 1000))
    variants = {}
    variant = dict(full, dns=dict(full["dns"], reverse_lookup=False))
    variants["rdns"] = variant
    variants["dnsbl"] = {k: v for k, v in full.items() if k != "dnsbl"}
    variants["redis"] = {k: v for k, v in full.items() if k not in ("redis", "ratelimit", "reputation")}
    variants["content"] = {k: v for k, v in full.items() if k != "content_files"}
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mxgate", help="mxgate binary (default: as bench/e2e.py finds it)")
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--affinity", choices=["split", "none"], default="split")
    parser.add_argument("--without", action="store_true",
                        help="also run `full` without each part in turn (reverse DNS, DNS "
                             "lists, Redis filters, content rules): what each part costs")
    args = parser.parse_args()
    env = e2e.Environment(args, need_full=True)
    try:
        message = benchlib.probe_message(4096)
        print("median µs per step: " + " | ".join(STEPS))
        targets = [(config, env.target(config)[0]) for config in ("direct", "nofilter", "full")]
        if args.without:
            for part, variant in without_variants(env).items():
                mx = env._keep(benchlib.Mxgate(env.binary, env.affinity, env.sink.port,
                                               name=f"full-{part}", extra_config=variant))
                targets.append((f"-{part}", mx.port))
        for config, port in targets:
            for _ in range(30):  # warm the caches, the store and the backend
                timed_steps(port, message)
            rows = [timed_steps(port, message) for _ in range(args.transactions)]
            medians = [statistics.median(row[i] for row in rows) * 1e6 for i in range(len(STEPS))]
            tails = [sorted(row[i] for row in rows)[int(len(rows) * 0.99)] * 1e6
                     for i in range(len(STEPS))]
            totals = sorted(sum(row) for row in rows)
            p99 = totals[min(len(totals) - 1, int(len(totals) * 0.99))]
            print(f"{config:9s} " + " ".join(f"{m:6.0f}" for m in medians) +
                  f"   total p50 {statistics.median(totals) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms",
                  flush=True)
            print(f"{'  p99':9s} " + " ".join(f"{m:6.0f}" for m in tails), flush=True)
    finally:
        env.cleanup()


if __name__ == "__main__":
    main()
