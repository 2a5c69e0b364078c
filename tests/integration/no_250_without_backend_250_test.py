"""Promise (invariants 1 and 2): mxgate never says 250 to a message the backend has not
accepted. Backend down or lost: the client gets a 4xx and retries. Backend refusing:
the client gets the backend's own reply."""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402

MARKER = b"SECOND-HALF-MARKER"


def full_transaction(client, content):
    """Runs MAIL, RCPT, DATA, content, dot one step at a time; stops at the first reply
    that is not 2xx/3xx. Returns the list of (step, reply)."""
    steps = []
    for step, data in (("mail", b"MAIL FROM:<sender@client.test>\r\n"),
                       ("rcpt", b"RCPT TO:<user@example.org>\r\n"),
                       ("data", b"DATA\r\n"),
                       ("dot", content + b".\r\n")):
        client.send(data)
        try:
            reply = client.read_reply(15)
        except harness.ConnectionClosed:
            steps.append((step, None))
            break
        steps.append((step, reply))
        if reply.code >= 400:
            break
    return steps


class BackendDownTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        # Nothing listens on the backend port.
        cls.mx = cls.start_class_mxgate(backend_port=harness.free_port())

    def test_no_backend_gives_4xx_never_250(self):
        client = self.connect(self.mx)
        steps = full_transaction(client, message(subject="nowhere"))
        failures = [(step, reply) for step, reply in steps if reply is None or reply.code >= 400]
        self.assertTrue(failures, f"everything accepted with no backend: {steps}")
        step, reply = failures[0]
        self.assertIsNotNone(reply, f"connection closed without a reply at {step}: {steps}")
        self.assertIn(step, ("rcpt", "data", "dot"), steps)
        self.assertIn(reply.code, (421, 451, 450, 452), steps)
        self.assertTrue(reply.enhanced and reply.enhanced.startswith("4."), steps)
        self.assertNotIn("dot", [s for s, r in steps if r is not None and r.code == 250])

    def test_tempfail_carries_a_reference(self):
        client = self.connect(self.mx)
        steps = full_transaction(client, message(subject="nowhere"))
        _, reply = steps[-1]
        self.assertIsNotNone(reply, steps)
        self.assertEqual(reply.code // 100, 4, steps)
        self.assertIsNotNone(reply.ref, reply)


class BackendLostTest(harness.IntegrationTest):
    def test_backend_killed_mid_data_gives_4xx_and_nothing_delivered(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port)
        client = self.connect(mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        content = message(subject="lost", body="first half\r\n" * 50)
        client.send(content)
        time.sleep(0.3)
        sink.stop()  # the backend dies with the transaction open
        client.send(b"second half " + MARKER + b"\r\n" * 2 + b".\r\n")
        reply = client.read_reply(20)
        self.assertEqual(reply.code // 100, 4, reply)
        self.assertTrue(reply.enhanced and reply.enhanced.startswith("4."), reply)
        # smtp-sink died mid-transaction: whatever it dumped is partial, never the end.
        for transaction in sink.transactions():
            self.assertNotIn(MARKER, transaction.raw)

    def test_backend_drops_connection_at_dot_gives_4xx(self):
        # smtp-sink -q .: reads the whole message, then disconnects without a reply. The
        # backend may or may not have it: only a 4xx is safe (a duplicate, never a loss).
        sink = self.start_sink(drop=["."])
        mx = self.start_mxgate(backend_port=sink.port)
        client = self.connect(mx)
        steps = full_transaction(client, message(subject="dropped at dot"))
        self.assertEqual([s for s, _ in steps], ["mail", "rcpt", "data", "dot"], steps)
        reply = steps[-1][1]
        self.assertIsNotNone(reply, steps)
        self.assertEqual(reply.code // 100, 4, reply)

    def test_backend_421_at_dot_gives_4xx(self):
        sink = self.start_sink(disconnect_421=["."])
        mx = self.start_mxgate(backend_port=sink.port)
        client = self.connect(mx)
        steps = full_transaction(client, message(subject="421 at dot"))
        reply = steps[-1][1]
        self.assertEqual(steps[-1][0], "dot", steps)
        self.assertIsNotNone(reply, steps)
        self.assertEqual(reply.code // 100, 4, reply)

    def test_session_survives_backend_loss(self):
        # After a lost backend, the next transaction on the same client session uses a
        # new backend connection.
        sink = self.start_sink(drop=["."])
        mx = self.start_mxgate(backend_port=sink.port)
        client = self.connect(mx)
        steps = full_transaction(client, message(subject="dropped"))
        self.assertIsNotNone(steps[-1][1], steps)
        self.assertEqual(steps[-1][1].code // 100, 4, steps)
        if steps[-1][1].code == 421:
            return  # mxgate chose to close the session: allowed
        steps = full_transaction(client, message(subject="again"))
        self.assertEqual(steps[-1][0], "dot", steps)


class BackendRejectsTest(harness.IntegrationTest):
    """smtp-sink -f/-r with -B/-b: the backend refuses; its reply reaches the client."""

    def assertRelayed(self, reply, code, text):
        self.assertEqual(reply.code, code, reply)
        pattern = re.escape(text) + r"( \[ref [A-Z0-9]{8}\])?"
        self.assertRegex(reply.lines[-1], f"^{pattern}$")

    def test_backend_hard_rejects_rcpt(self):
        sink = self.start_sink(hard_reject=["RCPT"],
                               hard_reply="554 5.7.9 Sink policy says no")
        mx = self.start_mxgate(backend_port=sink.port)
        client = self.connect(mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertRelayed(client.command("RCPT TO:<user@example.org>"), 554,
                           "5.7.9 Sink policy says no")
        data = client.command("DATA")
        self.assertGreaterEqual(data.code, 500, data)  # no valid recipients
        self.assertReply(client.command("QUIT"), 221)
        self.assertNothingDelivered(sink)

    def test_backend_soft_rejects_rcpt(self):
        sink = self.start_sink(soft_reject=["RCPT"], soft_reply="451 4.7.1 Sink says later")
        mx = self.start_mxgate(backend_port=sink.port)
        client = self.connect(mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertRelayed(client.command("RCPT TO:<user@example.org>"), 451,
                           "4.7.1 Sink says later")

    def test_backend_rejects_message_at_dot(self):
        sink = self.start_sink(hard_reject=["."],
                               hard_reply="554 5.6.0 Sink refuses this content")
        mx = self.start_mxgate(backend_port=sink.port)
        client = self.connect(mx)
        steps = full_transaction(client, message(subject="refused content"))
        self.assertEqual([s for s, _ in steps], ["mail", "rcpt", "data", "dot"], steps)
        self.assertRelayed(steps[-1][1], 554, "5.6.0 Sink refuses this content")

    def test_backend_tempfails_message_at_dot(self):
        sink = self.start_sink(soft_reject=["."], soft_reply="452 4.3.1 Sink disk full")
        mx = self.start_mxgate(backend_port=sink.port)
        client = self.connect(mx)
        steps = full_transaction(client, message(subject="tempfailed content"))
        self.assertEqual([s for s, _ in steps], ["mail", "rcpt", "data", "dot"], steps)
        self.assertRelayed(steps[-1][1], 452, "4.3.1 Sink disk full")


if __name__ == "__main__":
    unittest.main()
