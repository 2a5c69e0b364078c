"""Parts shared by mxgate's load scripts (bench/e2e.py, bench/idle.py): the real servers
on loopback ephemeral ports (smtp-sink, rbldnsd, redis-server, mxgate) pinned to CPUs,
the load (smtp-source), a raw-socket SMTP probe that timestamps each transaction, and
readers of /proc for CPU time, RSS and open files.

Standard library only. Processes are started and stopped by PID through
tests/integration/harness.py (each in its own process group, killed at exit)."""

import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))
import harness  # noqa: E402

HOST = harness.HOST
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
RBLDNSD = shutil.which("rbldnsd") or "/usr/sbin/rbldnsd"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RELAY_DOMAIN = "example.org"
SENDER = "sender@client.bench"
RECIPIENT = "user@example.org"
HELO = "client.bench"


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def raise_fd_limit(wanted=65536):
    """Raises RLIMIT_NOFILE of this process (children inherit it): up to `wanted` when
    root may raise the hard limit, else up to the hard limit. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def find_mxgate(explicit=None):
    """--mxgate, $MXGATE_BIN, else the first Release-like build under build/."""
    if explicit:
        return explicit
    if os.environ.get("MXGATE_BIN"):
        return os.environ["MXGATE_BIN"]
    for name in ("h-perf", "release", "lead"):
        path = os.path.join(SOURCE_DIR, "build", name, "proxy", "mxgate")
        if os.access(path, os.X_OK):
            return path
    return harness.find_mxgate()


# ---------------------------------------------------------------------------------------
# /proc readers


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def load_average():
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------
# CPU affinity


class Affinity:
    """Where each process runs. `split` (default on 2+ CPUs): mxgate alone on the last CPU
    with one worker thread; load, sink, probe, rbldnsd and redis on the others, so the
    generator and the sink cost the same in every configuration and mxgate's cost shows
    as its own core's time. `none`: nothing pinned, mxgate uses one thread per core."""

    def __init__(self, mode="split"):
        cpus = sorted(os.sched_getaffinity(0))
        self.mode = mode if len(cpus) >= 2 else "none"
        if self.mode == "split":
            self.mxgate_cpus = str(cpus[-1])
            self.load_cpus = ",".join(str(c) for c in cpus[:-1])
        else:
            self.mxgate_cpus = self.load_cpus = None

    def mxgate(self, argv):
        return (["taskset", "-c", self.mxgate_cpus] if self.mxgate_cpus else []) + argv

    def load(self, argv):
        return (["taskset", "-c", self.load_cpus] if self.load_cpus else []) + argv

    def pin_self(self):
        """The probe client runs in this Python process: put it with the load."""
        if self.load_cpus:
            os.sched_setaffinity(0, {int(c) for c in self.load_cpus.split(",")})

    @property
    def mxgate_threads(self):
        return 1 if self.mode == "split" else 0

    def describe(self):
        if self.mode == "split":
            return (f"mxgate on CPU {self.mxgate_cpus} (threads: 1); smtp-source, smtp-sink, "
                    f"probe, rbldnsd, redis-server on CPU {self.load_cpus}")
        return "no CPU pinning (mxgate threads: one per core)"


# ---------------------------------------------------------------------------------------
# Servers


class Sink:
    """smtp-sink as the backend: no dump files (the bench measures speed, not content),
    no XCLIENT (smtp-sink's XCLIENT reply is 250, not Postfix's 220), backlog 4096."""

    def __init__(self, affinity):
        self.dir = harness.make_tempdir("mxgate-bench-sink-")
        self.log_path = os.path.join(self.dir, "sink.log")
        for _ in range(5):
            self.port = harness.free_port()
            argv = affinity.load([SMTP_SINK, "-u", "nobody", "-4", "-C", "-h", "sink.bench",
                                  "-t", "60", f"{HOST}:{self.port}", "4096"])
            with open(self.log_path, "ab") as out:
                self.proc = harness.spawn(argv, stdout=out, stderr=subprocess.STDOUT)
            try:
                harness.wait_for_port(HOST, self.port, harness.TIMEOUT, self.proc)
                return
            except RuntimeError:
                harness.stop_process(self.proc)
        raise RuntimeError(f"smtp-sink did not start: {self.log_text()}")

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cleanup(self):
        harness.stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# Four DNS lists, as a site runs them (one big IP list, a smaller one, an allowlist and a
# combined list): each lists 127.0.0.2 (the RFC 5782 test point mxgate probes) and
# `listed_per_zone` addresses in 10/8, 172.16/12 and 198.18/15; never 127.0.0.1 or the
# 127.1/16 addresses the cold-cache probe comes from.
DNS_ZONES = ["bl1.bench.test", "bl2.bench.test", "wl.bench.test", "combined.bench.test"]


class Rbldnsd:
    def __init__(self, affinity, listed_per_zone=20000):
        self.dir = harness.make_tempdir("mxgate-bench-rbldnsd-")
        rng = random.Random(8)
        args = []
        for zone in DNS_ZONES:
            lines = [":127.0.0.2:Listed by " + zone, "127.0.0.2"]
            for _ in range(listed_per_zone):
                first = rng.choice((10, 172, 198))
                second = {10: rng.randrange(256), 172: rng.randrange(16, 32),
                          198: rng.choice((18, 19))}[first]
                lines.append(f"{first}.{second}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
            path = os.path.join(self.dir, zone)
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            os.chmod(path, 0o644)
            args.append(f"{zone}:ip4set:{zone}")
        self.log_path = os.path.join(self.dir, "rbldnsd.log")
        for _ in range(5):
            self.port = harness.free_port()
            argv = [RBLDNSD, "-n", "-b", f"{HOST}/{self.port}", "-r", self.dir]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]
            with open(self.log_path, "wb") as out:
                self.proc = harness.spawn(affinity.load(argv + args), stdout=out, stderr=out)
            if self._started():
                return
            harness.stop_process(self.proc)
        raise RuntimeError(f"rbldnsd did not start: {self._log()}")

    def _log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def _started(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if "started" in self._log():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def cleanup(self):
        harness.stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self, affinity):
        self.dir = harness.make_tempdir("mxgate-bench-redis-")
        self.port = harness.free_port()
        argv = affinity.load([REDIS_SERVER, "--port", str(self.port), "--bind", HOST,
                              "--save", "", "--appendonly", "no", "--dir", self.dir,
                              "--loglevel", "warning"])
        with open(os.path.join(self.dir, "redis.log"), "ab") as out:
            self.proc = harness.spawn(argv, stdout=out, stderr=out)
        harness.wait_for_port(HOST, self.port, harness.TIMEOUT, self.proc)

    def cleanup(self):
        harness.stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# Made-up words, so that no rule matches smtp-source's messages (X lines) or the probe's:
# every message passes every rule, as ham does, and each rule costs its full scan.
_SYLLABLES = ["qua", "zor", "vek", "mil", "trab", "nox", "frel", "gud", "pim", "wax",
              "jel", "ost", "ryn", "kaf", "bez", "ulm", "drev", "syk", "hob", "tiz"]


def _word(rng):
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))


def _pattern(rng, target):
    kind = rng.randrange(5)
    if target == "url":
        return rf"(?i)https?://[a-z0-9.-]*{_word(rng)}\.(?:{_word(rng)}|{_word(rng)})/"
    if kind == 0:
        return rf"(?i)\b{_word(rng)}\s+{_word(rng)}\b"
    if kind == 1:
        return rf"(?i)\b(?:{_word(rng)}|{_word(rng)}|{_word(rng)})\s+{_word(rng)}"
    if kind == 2:
        return rf"(?i){_word(rng)}.{{0,20}}{_word(rng)}"
    if kind == 3:
        return rf"(?i)\b{_word(rng)}[0-9]{{3,6}}\b"
    return rf"(?i)^{_word(rng)}:\s*{_word(rng)}"


def write_content_rules(directory, total=1000):
    """SpamAssassin-like rule files for content_files: 60 % body, 10 % each of subject,
    headers, url and raw (each file one target; `total` rules in all). Returns paths."""
    rng = random.Random(1000)
    shares = [("body", 0.6), ("subject", 0.1), ("headers", 0.1), ("url", 0.1), ("raw", 0.1)]
    paths = []
    remaining = total
    for index, (target, share) in enumerate(shares):
        count = remaining if index == len(shares) - 1 else int(total * share)
        remaining -= count
        path = os.path.join(directory, f"bench_{target}.rules")
        with open(path, "w") as f:
            f.write(f"where={target} score=0.01 name=bench-{target}\n")
            for _ in range(count):
                f.write(_pattern(rng, target) + "\n")
        paths.append(path)
    return paths


class Mxgate:
    """`mxgate run` with a generated config (dict), pinned by `affinity`, inheriting this
    process's raised fd limit."""

    def __init__(self, binary, affinity, backend_port, extra_config=None, name="mxgate"):
        self.binary = binary
        self.dir = harness.make_tempdir(f"mxgate-bench-{name}-")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.config_path = os.path.join(self.dir, "mxgate.yaml")
        self.affinity = affinity
        self.port = harness.free_port()
        config = {
            "hostname": "mx.bench",
            "listen": [f"{HOST}:{self.port}"],
            "threads": affinity.mxgate_threads,
            "backend": {"address": f"{HOST}:{backend_port}", "connect_timeout": "5s"},
            "relay_domains": [RELAY_DOMAIN],
            "limits": {"max_connections": 20000, "max_connections_per_ip": 20000},
            "log": {"rejections": os.path.join(self.dir, "rejections.jsonl")},
            # No filters means no DNS either: the client-name lookup (on by default) would
            # ask the machine's resolver. The full pipeline turns it back on.
            "dns": {"reverse_lookup": False},
        }
        self.config = harness.deep_merge(config, extra_config or {})
        with open(self.config_path, "w") as f:
            f.write(harness.to_yaml(self.config) + "\n")
        self.proc = None
        self.start()

    def argv(self):
        return self.affinity.mxgate([self.binary, "run", "-c", self.config_path])

    def start(self):
        for attempt in range(5):
            if attempt:
                self.port = harness.free_port()
                self.config["listen"] = [f"{HOST}:{self.port}"]
                with open(self.config_path, "w") as f:
                    f.write(harness.to_yaml(self.config) + "\n")
            with open(self.stderr_path, "ab") as err:
                self.proc = harness.spawn(self.argv(), stdout=err, stderr=err, cwd=self.dir)
            try:
                harness.wait_for_port(HOST, self.port, 20, self.proc)
                return self
            except (RuntimeError, TimeoutError):
                harness.stop_process(self.proc)
        raise RuntimeError(f"mxgate did not start: {self.stderr_text()[-3000:]}")

    def restart(self):
        harness.stop_process(self.proc)
        return self.start()

    @property
    def pid(self):
        return self.proc.pid  # taskset execs mxgate: same PID

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cleanup(self):
        harness.stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def full_pipeline_config(rbldnsd, redis, rules_paths):
    """mxgate's full pipeline: 4 DNS lists, 2 rate limits and reputation on Redis, the
    content rule files. Limits are high, weights small: every message passes."""
    dnsbl = [{"zone": zone, "match": "127.0.0.[2..11]",
              "weight": -0.5 if zone.startswith("wl.") else 1} for zone in DNS_ZONES]
    return {
        # The client's name too, as in production: rbldnsd refuses the PTR query (not its
        # zone), so each session pays one loopback round trip and XCLIENT says TEMPUNAVAIL.
        "dns": {"servers": [f"{HOST}:{rbldnsd.port}"], "timeout": "2s", "reverse_lookup": True},
        "dnsbl": dnsbl,
        "redis": {"address": f"{HOST}:{redis.port}", "timeout": "500ms"},
        "ratelimit": [
            {"name": "conn-per-ip", "stage": "connect", "key": ["client_ip"],
             "rate": "100000/s", "burst": 1000000, "count": "connections"},
            {"name": "rcpt-per-sender", "stage": "rcpt", "key": ["sender"],
             "rate": "100000/s", "burst": 1000000, "count": "recipients"},
        ],
        "reputation": {"enabled": True},
        "content_files": list(rules_paths),
    }


# ---------------------------------------------------------------------------------------
# Load: smtp-source


class SourceRun:
    def __init__(self, messages, seconds, ok, error, mxgate_cpu):
        self.messages = messages
        self.seconds = seconds
        self.ok = ok
        self.error = error
        self.mxgate_cpu = mxgate_cpu  # seconds of CPU mxgate used during the run (or None)

    @property
    def rate(self):
        return self.messages / self.seconds if self.ok and self.seconds > 0 else 0.0


def smtp_source_argv(affinity, port, sessions, messages, size):
    """One message per SMTP session (the default of smtp-source: as most inbound mail
    arrives), `sessions` in parallel."""
    return affinity.load([SMTP_SOURCE, "-4", "-s", str(sessions), "-m", str(messages),
                          "-l", str(size), "-M", HELO, "-f", SENDER, "-t", RECIPIENT,
                          f"{HOST}:{port}"])


def run_source(affinity, port, sessions, messages, size, mxgate_pid=None, timeout=600):
    argv = smtp_source_argv(affinity, port, sessions, messages, size)
    cpu_before = cpu_seconds(mxgate_pid) if mxgate_pid else None
    started = time.monotonic()
    proc = harness.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = proc.communicate(timeout=timeout)
        error = stderr.decode("utf-8", "replace").strip()
    except subprocess.TimeoutExpired:
        error = f"smtp-source timed out after {timeout}s"
    finally:
        harness.stop_process(proc)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(mxgate_pid) - cpu_before if mxgate_pid else None
    ok = proc.returncode == 0 and "fatal" not in error
    return SourceRun(messages, seconds, ok, error[-500:], cpu)


def start_background_source(affinity, port, sessions, size, messages=10_000_000):
    """Steady load until stopped (stop_process)."""
    return harness.spawn(smtp_source_argv(affinity, port, sessions, messages, size),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------
# The probe: one timed SMTP transaction at a time


def probe_message(size):
    header = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: probe\r\n"
              "Message-ID: <probe@client.bench>\r\n\r\n")
    line = "probe " + "y" * 70 + "\r\n"
    body = line * max(1, (size - len(header)) // len(line))
    return (header + body).encode() + b".\r\n"


class ProbeError(Exception):
    pass


def _read_reply(sock, buffer):
    """Reads one complete (multi-line) reply; returns (code, rest of buffer)."""
    while True:
        start = 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            if len(line) >= 4 and line[3:4] == b" ":
                return int(line[:3]), buffer[end + 2:]
            start = end + 2
        chunk = sock.recv(65536)
        if not chunk:
            raise ProbeError("connection closed")
        buffer += chunk


def timed_transaction(port, message, source=None, timeout=30.0):
    """Connect, greeting, EHLO, MAIL, RCPT, DATA, content: seconds until the 250 for the
    end of data (then QUIT, untimed). Commands are not pipelined: each waits for its
    reply, so every reply latency adds up as it does for a cautious client."""
    started = time.perf_counter()
    sock = socket.create_connection((HOST, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        steps = [None, f"EHLO {HELO}\r\n".encode(), f"MAIL FROM:<{SENDER}>\r\n".encode(),
                 f"RCPT TO:<{RECIPIENT}>\r\n".encode(), b"DATA\r\n", message]
        expected = [220, 250, 250, 250, 354, 250]
        for data, want in zip(steps, expected):
            if data is not None:
                sock.sendall(data)
            code, buffer = _read_reply(sock, buffer)
            if code != want:
                raise ProbeError(f"expected {want}, got {code} after {data[:30] if data else 'connect'}")
        elapsed = time.perf_counter() - started
        sock.sendall(b"QUIT\r\n")
        try:
            _read_reply(sock, buffer)
        except (ProbeError, OSError):
            pass
        return elapsed
    finally:
        sock.close()


def probe(port, count, size, cold_sources=False, sources_offset=0):
    """`count` transactions one after another; with cold_sources each comes from a new
    127.1.x.y address (a DNS-list cache miss, new rate-limit and reputation keys)."""
    message = probe_message(size)
    latencies = []
    for i in range(count):
        source = None
        if cold_sources:
            n = sources_offset + i
            source = f"127.1.{(n // 250) % 250}.{n % 250 + 1}"
        latencies.append(timed_transaction(port, message, source))
    return latencies


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")
