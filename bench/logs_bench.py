#!/usr/bin/env python3
"""Measures `mxgate logs` on a generated rejection log of realistic lines (default 300 MB):
a search by ref (the support case), by CIDR, and --stats. Prints the seconds and MB/s.
Usage: bench/logs_bench.py [--mb 300] [--mxgate build/.../mxgate] [--keep DIR]"""

import argparse
import gzip
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference(rng):
    return "".join(rng.choice(ALPHABET) for _ in range(8))


def line(rng, seconds):
    session = reference(rng)
    ref = reference(rng)
    ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % rng.randrange(1000)
    kind = rng.random()
    if kind < 0.6:
        return ('{"session":"%s","client_ip":"%s","client_port":%d,"client_name":"host-%d.dyn.example.net",'
                '"helo":"host-%d.dyn.example.net","tls":"","from":"user%d@sender%d.example","rcpts":[],'
                '"type":"reject","ref":"%s","stage":"rcpt","reason":"filter reject","filter":"dnsbl",'
                '"rule":"zen.spamhaus.org","rcpt":"alice%d@example.org","score":9,"contributions":['
                '{"filter":"dnsbl","rule":"zen.spamhaus.org","score":8,"detail":"zen.spamhaus.org 127.0.0.4","stage":"connect"},'
                '{"filter":"helo","rule":"dynamic","score":1,"detail":"helo looks dynamic","stage":"helo"}],'
                '"reply":"554 5.7.1 Service unavailable; client [%s] blocked using zen.spamhaus.org [ref %s]","time":"%s"}\n'
                % (session, ip, rng.randrange(1024, 65535), rng.randrange(99999), rng.randrange(99999),
                   rng.randrange(9999), rng.randrange(999), ref, rng.randrange(999), ip, ref, stamp))
    if kind < 0.8:
        return ('{"session":"%s","client_ip":"%s","client_port":%d,"client_name":"","helo":"x","tls":"",'
                '"from":"spammer@client.test","rcpts":[],"type":"reject","ref":"%s","stage":"rcpt",'
                '"reason":"relay access denied: not a relay domain","filter":"relay","rule":"not a relay domain",'
                '"rcpt":"victim%d@evil.test","reply":"550 5.7.1 <victim@evil.test>: Relay access denied [ref %s]","time":"%s"}\n'
                % (session, ip, rng.randrange(1024, 65535), ref, rng.randrange(999), ref, stamp))
    return ('{"session":"%s","client_ip":"%s","client_port":%d,"client_name":"mx.partner.example","helo":"mx.partner.example",'
            '"tls":"TLSv1.3 TLS_AES_256_GCM_SHA384","from":null,"rcpts":["bob@example.org"],"type":"session","ref":"%s",'
            '"duration":0.84,"messages_accepted":1,"messages_rejected":0,"errors":0,"queue_ids":["4XyZ1234ABC"],'
            '"last_stage":"data","time":"%s"}\n' % (session, ip, rng.randrange(1024, 65535), session, stamp))


def generate(path, megabytes, needle_ref):
    rng = random.Random(7)
    target = megabytes * 1024 * 1024
    start = 1795000000
    written = 0
    lines = 0
    with open(path, "w") as out:
        chunk = []
        while written < target:
            text = line(rng, start + lines // 20)
            if lines == 1000:  # one known ref early, so the search must still read it all
                text = text.replace('"ref":"', '"ref":"%s","old_ref":"' % needle_ref, 1)
            chunk.append(text)
            written += len(text)
            lines += 1
            if len(chunk) == 10000:
                out.write("".join(chunk))
                chunk = []
        out.write("".join(chunk))
    return lines


def timed(argv):
    began = time.monotonic()
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return time.monotonic() - began, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--mxgate", default=os.environ.get("MXGATE_BIN", "mxgate"))
    parser.add_argument("--keep")
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix="mxgate-logs-bench-")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "rejections.jsonl")
    needle = "7Q3XK2PA"
    if not os.path.exists(path):
        lines = generate(path, args.mb, needle)
        print(f"generated {path}: {lines} lines")
    size = os.path.getsize(path) / (1024 * 1024)
    gz_path = path + ".1.gz"
    if not os.path.exists(gz_path):
        with open(path, "rb") as source, gzip.open(gz_path, "wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target, 1 << 20)
    # Warm the page cache once so the figures measure mxgate, not the disk.
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL)
    cases = [
        ("--ref (plain)", [args.mxgate, "logs", "--ref", needle, path]),
        ("--ref (gzip)", [args.mxgate, "logs", "--ref", needle, gz_path]),
        ("--ip CIDR", [args.mxgate, "logs", "--ip", "10.1.0.0/16", "--json", path]),
        ("--from domain", [args.mxgate, "logs", "--from", "sender7.example", "--json", path]),
        ("--stats (parses every line)", [args.mxgate, "logs", "--stats", path]),
    ]
    for name, argv in cases:
        best = None
        for _ in range(3):
            seconds, result = timed(argv)
            if result.returncode not in (0, 1):
                sys.exit(f"{name}: exit {result.returncode}: {result.stderr.decode()}")
            best = seconds if best is None else min(best, seconds)
        print(f"{name:32} {best:7.2f} s  {size / best:8.0f} MB/s (of uncompressed log)")
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
