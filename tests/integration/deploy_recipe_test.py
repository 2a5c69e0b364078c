"""Promise: docs/deploy.md's Postfix recipe is the one the tests run, and it does what the
page says: Postfix stays a second relay gate for the real client passed by XCLIENT (even a
loopback client in mynetworks cannot relay), and its bare-newline defence also covers the
proxy on loopback because the exclusions are empty (the default would exempt it)."""

import os
import re
import shutil
import sys
import types
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST  # noqa: E402

DEPLOY_MD = os.path.join(harness.SOURCE_DIR, "docs", "deploy.md")


def tested_main_cf():
    """The `key = value` lines of the block after `<!-- tested: main.cf -->`."""
    with open(DEPLOY_MD) as f:
        text = f.read()
    match = re.search(r"<!-- tested: main\.cf -->\s*```\n(.*?)```", text, re.S)
    if not match:
        raise AssertionError("docs/deploy.md has no tested main.cf block")
    settings = {}
    for line in match.group(1).splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def parse_main_cf(text):
    return {key.strip(): value.strip() for key, _, value in
            (line.partition("=") for line in text.splitlines() if "=" in line)}


class DeployDocMatchesHarnessTest(unittest.TestCase):
    def test_tested_block_is_what_private_postfix_runs(self):
        documented = tested_main_cf()
        self.assertIn("smtpd_forbid_bare_newline_exclusions", documented)
        postfix = harness.PrivatePostfix(sink=types.SimpleNamespace(port=10026), start=False)
        self.addCleanup(shutil.rmtree, postfix.dir, True)
        running = parse_main_cf(postfix.main_cf())
        for key, value in documented.items():
            self.assertEqual(running.get(key), value, f"{key}: docs/deploy.md and harness differ")


class PostfixRecipeTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.postfix = cls.start_class_postfix(sink=cls.sink, relay_domains=["example.org"])

    def tearDown(self):
        if self.failed_so_far():
            print(f"\n--- postfix log:\n{self.postfix.log()[-6000:]}", file=sys.stderr)
        super().tearDown()

    def test_postfix_refuses_relay_even_when_mxgate_would_allow_it(self):
        # An mxgate whose relay_domains are wider than Postfix's: Postfix, judging the
        # real client (loopback, inside mynetworks), still refuses.
        mx = self.start_mxgate(backend_port=self.postfix.port,
                               config={"relay_domains": ["example.org", "example.net"]})
        client = self.connect(mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        reply = client.command("RCPT TO:<someone@example.net>")
        self.assertEqual(reply.code // 100, 5, reply)
        self.assertIn("Relay access denied", reply.text)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        harness.wait_until(lambda: "Relay access denied" in self.postfix.log(),
                           what="Postfix's own relay refusal in its log")
        # Postfix logged the client XCLIENT named, not a bare proxy connection.
        self.assertRegex(self.postfix.log(), r"NOQUEUE: reject: RCPT from \S+\[127\.0\.0\.1\]")

    def bare_lf_reply(self, port):
        client = harness.session(port)
        self.addCleanup(client.close)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(b"Subject: smuggle\r\n\r\nfirst\nsecond\r\n.\r\n")
        return client.read_reply(15)

    def test_bare_newline_from_loopback_is_refused(self):
        reply = self.bare_lf_reply(self.postfix.port)
        self.assertEqual(reply.code // 100, 5, reply)

    def test_default_exclusions_would_exempt_the_proxy(self):
        # The reason the recipe empties the exclusions: with Postfix's default
        # ($mynetworks), the same bytes from loopback are accepted.
        postfix = harness.PrivatePostfix(
            sink=self.sink, relay_domains=["example.org"],
            extra_main_cf={"smtpd_forbid_bare_newline_exclusions": "$mynetworks"})
        self.addCleanup(postfix.cleanup)
        reply = self.bare_lf_reply(postfix.port)
        self.assertEqual(reply.code, 250, reply)


if __name__ == "__main__":
    unittest.main()
