"""Promise: PIPELINING (RFC 2920) works when offered, is refused when it was not offered,
and commands pipelined after STARTTLS are discarded (invariant 4, CVE-2011-0411)."""

import os
import shutil
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402


class PipeliningTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port)

    def setUp(self):
        self.sink.clear()

    def test_pipelined_transaction_gets_replies_in_order(self):
        client = self.connect(self.mx)
        self.assertIn("PIPELINING", [line.upper() for line in client.ehlo_reply.lines])
        client.send(b"MAIL FROM:<sender@client.test>\r\n"
                    b"RCPT TO:<one@example.org>\r\n"
                    b"RCPT TO:<victim@evil.test>\r\n"
                    b"RCPT TO:<two@example.org>\r\n"
                    b"DATA\r\n")
        replies = client.read_replies(5, timeout=10)
        self.assertEqual([r.code for r in replies], [250, 250, 550, 250, 354], replies)
        self.assertEqual(replies[2].enhanced, "5.7.1")
        content = message(subject="pipelined")
        client.send(content + b".\r\nQUIT\r\n")
        end, bye = client.read_replies(2, timeout=15)
        self.assertReply(end, 250)
        self.assertReply(bye, 221)
        self.assertTrue(client.wait_closed(5))
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual([harness.canonical_path(r) for r in received.rcpts],
                         ["<one@example.org>", "<two@example.org>"])
        self.assertEqual(received.original, harness.lf(content))

    def test_two_pipelined_transactions_in_one_write(self):
        client = self.connect(self.mx)
        first, second = message(subject="first"), message(subject="second")
        client.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n")
        self.assertEqual([r.code for r in client.read_replies(3, timeout=10)], [250, 250, 354])
        client.send(first + b".\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<b@example.org>\r\n"
                    b"DATA\r\n")
        self.assertEqual([r.code for r in client.read_replies(4, timeout=15)],
                         [250, 250, 250, 354])
        client.send(second + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        received = self.sink.wait_for_messages(2)
        self.assertEqual(len(received), 2, received)
        self.assertEqual(sorted((m.mail.split()[0], m.original) for m in received),
                         [("<a@client.test>", harness.lf(first)),
                          ("<b@client.test>", harness.lf(second))])

    def test_pipelining_after_helo_is_refused(self):
        # PIPELINING was never offered (HELO, not EHLO): a client that does not wait for
        # replies is out of sync, as a spam bot or a smuggling attempt would be.
        client = self.connect(self.mx, ehlo=False)
        client.send(b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<user@example.org>\r\n"
                    b"DATA\r\n")
        replies = []
        try:
            while len(replies) < 3:
                replies.append(client.read_reply(5))
        except harness.ConnectionClosed:
            pass
        self.assertTrue(any(r.code == 554 and r.enhanced == "5.5.0" for r in replies), replies)
        self.assertNotIn(354, [r.code for r in replies], replies)
        self.assertNothingDelivered(self.sink)


class StartTlsInjectionTest(harness.IntegrationTest):
    """CVE-2011-0411: commands pipelined after STARTTLS are discarded. One mxgate per
    test, so a crash here cannot take the other tests with it."""

    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.cert_dir = harness.make_tempdir("mxgate-cert-")
        cls.addClassCleanup(shutil.rmtree, cls.cert_dir, True)
        cls.cert_file, cls.key_file = harness.make_test_cert(cls.cert_dir)

    def setUp(self):
        self.sink.clear()
        self.mx = self.start_mxgate(
            backend_port=self.sink.port,
            config={"tls": {"cert_file": self.cert_file, "key_file": self.key_file}})

    def test_commands_pipelined_after_starttls_are_discarded(self):
        client = self.connect(self.mx)
        self.assertIn("STARTTLS", [line.upper() for line in client.ehlo_reply.lines])
        client.send(b"STARTTLS\r\nRSET\r\n")
        ready = client.read_reply()
        self.assertReply(ready, 220)
        # No clear-text answer to RSET (it would make the handshake fail, too).
        self.assertEqual(client.buffer, b"")
        client.starttls()
        # Nor an answer inside TLS: the injected command was thrown away.
        self.assertTrue(client.nothing_pending(0.5), client.buffer)
        ehlo = client.command("EHLO client.test")
        self.assertReply(ehlo, 250)
        self.assertTrue(ehlo.lines[0].startswith("mx.test"), ehlo)
        self.assertNotIn("STARTTLS", [line.upper() for line in ehlo.lines])
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="after starttls") + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        self.assertEqual(len(self.sink.wait_for_messages(1)), 1)

    def test_mail_pipelined_after_starttls_does_not_reach_backend(self):
        client = self.connect(self.mx)
        client.send(b"STARTTLS\r\nMAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@example.org>\r\n"
                    b"DATA\r\nSubject: injected\r\n\r\ninjected\r\n.\r\n")
        self.assertReply(client.read_reply(), 220)
        self.assertEqual(client.buffer, b"")
        client.starttls()
        self.assertTrue(client.nothing_pending(0.5), client.buffer)
        self.assertReply(client.command("EHLO client.test"), 250)
        self.assertReply(client.command("QUIT"), 221)
        self.assertNothingDelivered(self.sink)


if __name__ == "__main__":
    unittest.main()
