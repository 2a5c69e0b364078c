"""Promise: content verdicts are applied before anything is forwarded past DATA. A message
a content rule rejects never reaches the backend (smtp-sink receives nothing); one that a
rule only scores is forwarded with the score header. Rules see decoded text (base64,
quoted-printable), not the wire form."""

import base64
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import lf, message  # noqa: E402

CONTENT_RULES = [
    {"name": "advance-fee", "where": "body", "pattern": "(?i)next of kin",
     "action": "reject", "description": "419 scam phrase"},
    {"name": "prize-subject", "where": "subject", "pattern": "(?i)you have won", "score": 2.5},
    {"name": "exe-attachment", "where": "attachment", "pattern": "(?i)\\.exe$",
     "action": "reject"},
    {"name": "crypto-pitch", "where": "body", "pattern": "(?i)guaranteed crypto returns",
     "action": "tag"},
]


def base64_message(subject, text):
    encoded = base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")
    return message(subject=subject, body=encoded, extra_headers=(
        "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64"))


class ContentFilterTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port,
                                        config={"content": CONTENT_RULES})

    def setUp(self):
        self.sink.clear()

    def send(self, content):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(content + b".\r\n")
        return client.read_reply(15)

    def rejection(self, ref):
        entries = harness.wait_until(
            lambda: [e for e in self.mx.rejections() if e.get("ref") == ref] or None, 5,
            what=f"rejection log line for ref {ref}")
        self.assertEqual(len(entries), 1, entries)
        return entries[0]

    def test_rejected_message_never_reaches_the_backend(self):
        reply = self.send(message(subject="proposal",
                                  body="I present you as the NEXT OF KIN.\r\n"))
        self.assertReply(reply, 550, "5.7.1")
        self.assertIsNotNone(reply.ref, reply)
        self.assertNothingDelivered(self.sink)
        entry = json.dumps(self.rejection(reply.ref))
        self.assertIn("advance-fee", entry)
        self.assertIn("content", entry)

    def test_rule_matches_decoded_base64_text(self):
        reply = self.send(base64_message("proposal", "Please act as next of kin.\n"))
        self.assertReply(reply, 550, "5.7.1")
        self.assertNothingDelivered(self.sink)

    def test_attachment_name_rule_rejects(self):
        boundary = "b-42"
        body = (f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
                f"--{boundary}\r\nContent-Type: application/octet-stream; name=\"setup.EXE\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--{boundary}--\r\n")
        reply = self.send(message(subject="files", body=body, extra_headers=(
            "MIME-Version: 1.0", f"Content-Type: multipart/mixed; boundary=\"{boundary}\"")))
        self.assertReply(reply, 550, "5.7.1")
        self.assertNothingDelivered(self.sink)

    def test_scored_message_is_forwarded_with_the_score_header(self):
        content = message(subject="You have WON a prize", body="Nothing else here.\r\n")
        reply = self.send(content)
        self.assertReply(reply, 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.original, lf(content))
        self.assertRegex(received.added_headers, rb"^X-Mxgate-Score: 2\.5\b")

    def test_tag_rule_forwards_the_message_marked_with_the_rule(self):
        content = message(subject="offer", body="Guaranteed crypto returns, act now.\r\n")
        reply = self.send(content)
        self.assertReply(reply, 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.original, lf(content))
        self.assertRegex(received.added_headers,
                         rb"^X-Mxgate-Score: 0\.0 \(tag: crypto-pitch\)")

    def test_clean_message_is_forwarded_unchanged(self):
        content = message(subject="lunch", body="Lunch on Thursday?\r\n")
        self.assertReply(self.send(content), 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.original, lf(content))


if __name__ == "__main__":
    unittest.main()
