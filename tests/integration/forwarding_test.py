"""Promise: a message sent through mxgate reaches the backend exactly as the client sent
it (headers, body, dot-stuffing, envelope), and the client's reply to its end of data is
the backend's reply (invariant 1)."""

import os
import smtplib
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST, lf, message  # noqa: E402

# smtp-sink's replies, which mxgate must relay.
SINK_DATA_OK = b"250 2.0.0 Ok\r\n"


class ForwardingTest(harness.IntegrationTest):
    """With the score header turned off, nothing may differ."""

    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port,
                                        config={"smtp": {"score_header": ""}})

    def setUp(self):
        self.sink.clear()

    def transaction(self, client, sender, recipients, content):
        """MAIL, RCPT..., DATA, content (already dot-stuffed, CRLF), dot; returns the
        reply to the dot."""
        self.assertReply(client.command(f"MAIL FROM:<{sender}>"), 250)
        for recipient in recipients:
            self.assertReply(client.command(f"RCPT TO:<{recipient}>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(content + b".\r\n")
        return client.read_reply(15)

    def test_smtplib_message_arrives_byte_exact(self):
        content = message(subject="smtplib", body=(
            "First line.\r\n\r\nA line with trailing spaces   \r\n"
            "\tA line starting with a tab\r\n"
            "Some punctuation: <>()[]:;@\\,.\"'\r\n" + "x" * 990 + "\r\nLast line.\r\n"))
        with smtplib.SMTP(HOST, self.mx.port, local_hostname="client.test", timeout=10) as smtp:
            code, _ = smtp.ehlo()
            self.assertEqual(code, 250)
            self.assertEqual(smtp.mail("sender@client.test")[0], 250)
            self.assertEqual(smtp.rcpt("user@example.org")[0], 250)
            code, text = smtp.data(content)
        self.assertEqual((code, text), (250, b"2.0.0 Ok"))
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.content, lf(content))
        self.assertTrue(received.mail.startswith("<sender@client.test>"), received.mail)
        self.assertEqual([harness.canonical_path(r) for r in received.rcpts],
                         ["<user@example.org>"])

    def test_swaks_message_arrives_byte_exact(self):
        body = ("From: <swaks@client.test>\nTo: <user@example.org>\nSubject: via swaks\n"
                "Message-ID: <swaks-1@client.test>\n\nHello from swaks.\n.leading dot\n"
                "..two leading dots\nBye.")  # swaks adds the final CRLF
        with tempfile.NamedTemporaryFile("w", suffix=".eml", delete=False) as f:
            f.write(body)
            data_file = f.name
        self.addCleanup(os.unlink, data_file)
        result = harness.swaks(self.mx.port, "--helo", "client.test",
                               "--from", "swaks@client.test", "--to", "user@example.org",
                               "--data", "@" + data_file)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        # The reply swaks got to its dot is smtp-sink's.
        self.assertIn("<-  250 2.0.0 Ok\n", result.stdout)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.content, body.encode() + b"\n")

    def test_reply_to_dot_is_backend_reply(self):
        client = self.connect(self.mx)
        reply = self.transaction(client, "a@client.test", ["user@example.org"],
                                 message(subject="reply"))
        self.assertEqual(reply.raw, SINK_DATA_OK)
        self.assertEqual(len(self.sink.wait_for_messages(1)), 1)

    def test_multiple_recipients(self):
        recipients = ["one@example.org", "two@example.org", "Three@Example.Org"]
        client = self.connect(self.mx)
        content = message(subject="three recipients")
        reply = self.transaction(client, "a@client.test", recipients, content)
        self.assertReply(reply, 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual([harness.canonical_path(r) for r in received.rcpts],
                         [harness.canonical_path(f"<{r}>") for r in recipients])
        self.assertEqual(received.content, lf(content))

    def test_rset_then_second_and_third_transaction(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<aborted@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<aborted@example.org>"), 250)
        self.assertReply(client.command("RSET"), 250)
        first = message(subject="second transaction")
        self.assertReply(self.transaction(client, "b@client.test", ["b@example.org"], first), 250)
        second = message(subject="third transaction")
        self.assertReply(self.transaction(client, "c@client.test", ["c@example.org"], second), 250)
        self.assertReply(client.command("QUIT"), 221)
        received = self.sink.wait_for_messages(2)
        self.assertEqual(len(received), 2, received)
        # smtp-sink's dump files carry no order finer than the file system clock, so
        # the messages are matched by envelope.
        self.assertEqual(sorted((m.mail.split()[0], harness.canonical_path(m.rcpts[0]), m.content)
                                for m in received),
                         [("<b@client.test>", "<b@example.org>", lf(first)),
                          ("<c@client.test>", "<c@example.org>", lf(second))])

    def test_dot_stuffing_round_trip(self):
        # What the client means, and the same dot-stuffed on the wire (RFC 5321 4.5.2).
        lines = [".", "..", ".hidden", "...three", " .", ".\t.", "end"]
        headers = message(subject="dots", body="")
        wire = headers + b"".join(
            (b"." + line.encode() if line.startswith(".") else line.encode()) + b"\r\n"
            for line in lines)
        client = self.connect(self.mx)
        self.assertReply(self.transaction(client, "a@client.test", ["user@example.org"], wire),
                         250)
        [received] = self.sink.wait_for_messages(1)
        # smtp-sink un-stuffs what mxgate sent: it must be the client's text again.
        self.assertEqual(received.content, lf(headers) + "\n".join(lines).encode() + b"\n")

    def test_empty_body(self):
        client = self.connect(self.mx)
        content = b"Subject: empty body\r\n\r\n"
        self.assertReply(self.transaction(client, "a@client.test", ["user@example.org"],
                                          content), 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.content, lf(content))


class ScoreHeaderTest(harness.IntegrationTest):
    """By default mxgate prepends its score header (smtp.score_header) and changes
    nothing else."""

    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port)

    def test_only_the_score_header_is_added(self):
        content = message(subject="score header")
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(content + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.original, lf(content))
        self.assertRegex(received.added_headers, rb"^X-Mxgate-Score: -?[0-9.]+\n$")


if __name__ == "__main__":
    unittest.main()
