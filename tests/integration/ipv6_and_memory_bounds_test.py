"""Promises (issue 3, invariants 1 and 5): mxgate serves IPv6 clients as well as IPv4 ones,
and the global cap on message bytes in flight answers 452 4.3.1 to the session that
crosses it, without harming the session that is within it."""

import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@unittest.skipUnless(ipv6_loopback_available(), "no IPv6 loopback on this machine")
class Ipv6Test(harness.IntegrationTest):
    def test_ipv6_client_is_served_and_logged_by_its_address(self):
        sink = self.start_sink()
        port6 = harness.free_port()
        mx = self.start_mxgate(backend_port=sink.port, start=False)
        # Both families: the harness waits on its IPv4 port, the client uses the IPv6 one.
        mx.overrides.append(f"listen={harness.HOST}:{mx.port},[::1]:{port6}")
        mx.start()
        client = harness.RawSmtp("::1", port6)
        self.addCleanup(client.close)
        self.assertEqual(client.read_reply().code, 220)
        self.assertReply(client.command("EHLO client6.test"), 250)
        self.assertReply(client.command("MAIL FROM:<six@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<bob@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(sender="six@client.test") + b".\r\n")
        self.assertEqual(client.read_reply().code, 250)
        client.command("RCPT TO:<u@evil.test>")  # out of sequence: a refusal to log
        self.assertEqual(len(sink.wait_for_messages(1)), 1)
        events = mx.wait_for_rejections(1)
        self.assertEqual(events[0]["client_ip"], "::1", events)


class BytesInFlightTest(harness.IntegrationTest):
    def open_message(self, mx, size):
        client = self.connect(mx)
        self.assertReply(client.command("MAIL FROM:<big@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<bob@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        line = b"x" * 998 + b"\r\n"
        client.send(message(sender="big@client.test") + line * (size // len(line)))
        return client

    def test_session_crossing_the_global_cap_gets_452_4_3_1(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, config={
            "limits": {"max_message_size": "1MiB", "max_bytes_in_flight": "1MiB"},
        })
        first = self.open_message(mx, 700 * 1024)       # held open, within the cap
        first.nothing_pending(wait=0.5)                   # let mxgate buffer it
        second = self.open_message(mx, 700 * 1024)      # together: past the cap
        second.send(b".\r\n")
        refused = second.read_reply(timeout=10)
        self.assertReply(refused, 452, "4.3.1")
        self.assertIsNotNone(refused.ref, refused)
        first.send(b".\r\n")
        self.assertEqual(first.read_reply(timeout=10).code, 250)
        self.assertEqual(len(sink.wait_for_messages(1)), 1)
        # The cap is released with the messages: a new one passes.
        third = self.open_message(mx, 700 * 1024)
        third.send(b".\r\n")
        self.assertEqual(third.read_reply(timeout=10).code, 250)


if __name__ == "__main__":
    unittest.main()
