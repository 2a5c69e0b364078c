"""Promise (issue 7): on SIGTERM mxgate stops accepting, lets sessions in flight finish
for limits.shutdown_timeout, then answers the rest 421 4.3.2; no message is lost."""

import os
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402


class GracefulShutdownTest(harness.IntegrationTest):
    def test_sigterm_finishes_transactions_then_421s_idle_sessions(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port,
                               config={"limits": {"shutdown_timeout": "2s"}})
        busy = self.connect(mx)
        self.assertReply(busy.command("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(busy.command("RCPT TO:<bob@example.org>"), 250)
        idle = self.connect(mx)

        mx.proc.send_signal(signal.SIGTERM)
        # No new connections once the signal is handled.
        def refused():
            try:
                socket.create_connection((harness.HOST, mx.port), timeout=1).close()
                return False
            except OSError:
                return True
        harness.wait_until(refused, 5, what="listener closed")

        # The session in flight completes its message after the signal.
        self.assertReply(busy.command("DATA"), 354)
        busy.send(message(sender="a@client.test") + b".\r\n")
        self.assertEqual(busy.read_reply().code, 250)
        self.assertEqual(len(sink.wait_for_messages(1)), 1)

        # The idle one is told to come back once the deadline passes.
        started = time.monotonic()
        reply = idle.read_reply(timeout=10)
        self.assertReply(reply, 421, "4.3.2")
        self.assertLess(time.monotonic() - started, 8)
        self.assertEqual(mx.proc.wait(timeout=10), 0)


if __name__ == "__main__":
    unittest.main()
