"""Promise (issue 5): reputation moves with what clients do, is shared through a real
redis-server, and support can read and reset it. A client whose mail the backend accepts
earns a negative score (`mxgate reputation show` says so); a client whose recipients are
refused earns a positive one until its next session is rejected early for it; `mxgate
reputation reset` gives it a clean slate."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from ratelimit_test import REDIS_SERVER, RedisServer  # noqa: E402

GOOD = "127.0.0.1"
BAD = "127.0.0.6"  # loopback sources: the kernel lets a client pick any 127/8 address



class ReputationTest(harness.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        if not os.access(REDIS_SERVER, os.X_OK):
            raise unittest.SkipTest("redis-server is not installed")
        harness.require_mxgate()
        cls.sink = cls.start_class_sink()

    def setUp(self):
        self.redis = RedisServer()
        self.addCleanup(self.redis.cleanup)
        self.mx = self.start_mxgate(backend_port=self.sink.port, config={
            "redis": {"address": f"{harness.HOST}:{self.redis.port}", "timeout": "500ms"},
            "reputation": {"min_events": 2, "max_score": 8, "min_score": -3},
            "scoring": {"tag": 4, "tempfail": 6, "reject": 7},
        })

    def client(self, source, helo="client.test"):
        client = harness.RawSmtp(harness.HOST, self.mx.port, source=source)
        self.addCleanup(client.close)
        self.assertReply(client.read_reply(), 220)
        self.assertReply(client.command("EHLO " + helo), 250)
        return client

    def good_session(self):
        client = self.client(GOOD)
        self.assertReply(client.command("MAIL FROM:<alice@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(harness.message() + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        client.command("QUIT")
        client.close()

    def bad_session(self):
        """Three recipients outside relay_domains: three refusals. Returns the first reply."""
        client = self.client(BAD)
        self.assertReply(client.command("MAIL FROM:<spam@bad.test>"), 250)
        first = client.command("RCPT TO:<victim@elsewhere.test>")
        for _ in range(2):
            client.command("RCPT TO:<victim@elsewhere.test>")
        client.command("QUIT")
        client.close()
        return first

    def reputation(self, *args):
        return harness.run_mxgate("reputation", "-c", self.mx.config_path, *args)

    def test_good_and_bad_sessions_move_the_score_and_reset_clears_it(self):
        for _ in range(3):
            self.good_session()
        shown = self.reputation("show", GOOD)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertRegex(shown.stdout, r"ip:127\.0\.0\.1: good [1-9][0-9.]* bad 0\.00 score -")

        first = self.bad_session()
        self.assertGreaterEqual(first.code, 500, first)  # not a relay domain
        for _ in range(3):
            self.bad_session()
        shown = self.reputation("show", BAD)
        self.assertRegex(shown.stdout, r"ip:127\.0\.0\.6: good 0\.00 bad [1-9][0-9.]* score \+")
        # Now its reputation alone refuses its next session, before any bad recipient.
        client = self.client(BAD)
        self.assertReply(client.command("MAIL FROM:<spam@bad.test>"), 250)
        refused = client.command("RCPT TO:<user@example.org>")
        self.assertIn(refused.code, (451, 550, 554), refused)
        self.assertIn("poor reputation", refused.text)
        self.assertIsNotNone(refused.ref)
        client.close()

        reset = self.reputation("reset", BAD)
        self.assertEqual(reset.returncode, 0, reset.stderr)
        self.assertIn("ip:127.0.0.6: reset", reset.stdout)
        # Its IP and net records are gone (its HELO and sender domain keep theirs).
        client = self.client(BAD, helo="fresh.test")
        self.assertReply(client.command("MAIL FROM:<someone@fresh.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)


if __name__ == "__main__":
    unittest.main()
