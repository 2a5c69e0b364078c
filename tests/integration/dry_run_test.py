"""Promise (issue 4): a rule in dry run (`action: log`, or global `dry_run`) is computed,
logged and counted as if enforced, but the mail passes; an enforced score sheet is logged
whole, with the threshold that fired, under the ref the client was given."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402


class DryRunTest(harness.IntegrationTest):
    def send(self, mx, sender):
        client = self.connect(mx)
        self.assertReply(client.command(f"MAIL FROM:<{sender}>"), 250)
        rcpt = client.command("RCPT TO:<bob@example.org>")
        if rcpt.code != 250:
            client.command("QUIT")
            return rcpt
        self.assertReply(client.command("DATA"), 354)
        client.send(message(sender=sender) + b".\r\n")
        final = client.read_reply()
        client.command("QUIT")
        return final

    def test_rule_in_dry_run_logs_but_lets_mail_through(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, config={
            "access": [{"name": "blocked-senders", "kind": "sender",
                        "values": ["spammer@bad.test"], "action": "log",
                        "score": 12}],
        })
        final = self.send(mx, "spammer@bad.test")
        self.assertEqual(final.code, 250, final)
        sink.wait_for_messages(1)
        events = [e for e in mx.wait_for_rejections(1) if e.get("type") == "dry_run"]
        self.assertTrue(events, mx.rejections())
        self.assertEqual(events[0]["from"], "spammer@bad.test")
        self.assertIn("blocked-senders", [c["rule"] for c in events[0]["contributions"]]
                      + [events[0].get("rule")])

    def test_score_sheet_and_threshold_logged_with_the_ref(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, config={
            "scoring": {"tag": 2, "tempfail": 6, "reject": 7},
            "access": [
                {"name": "bad-domain", "kind": "sender_domain", "values": ["bad.test"], "score": 4},
                {"name": "bad-helo", "kind": "helo", "values": ["client.test"], "score": 4},
            ],
        })
        refused = self.send(mx, "x@bad.test")
        self.assertEqual(refused.code, 550, refused)
        self.assertIsNotNone(refused.ref, refused)
        event = next(e for e in mx.wait_for_rejections(1) if e.get("ref") == refused.ref)
        self.assertEqual(event["filter"], "scoring")
        self.assertEqual(event["score"], 8)
        self.assertEqual(event["threshold"], 7)
        rules = sorted(c["rule"] for c in event["contributions"])
        self.assertEqual(rules, ["bad-domain", "bad-helo"])
        self.assertNothingDelivered(sink)


if __name__ == "__main__":
    unittest.main()
