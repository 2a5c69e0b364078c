"""Promise: a reload never drops a connection and never installs a broken policy. After
SIGHUP (or POST /reload) with a good file, new sessions get the new policy while a session
opened before keeps the one it started with and finishes normally; a bad file is refused,
its errors are logged (and returned by POST /reload), and the old policy stays."""

import os
import signal
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST, message  # noqa: E402


def post_reload(port):
    request = urllib.request.Request(f"http://{HOST}:{port}/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class ReloadTest(harness.IntegrationTest):
    def setUp(self):
        self.sink = self.start_sink()
        self.metrics_port = harness.free_port()
        self.base = {"relay_domains": ["example.org"],
                     "metrics": {"listen": f"{HOST}:{self.metrics_port}"}}
        self.mx = self.start_mxgate(backend_port=self.sink.port, config=self.base)
        harness.wait_for_port(HOST, self.metrics_port, proc=self.mx.proc)

    def write_config(self, extra=None, text=None):
        if text is None:
            defaults = {"hostname": "mx.test", "listen": [f"{HOST}:{self.mx.port}"],
                        "backend": {"address": f"{HOST}:{self.sink.port}", "connect_timeout": "2s"},
                        "log": {"rejections": self.mx.rejections_path}}
            text = harness.to_yaml(harness.deep_merge(defaults, {**self.base, **(extra or {})})) + "\n"
        with open(self.mx.config_path + ".new", "w") as f:
            f.write(text)
        os.replace(self.mx.config_path + ".new", self.mx.config_path)

    def generation(self):
        return harness.metric_value(self.metrics_port, "mxgate_config_generation")

    def rcpt_reply(self, client, recipient):
        return client.command(f"RCPT TO:<{recipient}>")

    def finish_message(self, client):
        self.assertReply(client.command("DATA"), 354)
        client.send(message() + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        self.assertReply(client.command("QUIT"), 221)

    def test_sighup_good_file_applies_to_new_sessions_only(self):
        before = self.connect(self.mx)  # opened on generation 1
        self.assertReply(before.command("MAIL FROM:<sender@client.test>"), 250)

        self.write_config({"relay_domains": ["example.org", "example.net"]})
        os.kill(self.mx.proc.pid, signal.SIGHUP)
        harness.wait_until(lambda: self.generation() == 2, what="generation 2")
        self.assertIn("reloaded", self.mx.stderr_text())

        after = self.connect(self.mx)
        self.assertReply(after.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(self.rcpt_reply(after, "new@example.net"), 250)
        self.finish_message(after)

        # The session from before keeps its policy, and is not dropped.
        self.assertReply(self.rcpt_reply(before, "new@example.net"), 550, "5.7.1")
        self.assertReply(self.rcpt_reply(before, "user@example.org"), 250)
        self.finish_message(before)
        self.assertEqual(len(self.sink.wait_for_messages(2)), 2)

    def test_sighup_bad_file_is_refused_and_old_policy_stays(self):
        inflight = self.connect(self.mx)
        self.assertReply(inflight.command("MAIL FROM:<sender@client.test>"), 250)
        self.write_config(text=self.mx.config_text().replace(
            "relay_domains:", "limits: {max_recipients: many}\nrelay_domains:"))
        os.kill(self.mx.proc.pid, signal.SIGHUP)
        harness.wait_until(lambda: "reload refused" in self.mx.stderr_text(),
                           what="the refusal in the log")
        self.assertIn("max_recipients", self.mx.stderr_text())
        self.assertEqual(self.generation(), 1)
        self.assertEqual(harness.metric_value(self.metrics_port, "mxgate_config_reload_failures_total"), 1)
        self.assertTrue(self.mx.running())

        self.assertReply(self.rcpt_reply(inflight, "user@example.org"), 250)
        self.finish_message(inflight)
        fresh = self.connect(self.mx)
        self.assertReply(fresh.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(self.rcpt_reply(fresh, "user@example.org"), 250)
        self.assertReply(self.rcpt_reply(fresh, "new@example.net"), 550)

    def test_post_reload_good_then_bad(self):
        self.write_config({"relay_domains": ["example.org", "example.com"]})
        status, body = post_reload(self.metrics_port)
        self.assertEqual((status, body), (200, "generation 2\n"))
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(self.rcpt_reply(client, "x@example.com"), 250)

        self.write_config(text=self.mx.config_text().replace(
            "relay_domains:", "no_such_key: 1\nrelay_domains:"))
        status, body = post_reload(self.metrics_port)
        self.assertEqual(status, 400, body)
        self.assertIn(os.path.basename(self.mx.config_path), body)
        self.assertIn("no_such_key", body)
        self.assertEqual(self.generation(), 2)
        # The session opened on generation 2 carries on.
        self.assertReply(self.rcpt_reply(client, "y@example.com"), 250)
        self.finish_message(client)


if __name__ == "__main__":
    unittest.main()
