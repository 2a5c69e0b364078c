"""Promise: support finds every refusal. The reference a rejected client quotes finds its
explanation with `mxgate logs --ref`; when logrotate moves the log and sends SIGUSR1,
refusals keep landing (in the old file until the reopen, then in the new one) and not
one line is lost, also once the old file is gzipped."""

import gzip
import json
import os
import shutil
import signal
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class LogsCommandTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port)

    def relay_attempt(self, recipient="victim@evil.test"):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<spammer@client.test>"), 250)
        reply = client.command(f"RCPT TO:<{recipient}>")
        self.assertReply(reply, 550, "5.7.1")
        self.assertIsNotNone(reply.ref, reply)
        return reply

    def logs(self, *args):
        return harness.run_mxgate("logs", *args)

    def test_ref_from_the_reply_explains_the_refusal(self):
        reply = self.relay_attempt()
        self.mx.wait_for_rejections(1)
        result = harness.wait_until(
            lambda: (lambda r: r if r.returncode == 0 else None)(
                self.logs("--ref", reply.ref, self.mx.rejections_path)),
            5, what=f"mxgate logs --ref {reply.ref}")
        lines = result.stdout.splitlines()
        # "2026-11-22 10:04:11  127.0.0.1 -> victim@evil.test  REJECTED at RCPT by relay (...)  [ref R]"
        self.assertRegex(lines[0],
                         r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  127\.0\.0\.1 -> victim@evil\.test  "
                         r"REJECTED at RCPT by relay \(.+\)  \[ref " + reply.ref + r"\]$")
        self.assertTrue(lines[1].startswith("    reply: 550 5.7.1 "), lines[1])
        self.assertTrue(lines[1].endswith(f"[ref {reply.ref}]"), lines[1])
        self.assertIn("helo client.test from <spammer@client.test>", lines[2])

        as_json = self.logs("--ref", reply.ref.lower(), "--json", self.mx.rejections_path)
        self.assertEqual(as_json.returncode, 0, as_json.stderr)
        entries = [json.loads(line) for line in as_json.stdout.splitlines()]
        self.assertEqual([e["ref"] for e in entries], [reply.ref])
        self.assertEqual(entries[0]["stage"], "rcpt")

    def test_exit_codes(self):
        self.relay_attempt()
        self.mx.wait_for_rejections(1)
        self.assertEqual(self.logs("--ref", "ZZZZZZZZ", self.mx.rejections_path).returncode, 1)
        missing = self.logs("--ref", "ZZZZZZZZ", os.path.join(self.mx.dir, "missing.jsonl"))
        self.assertEqual(missing.returncode, 2)
        self.assertIn("missing.jsonl", missing.stderr)
        self.assertEqual(self.logs("--ip", "127.0.0.0/8", self.mx.rejections_path).returncode, 0)
        self.assertEqual(self.logs("--ip", "10.0.0.0/8", self.mx.rejections_path).returncode, 1)

    def test_stats_count_the_relay_refusals(self):
        for i in range(3):
            self.relay_attempt(f"stats{i}@evil.test")
        result = self.logs("--stats", "--json", "--rcpt", "evil.test", self.mx.rejections_path)
        self.assertEqual(result.returncode, 0, result.stderr)
        summary = json.loads(result.stdout)
        self.assertGreaterEqual(summary["refusals"], 3)
        self.assertEqual(sum(v for k, v in summary["by_rule"].items() if k.startswith("relay")),
                         summary["refusals"])


class LogRotationTest(harness.IntegrationTest):
    def test_sigusr1_reopen_loses_no_line(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, config={"limits": {"max_errors": 1000}})
        refs = []
        errors = []
        stop = threading.Event()

        def send_refusals():
            # Refusals keep coming while the file is moved and reopened.
            try:
                while not stop.is_set():
                    with harness.session(mx.port) as client:
                        client.command("MAIL FROM:<spammer@client.test>")
                        for _ in range(5):
                            reply = client.command("RCPT TO:<victim@evil.test>")
                            if reply.ref:
                                refs.append(reply.ref)
                        client.command("QUIT")
            except Exception as error:  # reported by the main thread
                errors.append(error)

        sender = threading.Thread(target=send_refusals)
        sender.start()
        try:
            harness.wait_until(lambda: len(refs) >= 50, what="50 refusals before rotation")
            rotated = mx.rejections_path + ".1"
            os.rename(mx.rejections_path, rotated)
            harness.wait_until(lambda: len(refs) >= 100, what="refusals after the move")
            os.kill(mx.proc.pid, signal.SIGUSR1)
            harness.wait_until(lambda: os.path.exists(mx.rejections_path), what="a new log file")
            count_at_reopen = len(refs)
            harness.wait_until(lambda: len(refs) >= count_at_reopen + 50,
                               what="refusals after the reopen")
        finally:
            stop.set()
            sender.join(30)
        self.assertEqual(errors, [])

        # Compress the rotated file as logrotate's delaycompress would, next time round.
        with open(rotated, "rb") as source, gzip.open(rotated + ".gz", "wb") as target:
            shutil.copyfileobj(source, target)
        os.unlink(rotated)

        def logged_refs(path, opener):
            with opener(path, "rt") as f:
                return [json.loads(line)["ref"] for line in f
                        if line.strip() and json.loads(line)["type"] != "session"]

        harness.wait_until(lambda: len(logged_refs(mx.rejections_path, open)) +
                           len(logged_refs(rotated + ".gz", gzip.open)) >= len(refs),
                           what="every refusal logged")
        old = logged_refs(rotated + ".gz", gzip.open)
        new = logged_refs(mx.rejections_path, open)
        self.assertGreaterEqual(len(old), 100)
        self.assertGreaterEqual(len(new), 1)
        self.assertEqual(sorted(old + new), sorted(refs))

        # mxgate logs reads both, gzip and plain, and finds the same lines.
        result = harness.run_mxgate("logs", "--json", "--rcpt", "victim@evil.test",
                                    rotated + ".gz", mx.rejections_path)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sorted(json.loads(line)["ref"] for line in result.stdout.splitlines()),
                         sorted(refs))
        last = harness.run_mxgate("logs", "--ref", refs[-1], rotated + ".gz", mx.rejections_path)
        self.assertEqual(last.returncode, 0, last.stderr)
        self.assertIn(f"[ref {refs[-1]}]", last.stdout)


if __name__ == "__main__":
    unittest.main()
