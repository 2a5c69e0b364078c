"""Promise (invariant 6): every reject and tempfail is traceable. The reference printed
in the SMTP reply finds exactly one JSON line in the rejection log that says who, what,
when, at which stage, and what was answered."""

import datetime
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402

REQUIRED_KEYS = {"ref", "time", "client_ip", "helo", "from", "stage", "reply"}


def strip_brackets(address):
    return address[1:-1] if address.startswith("<") and address.endswith(">") else address


class RejectionLogTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port)

    def entry_for(self, ref):
        def find():
            entries = [e for e in self.mx.rejections() if e.get("ref") == ref]
            return entries or None
        entries = harness.wait_until(find, 5, what=f"rejection log line for ref {ref}")
        self.assertEqual(len(entries), 1, entries)
        return entries[0]

    def recipients(self, entry):
        """Every recipient the line names: the accepted ones (rcpts) and the one being
        refused (rcpt)."""
        names = []
        for key in ("rcpts", "rcpt"):
            value = entry.get(key)
            if value:
                values = value if isinstance(value, list) else [value]
                names += [strip_brackets(r) for r in values]
        return names

    def assertCommonFields(self, entry, reply):
        self.assertTrue(REQUIRED_KEYS <= set(entry), entry)
        self.assertTrue("rcpts" in entry or "rcpt" in entry, entry)
        self.assertEqual(entry["client_ip"], "127.0.0.1")
        self.assertEqual(entry["helo"], "client.test")
        self.assertIn(str(reply.code), entry["reply"])
        self.assertIn(reply.ref, entry["reply"])
        # time is ISO 8601 (or a number of seconds since the epoch).
        if isinstance(entry["time"], (int, float)):
            self.assertGreater(entry["time"], 1.6e9)
        else:
            datetime.datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))

    def test_session_summary_lists_each_accepted_message(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<summary@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<bob@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(harness.message(sender="summary@client.test") + b".\r\n")
        self.assertEqual(client.read_reply().code, 250)
        client.command("QUIT")
        client.close()

        def summary():
            lines = [e for e in self.mx.rejections() if e.get("type") == "session"
                     and any(m.get("from") == "summary@client.test"
                             for m in e.get("messages", []))]
            return lines or None
        [line] = harness.wait_until(summary, 5, what="session summary line")
        [accepted] = line["messages"]
        self.assertEqual(accepted["rcpts"], ["bob@example.org"])
        self.assertGreater(accepted["size"], 0)
        self.assertIn("queue_id", accepted)   # smtp-sink names none; Postfix does
        self.assertEqual(line["messages_accepted"], 1)

    def test_relay_refusal_logged_under_reply_reference(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<spammer@client.test>"), 250)
        reply = client.command("RCPT TO:<victim@evil.test>")
        self.assertReply(reply, 550, "5.7.1")
        self.assertRegex(reply.lines[-1], r" \[ref [A-Z0-9]{8}\]$")
        entry = self.entry_for(reply.ref)
        self.assertCommonFields(entry, reply)
        self.assertEqual(strip_brackets(entry["from"]), "spammer@client.test")
        self.assertIn("victim@evil.test", self.recipients(entry))
        self.assertEqual(entry["stage"], "rcpt")
        self.assertIn("5.7.1", entry["reply"])

    def test_each_rejection_has_its_own_reference(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<spammer@client.test>"), 250)
        first = client.command("RCPT TO:<a@evil.test>")
        second = client.command("RCPT TO:<b@evil.test>")
        self.assertIsNotNone(first.ref, first)
        self.assertIsNotNone(second.ref, second)
        self.assertNotEqual(first.ref, second.ref)
        self.assertIn("a@evil.test", self.recipients(self.entry_for(first.ref)))
        self.assertIn("b@evil.test", self.recipients(self.entry_for(second.ref)))

    def test_smuggling_refusal_logged_at_data_stage(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="bare lf") + b"one\ntwo\r\n.\r\n")
        reply = client.read_reply(15)
        self.assertReply(reply, 550, "5.5.2")
        self.assertIsNotNone(reply.ref, reply)
        entry = self.entry_for(reply.ref)
        self.assertCommonFields(entry, reply)
        self.assertEqual(entry["stage"], "data")
        self.assertIn("user@example.org", self.recipients(entry))


class TempfailLogTest(harness.IntegrationTest):
    def test_backend_down_tempfail_logged(self):
        mx = self.start_mxgate(backend_port=harness.free_port())
        client = self.connect(mx)
        reply = client.command("MAIL FROM:<sender@client.test>")
        if reply.code == 250:
            reply = client.command("RCPT TO:<user@example.org>")
        if reply.code == 250:
            self.assertReply(client.command("DATA"), 354)
            client.send(message(subject="nowhere") + b".\r\n")
            reply = client.read_reply(15)
        self.assertEqual(reply.code // 100, 4, reply)
        self.assertIsNotNone(reply.ref, reply)
        entry = harness.wait_until(
            lambda: [e for e in mx.rejections() if e.get("ref") == reply.ref], 5,
            what="tempfail log line")[0]
        self.assertEqual(entry["client_ip"], "127.0.0.1")
        self.assertIn(str(reply.code), entry["reply"])


if __name__ == "__main__":
    unittest.main()
