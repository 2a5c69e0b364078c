"""Promise: operators can watch mxgate. /metrics is valid Prometheus text format (checked
by a strict parser written here) and its counters move exactly as a scripted set of
sessions says; /healthz answers while the process serves; /readyz is 503 while the backend
is down and 200 once it answers again."""

import math
import os
import re
import subprocess
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST, message  # noqa: E402

# --- a strict parser for the text exposition format 0.0.4 -----------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(
    rf"^({METRIC_NAME})(\{{(?:{LABEL_NAME}={LABEL_VALUE}(?:,{LABEL_NAME}={LABEL_VALUE})*,?)?\}})?"
    r" ([^ ]+)(?: (-?\d+))?$")
LABEL = re.compile(rf"({LABEL_NAME})=({LABEL_VALUE})")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class FormatError(AssertionError):
    pass


def parse_value(text, line):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise FormatError(f"bad value {text!r} in {line!r}")
    return float(text)


def unescape(value):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value[1:-1])


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            return base
    return name


def parse_prometheus(text):
    """{(name, frozenset(labels)): value}; raises FormatError on anything the format
    forbids or Prometheus would reject."""
    if text and not text.endswith("\n"):
        raise FormatError("body does not end with a newline")
    types, helps, samples = {}, {}, {}
    finished = set()       # families whose samples are over (they must be contiguous)
    current = None
    for line in text.split("\n")[:-1]:
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.fullmatch(METRIC_NAME, name):
                    raise FormatError(f"bad metric name in {line!r}")
                table = helps if parts[1] == "HELP" else types
                if name in table:
                    raise FormatError(f"second {parts[1]} for {name}")
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise FormatError(f"bad TYPE line {line!r}")
                    if name in finished or name == current:
                        raise FormatError(f"TYPE for {name} after its samples")
                table[name] = parts[3] if len(parts) == 4 else ""
            continue
        match = SAMPLE.match(line)
        if not match:
            raise FormatError(f"not a sample line: {line!r}")
        name, labels_text, value_text = match.group(1), match.group(2) or "", match.group(3)
        labels = {}
        for label_name, label_value in LABEL.findall(labels_text):
            if label_name in labels:
                raise FormatError(f"label {label_name} twice in {line!r}")
            labels[label_name] = unescape(label_value)
        family = family_of(name, types)
        if family != current:
            if family in finished:
                raise FormatError(f"samples of {family} are not contiguous")
            if current is not None:
                finished.add(current)
            current = family
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise FormatError(f"duplicate series {line!r}")
        value = parse_value(value_text, line)
        if types.get(family) == "counter" and not value >= 0:
            raise FormatError(f"negative counter {line!r}")
        samples[key] = value
    check_histograms(types, samples)
    return samples


def check_histograms(types, samples):
    for family, kind in types.items():
        if kind != "histogram":
            continue
        series = {}
        for (name, labels), value in samples.items():
            if name == family + "_bucket":
                rest = frozenset((k, v) for k, v in labels if k != "le")
                le = dict(labels).get("le")
                if le is None:
                    raise FormatError(f"{name} without le")
                series.setdefault(rest, []).append((parse_value(le, name), value))
        for rest, buckets in series.items():
            buckets.sort()
            counts = [count for _, count in buckets]
            if counts != sorted(counts):
                raise FormatError(f"{family}{dict(rest)} buckets are not cumulative")
            if buckets[-1][0] != math.inf:
                raise FormatError(f"{family}{dict(rest)} has no +Inf bucket")
            count = samples.get((family + "_count", rest))
            if count != buckets[-1][1] or (family + "_sum", rest) not in samples:
                raise FormatError(f"{family}{dict(rest)}: _count/_sum missing or != +Inf bucket")


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class PrometheusParserSelfTest(unittest.TestCase):
    """The parser must refuse what Prometheus refuses, or the test below proves nothing."""

    def test_refuses_malformed_bodies(self):
        good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
        self.assertEqual(parse_prometheus(good), {("a_total", frozenset({("x", "1")})): 3.0})
        for bad in ["a_total 3",                                     # no final newline
                    "a total 3\n",                                   # bad name
                    "a_total{x=1} 3\n",                              # unquoted label
                    "a_total three\n",                               # bad value
                    "a_total 1\nb 2\na_total{y=\"2\"} 3\n",          # not contiguous
                    "a_total 1\na_total 1\n",                        # duplicate series
                    "# TYPE a_total counter\na_total -1\n",          # negative counter
                    "# TYPE a_total countr\n",                       # bad type
                    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                    "h_sum 1\nh_count 1\n"]:                         # not cumulative
            with self.assertRaises(FormatError, msg=bad):
                parse_prometheus(bad)


# --- the endpoint ----------------------------------------------------------------------


def http_get(port, path, method="GET"):
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers.get("Content-Type"), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read().decode()


def restart_sink_on_same_port(sink):
    """smtp-sink again on the port mxgate's backend address names."""
    port = sink.port
    sink.stop()
    with open(sink.log_path, "ab") as log:
        sink.proc = harness.spawn(sink.args + [f"{HOST}:{port}", "64"], stdout=log,
                                  stderr=subprocess.STDOUT)
    harness.wait_for_port(HOST, port, harness.TIMEOUT, sink.proc)


class MetricsEndpointTest(harness.IntegrationTest):
    def start(self):
        self.sink = self.start_sink()
        self.metrics_port = harness.free_port()
        self.mx = self.start_mxgate(backend_port=self.sink.port,
                                    config={"metrics": {"listen": f"{HOST}:{self.metrics_port}"}})
        harness.wait_for_port(HOST, self.metrics_port, proc=self.mx.proc)

    def scrape(self):
        status, content_type, body = http_get(self.metrics_port, "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(content_type, "text/plain; version=0.0.4; charset=utf-8")
        return parse_prometheus(body)

    def send_message(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message() + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        self.assertReply(client.command("QUIT"), 221)
        client.close()

    def test_counters_follow_a_scripted_set_of_sessions(self):
        self.start()
        before = self.scrape()
        self.assertEqual(value(before, "mxgate_config_generation"), 1)
        self.send_message()
        self.send_message()
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<spammer@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<victim@evil.test>"), 550)
        self.assertReply(client.command("QUIT"), 221)
        client.close()

        def settled():
            after = self.scrape()
            done = (value(after, "mxgate_session_duration_seconds_count") -
                    value(before, "mxgate_session_duration_seconds_count") >= 3 and
                    value(after, "mxgate_sessions_active") == 0)
            return after if done else None
        after = harness.wait_until(settled, what="three sessions to end")

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)
        self.assertEqual(delta("mxgate_sessions_total"), 3)
        self.assertEqual(delta("mxgate_session_duration_seconds_count"), 3)
        self.assertEqual(delta("mxgate_messages_total", outcome="accepted"), 2)
        self.assertEqual(delta("mxgate_messages_total", outcome="tempfailed"), 0)
        self.assertEqual(delta("mxgate_refusals_total", stage="rcpt", **{"class": "5xx"}), 1)
        self.assertEqual(delta("mxgate_backend_data_seconds_count"), 2)
        self.assertEqual(value(after, "mxgate_bytes_in_flight"), 0)
        self.assertEqual(delta("mxgate_backend_errors_total"), 0)

    def test_health_and_readiness_follow_the_backend(self):
        self.start()
        status, _, body = http_get(self.metrics_port, "/healthz")
        self.assertEqual((status, body), (200, "ok\n"))
        harness.wait_until(lambda: http_get(self.metrics_port, "/readyz")[0] == 200,
                           what="/readyz 200 with the backend up")
        self.assertEqual(value(self.scrape(), "mxgate_backend_up"), 1)

        self.sink.stop()
        harness.wait_until(lambda: http_get(self.metrics_port, "/readyz")[0] == 503,
                           what="/readyz 503 with the backend down")
        status, _, body = http_get(self.metrics_port, "/readyz")
        self.assertIn(f"backend {HOST}:{self.sink.port}", body)
        samples = self.scrape()
        self.assertEqual(value(samples, "mxgate_backend_up"), 0)
        self.assertGreaterEqual(value(samples, "mxgate_backend_probe_failures_total"), 1)
        # Still alive: liveness does not depend on the backend.
        self.assertEqual(http_get(self.metrics_port, "/healthz")[0], 200)

        restart_sink_on_same_port(self.sink)
        harness.wait_until(lambda: http_get(self.metrics_port, "/readyz")[0] == 200,
                           what="/readyz 200 once the backend is back")

    def test_wrong_method_and_unknown_path(self):
        self.start()
        self.assertEqual(http_get(self.metrics_port, "/reload")[0], 405)
        self.assertEqual(http_get(self.metrics_port, "/nothing")[0], 404)
        self.assertEqual(http_get(self.metrics_port, "/metrics", method="POST")[0], 405)


if __name__ == "__main__":
    unittest.main()
