"""Promise (issue 8, without giving up what postscreen-like front-ends are for): a client
whose message the backend accepted lately (backend.early_connect_window) gets its backend
connection opened at MAIL, so the connect, greeting, XCLIENT and EHLO overlap its next
commands; any other client, a botnet above all, reaches the backend only after one of its
recipients passed every filter. An early connection that the backend has dropped in the
meantime (Postfix's smtpd_timeout) is replaced, not turned into a 4xx, and one opened for
a session that ends without a recipient is closed with QUIT.

The backend is the scripted server of backend_protocol_test, so each test sees when each
connection arrived and what it received."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from backend_protocol_test import ScriptedBackend  # noqa: E402
from harness import HOST, message  # noqa: E402

# Long enough for a connection mxgate would open at MAIL to arrive at the backend.
SETTLE = 0.5


class EarlyConnectTest(harness.IntegrationTest):
    def start_backend(self, **kwargs):
        backend = ScriptedBackend(**kwargs)
        self.addCleanup(backend.stop)
        return backend

    def client(self, mx, source):
        client = harness.RawSmtp(HOST, mx.port, source=source)
        self.addCleanup(client.close)
        self.assertReply(client.read_reply(), 220)
        self.assertReply(client.command("EHLO client.test"), 250)
        return client

    def deliver(self, mx, source, subject):
        client = self.client(mx, source)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject=subject) + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        self.assertReply(client.command("QUIT"), 221)

    def test_a_client_that_delivered_gets_its_backend_connection_at_mail(self):
        backend = self.start_backend()
        mx = self.start_mxgate(backend_port=backend.port)
        # First time: nothing reaches the backend before the recipient is accepted.
        first = self.client(mx, "127.0.0.1")
        self.assertReply(first.command("MAIL FROM:<sender@client.test>"), 250)
        time.sleep(SETTLE)
        self.assertEqual(len(backend.connections), 0, "a first-time client reached the backend at MAIL")
        self.assertReply(first.command("RCPT TO:<user@example.org>"), 250)
        self.assertEqual(len(backend.connections), 1)
        self.assertReply(first.command("DATA"), 354)
        first.send(message(subject="first") + b".\r\n")
        self.assertReply(first.read_reply(), 250)
        self.assertReply(first.command("QUIT"), 221)

        # Known now: its next session's backend connection is open, XCLIENT and EHLO done,
        # before it sends a recipient.
        again = self.client(mx, "127.0.0.1")
        self.assertReply(again.command("MAIL FROM:<sender@client.test>"), 250)
        harness.wait_until(lambda: len(backend.connections) == 2 and
                           len(backend.connections[1].commands) >= 2, what="early connection")
        early = backend.connections[1]
        self.assertEqual([c.split(" ", 1)[0] for c in early.commands], ["XCLIENT", "EHLO"])
        self.assertIn("ADDR=127.0.0.1", early.commands[0])
        self.assertIn("HELO=client.test", early.commands[0])
        self.assertReply(again.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(again.command("DATA"), 354)
        again.send(message(subject="second") + b".\r\n")
        self.assertReply(again.read_reply(), 250)
        self.assertEqual(len(backend.connections), 2)
        self.assertEqual(len(early.messages), 1)
        self.assertIn(b"Subject: second", early.messages[0])

        # Another address is a first-time client, whatever 127.0.0.1 did.
        other = self.client(mx, "127.0.0.2")
        self.assertReply(other.command("MAIL FROM:<sender@client.test>"), 250)
        time.sleep(SETTLE)
        self.assertEqual(len(backend.connections), 2, "an unknown client reached the backend at MAIL")

    def test_early_connects_are_counted(self):
        backend = self.start_backend()
        metrics_port = harness.free_port()
        mx = self.start_mxgate(backend_port=backend.port,
                               config={"metrics": {"listen": f"{HOST}:{metrics_port}"}})
        early_connects = lambda: harness.metric_value(metrics_port, "mxgate_backend_early_connects_total")
        self.deliver(mx, "127.0.0.1", "makes the client known")
        self.assertEqual(early_connects(), 0)
        self.deliver(mx, "127.0.0.1", "connected early")
        self.assertEqual(early_connects(), 1)

    def test_a_session_without_recipients_closes_its_early_connection(self):
        backend = self.start_backend()
        mx = self.start_mxgate(backend_port=backend.port)
        self.deliver(mx, "127.0.0.1", "makes the client known")
        client = self.client(mx, "127.0.0.1")
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        harness.wait_until(lambda: len(backend.connections) == 2, what="early connection")
        # Refused by mxgate (not a relay domain): the connection is never used.
        self.assertReply(client.command("RCPT TO:<someone@elsewhere.example>"), 550, "5.7.1")
        self.assertReply(client.command("QUIT"), 221)
        early = backend.connections[1]
        self.assertTrue(early.closed.wait(5))
        self.assertEqual(early.commands[-1], "QUIT")
        self.assertNotIn("MAIL", [c.split(" ", 1)[0] for c in early.commands])

    def test_an_early_connection_the_backend_dropped_is_replaced(self):
        backend = self.start_backend()
        mx = self.start_mxgate(backend_port=backend.port)
        self.deliver(mx, "127.0.0.1", "makes the client known")
        client = self.client(mx, "127.0.0.1")
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        harness.wait_until(lambda: len(backend.connections) == 2 and
                           len(backend.connections[1].commands) >= 2, what="early connection")
        # The backend times the idle connection out, as Postfix does after smtpd_timeout.
        backend.hang_up(backend.connections[1], b"421 4.4.2 backend.test Error: timeout exceeded\r\n")
        time.sleep(0.2)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="after the hang-up") + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        self.assertEqual(len(backend.connections), 3)
        self.assertEqual(len(backend.connections[2].messages), 1)

    def test_early_connect_false_waits_for_the_first_recipient(self):
        backend = self.start_backend()
        mx = self.start_mxgate(backend_port=backend.port,
                               config={"backend": {"early_connect": False}})
        self.deliver(mx, "127.0.0.1", "first")
        client = self.client(mx, "127.0.0.1")
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        time.sleep(SETTLE)
        self.assertEqual(len(backend.connections), 1)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertEqual(len(backend.connections), 2)

    def test_a_dead_backend_at_mail_gives_the_recipient_a_4xx_once(self):
        backend = self.start_backend()
        mx = self.start_mxgate(backend_port=backend.port)
        self.deliver(mx, "127.0.0.1", "makes the client known")
        backend.stop()   # nothing listens on the port any more
        client = self.client(mx, "127.0.0.1")
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        reply = client.command("RCPT TO:<user@example.org>")
        self.assertEqual(reply.code // 100, 4, reply)
        self.assertIn("[ref ", reply.text)


if __name__ == "__main__":
    unittest.main()
