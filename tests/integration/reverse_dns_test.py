"""Promise: mxgate knows its client by name, as Postfix would, from a real DNS server
(dnsmasq): the PTR name that resolves back to the client's address is the client_name of
the rejection log, the session summary and `mxgate logs`, and goes to the backend with
XCLIENT NAME (Postfix's Received header shows it); a PTR that does not confirm is logged
as client_ptr only; an rdns_checks score refuses a client without PTR with a reference;
and a DNS server that never answers delays neither the greeting nor, past dns.timeout,
the first RCPT."""

import os
import re
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
VERIFIED = "127.0.0.1"      # mx.client.test, whose A record is 127.0.0.1
UNVERIFIED = "127.0.0.2"    # PTR liar.client.test, whose A record is elsewhere
NO_PTR = "127.0.0.3"
RECORDS = [
    "--host-record=mx.client.test,127.0.0.1",
    "--ptr-record=2.0.0.127.in-addr.arpa,liar.client.test",
    "--host-record=liar.client.test,192.0.2.99",
]


def udp_port_bound(port):
    with open("/proc/net/udp") as table:
        next(table)
        return any(line.split()[1].endswith(f":{port:04X}") for line in table)


class Dnsmasq:
    """dnsmasq in the foreground on 127.0.0.1:<ephemeral> answering only `records` (names
    it does not know under .test and the reverse zones are NXDOMAIN); stopped by PID."""

    def __init__(self, records):
        self.dir = harness.make_tempdir("mxgate-dnsmasq-")
        self.log_path = os.path.join(self.dir, "dnsmasq.log")
        for _ in range(5):
            self.port = harness.free_port()
            argv = [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts",
                    "--conf-file=/dev/null", "--pid-file=", f"--port={self.port}",
                    f"--listen-address={harness.HOST}", "--bind-interfaces",
                    "--local=/test/", "--local=/in-addr.arpa/", "--local=/ip6.arpa/", *records]
            with open(self.log_path, "wb") as log:
                self.proc = harness.spawn(argv, stdout=log, stderr=log)
            try:
                harness.wait_until(lambda: self.proc.poll() is not None
                                   or udp_port_bound(self.port), 5, what="dnsmasq")
            except TimeoutError:
                pass
            if self.proc.poll() is None and udp_port_bound(self.port):
                return
            harness.stop_process(self.proc)
        raise RuntimeError(f"dnsmasq did not start: {self.log()}")

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        harness.stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)




def xclient_name(sink, client_port):
    """The NAME= mxgate sent with XCLIENT for the client at client_port (smtp-sink -v
    logs every command it receives)."""
    found = harness.wait_until(
        lambda: re.search(rf"XCLIENT ADDR=\S+ PORT={client_port} NAME=(\S+)",
                          sink.log_text()), what=f"XCLIENT for client port {client_port}")
    return found.group(1)


@unittest.skipUnless(os.path.exists(DNSMASQ), "dnsmasq is not installed (dnsmasq-base)")
class ReverseDnsTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.dns = Dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.cleanup)
        cls.sink = cls.start_class_sink(xclient=True, extra_args=["-v"])
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port, config={
            "dns": {"servers": [f"{harness.HOST}:{cls.dns.port}"], "timeout": "2s",
                    "reverse_lookup": True},
            "rdns_checks": {"missing": 10},
        })

    def setUp(self):
        self.sink.clear()

    def client(self, source, mx=None):
        client = harness.RawSmtp(harness.HOST, (mx or self.mx).port, source=source)
        self.addCleanup(client.close)
        self.assertReply(client.greeting(), 220)
        self.assertReply(client.ehlo("client.test"), 250)
        return client

    def send_one_and_refuse_one(self, source, subject):
        """A relayed RCPT (which settles the name), a refused one (a log line), a message."""
        client = self.client(source)
        self.client_port = client.sock.getsockname()[1]
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        refused = client.command("RCPT TO:<someone@elsewhere.test>")
        self.assertReply(refused, 550, "5.7.1")
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject=subject) + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        self.assertReply(client.command("QUIT"), 221)
        client.wait_closed(5)
        [entry] = [r for r in self.mx.wait_for_rejections(1) if r.get("ref") == refused.ref]
        [received] = [t for t in self.sink.wait_for_messages(1)
                      if f"Subject: {subject}".encode() in t.content]
        return entry, received

    def summary_of(self, session):
        return harness.wait_until(
            lambda: next((r for r in self.mx.rejections()
                          if r.get("type") == "session" and r.get("session") == session), None),
            what=f"session summary of {session}")

    def test_verified_name_in_log_summary_and_logs_command(self):
        entry, received = self.send_one_and_refuse_one(VERIFIED, "verified")
        self.assertEqual(entry["client_name"], "mx.client.test", entry)
        self.assertNotIn("client_ptr", entry)  # the same name: said once
        self.assertIn(b"Subject: verified", received.content)
        self.assertEqual(xclient_name(self.sink, self.client_port), "mx.client.test")
        summary = self.summary_of(entry["session"])
        self.assertEqual(summary["client_name"], "mx.client.test", summary)
        self.assertEqual(summary["messages_accepted"], 1)
        explained = harness.run_mxgate("logs", "--ref", entry["ref"], self.mx.rejections_path)
        self.assertEqual(explained.returncode, 0, explained.stderr)
        self.assertIn(f"client mx.client.test[{VERIFIED}]", explained.stdout)

    def test_unconfirmed_ptr_is_logged_but_not_the_name(self):
        entry, _ = self.send_one_and_refuse_one(UNVERIFIED, "unverified")
        self.assertEqual(entry["client_name"], "", entry)
        self.assertEqual(entry["client_ptr"], "liar.client.test", entry)
        # Postfix's XCLIENT_README: a name that does not confirm is no name at all.
        self.assertEqual(xclient_name(self.sink, self.client_port), "[UNAVAILABLE]")
        explained = harness.run_mxgate("logs", "--ref", entry["ref"], self.mx.rejections_path)
        self.assertIn(f"client unknown[{UNVERIFIED}]", explained.stdout)

    def test_client_without_ptr_is_refused_by_score_with_a_reference(self):
        client = self.client(NO_PTR)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        reply = client.command("RCPT TO:<user@example.org>")
        self.assertReply(reply, 550, "5.7.1")
        self.assertIn(f"cannot find your reverse hostname, [{NO_PTR}]", reply.text)
        self.assertIsNotNone(reply.ref, reply)
        [entry] = [r for r in self.mx.wait_for_rejections(1) if r.get("ref") == reply.ref]
        self.assertEqual(entry["filter"], "scoring", entry)
        self.assertEqual(entry["client_name"], "")
        self.assertIn({"filter": "rdns", "rule": "missing", "score": 10,
                       "detail": f"client [{NO_PTR}] has no PTR record", "stage": "connect"},
                      entry["contributions"])
        client.command("QUIT")
        self.assertNothingDelivered(self.sink)


@unittest.skipUnless(os.path.exists(DNSMASQ), "dnsmasq is not installed (dnsmasq-base)")
class ReverseDnsPostfixTest(harness.IntegrationTest):
    """The whole path: XCLIENT NAME reaches a real Postfix, whose Received header and log
    name the client as it would have named it itself."""

    @classmethod
    def setUpClass(cls):
        cls.dns = Dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.cleanup)
        cls.sink = cls.start_class_sink()
        cls.postfix = cls.start_class_postfix(sink=cls.sink, relay_domains=["example.org"])
        cls.mx = cls.start_class_mxgate(backend_port=cls.postfix.port, config={
            "dns": {"servers": [f"{harness.HOST}:{cls.dns.port}"], "reverse_lookup": True},
        })

    def deliver(self, source, subject):
        client = harness.RawSmtp(harness.HOST, self.mx.port, source=source)
        self.addCleanup(client.close)
        self.assertReply(client.greeting(), 220)
        self.assertReply(client.ehlo("client.test"), 250)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject=subject) + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        client.command("QUIT")

        def find():
            return next((t for t in self.sink.transactions()
                         if f"Subject: {subject}".encode() in t.content), None)
        try:
            return harness.wait_until(find, 15, what=f"delivery of '{subject}'")
        except TimeoutError as error:
            raise AssertionError(f"{error}\npostfix log:\n{self.postfix.log()}")

    def received_from(self, delivered):
        received = re.search(rb"Received: from (\S+) \(([^)]*)\)\n\tby pf\.test", delivered.content)
        self.assertIsNotNone(received, delivered.content)
        return received.group(2).decode()

    def test_postfix_names_the_verified_client(self):
        delivered = self.deliver(VERIFIED, "named for postfix")
        self.assertEqual(self.received_from(delivered), f"mx.client.test [{VERIFIED}]")
        self.postfix.wait_for_log(r"client=mx\.client\.test\[127\.0\.0\.1\]")

    def test_postfix_says_unknown_without_a_verified_name(self):
        delivered = self.deliver(UNVERIFIED, "unknown for postfix")
        self.assertEqual(self.received_from(delivered), f"unknown [{UNVERIFIED}]")


class SlowDnsTest(harness.IntegrationTest):
    """A resolver that never answers: the greeting is immediate, the first RCPT waits at
    most dns.timeout, and the backend is told the name is temporarily unavailable."""

    TIMEOUT = 1.0

    @classmethod
    def setUpClass(cls):
        cls.blackhole = harness.DnsBlackhole()
        cls.addClassCleanup(cls.blackhole.close)
        cls.sink = cls.start_class_sink(xclient=True, extra_args=["-v"])
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port, config={
            "dns": {"servers": [f"{harness.HOST}:{cls.blackhole.port}"],
                    "timeout": f"{cls.TIMEOUT}s", "reverse_lookup": True},
        })

    def test_greeting_is_not_delayed_and_rcpt_waits_at_most_the_timeout(self):
        started = time.monotonic()
        client = harness.RawSmtp(harness.HOST, self.mx.port, timeout=10)
        self.addCleanup(client.close)
        self.assertReply(client.greeting(), 220)
        self.assertLess(time.monotonic() - started, 0.2)
        self.assertReply(client.ehlo("client.test"), 250)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        before_rcpt = time.monotonic()
        self.assertReply(client.command("RCPT TO:<user@example.org>", timeout=10), 250)
        waited = time.monotonic() - before_rcpt
        self.assertLess(waited, self.TIMEOUT + 0.5)
        # The rest of the lookup's budget, not a second one.
        self.assertLess(time.monotonic() - started, self.TIMEOUT + 0.7)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="slow dns") + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        # Postfix's XCLIENT_README: a lookup that failed is a temporary "unknown".
        self.assertEqual(xclient_name(self.sink, client.sock.getsockname()[1]), "[TEMPUNAVAIL]")
        client.command("QUIT")


if __name__ == "__main__":
    unittest.main()
