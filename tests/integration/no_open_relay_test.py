"""Promise (invariant 3): mxgate accepts a recipient only for a configured relay domain,
whatever form the address takes, and nothing it refuses reaches the backend."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402

REFUSED = [
    "<u@evil.test>",
    "<@example.org:u@evil.test>",          # source route
    "<@evil.test,@example.org:u@evil.test>",
    "<u%evil.test@example.org>",           # percent hack
    "<evil.test!u@example.org>",           # bang path
    '<"u@evil.test"@example.org>',         # quoted local part hiding an address
    '<"u%evil.test"@example.org>',
    "<u@[127.0.0.1]>",                     # address literal
    "<u@evil.test.>",
    "<u@sub.example.org>",                 # a subdomain is not the relay domain
    "<u@example.org.evil.test>",
    "<u@evilexample.org>",
]

ACCEPTED = ["<u@example.org>", "<U@EXAMPLE.ORG>", "<u@example.org.>", "<u@Example.Org>"]


class NoOpenRelayTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port)

    def setUp(self):
        self.sink.clear()

    def test_each_relay_form_refused_with_550_5_7_1(self):
        for recipient in REFUSED:
            with self.subTest(recipient=recipient):
                client = self.connect(self.mx)
                self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
                reply = client.command(f"RCPT TO:{recipient}")
                self.assertReply(reply, 550, "5.7.1", recipient)
                # Without an accepted recipient there is nothing to send.
                data = client.command("DATA")
                self.assertGreaterEqual(data.code, 500, data)
                self.assertLess(data.code, 600, data)
                client.command("QUIT")
                client.close()
        self.assertNothingDelivered(self.sink)

    def test_relay_domain_forms_accepted_and_only_they_are_forwarded(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        for recipient in ACCEPTED:
            with self.subTest(recipient=recipient):
                self.assertReply(client.command(f"RCPT TO:{recipient}"), 250, msg=recipient)
        # Refused recipients mixed in the same transaction do not travel with it.
        for recipient in REFUSED[:4]:
            self.assertReply(client.command(f"RCPT TO:{recipient}"), 550, "5.7.1", recipient)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="accepted forms") + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual([harness.canonical_path(r) for r in received.rcpts],
                         [harness.canonical_path(r) for r in ACCEPTED])
        self.assertNotIn(b"evil", received.raw)

    def test_null_sender_accepted(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<>"), 250)
        self.assertReply(client.command("RCPT TO:<postmaster@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        content = b"Subject: bounce\r\n\r\nDelivery report.\r\n"
        client.send(content + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertTrue(received.mail.startswith("<>"), received.mail)
        self.assertEqual(received.original, harness.lf(content))

    def test_refused_recipient_is_not_sent_to_backend(self):
        # A refused RCPT never reaches the backend, even as a failed RCPT.
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<victim@evil.test>"), 550, "5.7.1")
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="one good recipient") + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual([harness.canonical_path(r) for r in received.rcpts],
                         ["<user@example.org>"])


if __name__ == "__main__":
    unittest.main()
