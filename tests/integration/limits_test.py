"""Promise (invariant 5): every bound has a clear SMTP reply, and past it mxgate neither
crashes nor stalls: recipients, message size, line length, errors, timeouts, connections
per client. Also the plain replies to commands that need no backend."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402

MAX_SIZE = 20000


class LimitsTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(
            backend_port=cls.sink.port,
            overrides=["limits.max_recipients=3", f"limits.max_message_size={MAX_SIZE}",
                       "limits.max_errors=3"])

    def setUp(self):
        self.sink.clear()

    def test_fourth_recipient_gets_452_4_5_3(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        for n in range(1, 4):
            self.assertReply(client.command(f"RCPT TO:<r{n}@example.org>"), 250)
        self.assertReply(client.command("RCPT TO:<r4@example.org>"), 452, "4.5.3")
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="three of four") + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual([harness.canonical_path(r) for r in received.rcpts],
                         [f"<r{n}@example.org>" for n in range(1, 4)])

    def test_size_parameter_over_limit_refused_at_mail(self):
        client = self.connect(self.mx)
        self.assertIn(f"SIZE {MAX_SIZE}", client.ehlo_reply.lines)
        self.assertReply(client.command(f"MAIL FROM:<sender@client.test> SIZE={MAX_SIZE + 1}"),
                         552, "5.3.4")
        self.assertReply(client.command(f"MAIL FROM:<sender@client.test> SIZE={MAX_SIZE // 2}"),
                         250)

    def test_message_over_size_refused_and_not_forwarded(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        line = b"x" * 98 + b"\r\n"
        client.send(message(subject="too big") + line * (MAX_SIZE // len(line) + 20) + b".\r\n")
        self.assertReply(client.read_reply(15), 552, "5.3.4")
        # The session goes on.
        self.assertReply(client.command("NOOP"), 250)
        self.assertNothingDelivered(self.sink)

    def test_command_line_over_512_refused(self):
        client = self.connect(self.mx)
        long_line = b"MAIL FROM:<" + b"a" * 600 + b"@client.test>\r\n"
        client.send(long_line)
        reply = client.read_reply()
        self.assertReply(reply, 500, "5.5.2")
        # Nothing of the long line was taken as a command.
        self.assertTrue(client.nothing_pending(0.3) or client.closed_by_peer, client.buffer)

    def test_max_errors_closes_with_421(self):
        client = self.connect(self.mx)
        replies = []
        for n in range(6):
            try:
                replies.append(client.command(f"BOGUS{n}"))
            except (harness.ConnectionClosed, BrokenPipeError, ConnectionResetError):
                break
            if replies[-1].code == 421:
                break
        codes = [r.code for r in replies]
        self.assertEqual(codes[:2], [500, 500], replies)
        self.assertEqual(codes[-1], 421, replies)
        self.assertLessEqual(len(codes), 4, replies)   # max_errors=3, then 421
        self.assertEqual(replies[-1].enhanced, "4.7.0", replies)
        self.assertTrue(client.wait_closed(5))

    def test_simple_commands(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("FROBNICATE"), 500, "5.5.2")
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 503, "5.5.1")
        # Errors so far: 2 of 3. The next replies are not errors.
        self.assertReply(client.command("VRFY user@example.org"), 252)
        self.assertReply(client.command("HELP"), 214)
        self.assertReply(client.command("NOOP"), 250)
        self.assertReply(client.command("RSET"), 250)
        self.assertReply(client.command("QUIT"), 221)
        self.assertTrue(client.wait_closed(5))

    def test_expn_and_auth_are_refused_with_their_own_replies(self):
        client = self.connect(self.mx)
        expn = client.command("EXPN staff")
        self.assertReply(expn, 502, "5.5.1")
        self.assertIn("EXPN", expn.text)
        self.assertIsNotNone(expn.ref, expn)
        auth = client.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
        self.assertReply(auth, 503, "5.5.1")
        self.assertIn("authentication not enabled", auth.text)
        client.command("QUIT")

    def test_data_before_rcpt_refused(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("DATA"), 503, "5.5.1")
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        reply = client.command("DATA")
        self.assertIn(reply.code, (503, 554), reply)


class CommandTimeoutTest(harness.IntegrationTest):
    def test_idle_client_gets_421_4_4_2_and_is_closed(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, overrides=["limits.command_timeout=1s"])
        client = self.connect(mx)
        started = time.monotonic()
        reply = client.read_reply(6)
        elapsed = time.monotonic() - started
        self.assertReply(reply, 421, "4.4.2")
        self.assertGreater(elapsed, 0.5)
        self.assertLess(elapsed, 5)
        self.assertTrue(client.wait_closed(5))

    def test_stalled_command_line_times_out_too(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, overrides=["limits.command_timeout=1s"])
        client = self.connect(mx)
        client.send(b"MAIL FROM:<slow")   # never finished
        reply = client.read_reply(6)
        self.assertReply(reply, 421, "4.4.2")
        self.assertTrue(client.wait_closed(5))


class ConnectionsPerIpTest(harness.IntegrationTest):
    def test_third_concurrent_connection_gets_421_4_7_0(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port,
                               overrides=["limits.max_connections_per_ip=2"])
        first = self.raw(mx)
        self.assertReply(first.read_reply(), 220)
        second = self.raw(mx)
        self.assertReply(second.read_reply(), 220)
        third = self.raw(mx)
        reply = third.read_reply()
        self.assertReply(reply, 421, "4.7.0")
        self.assertTrue(third.wait_closed(5))
        # The first two still work.
        self.assertReply(first.command("NOOP"), 250)
        self.assertReply(second.command("NOOP"), 250)
        # A slot frees when a client leaves.
        self.assertReply(first.command("QUIT"), 221)
        first.close()

        def fourth_greeted():
            client = harness.RawSmtp(harness.HOST, mx.port, 5)
            try:
                return client.read_reply().code == 220
            except harness.ConnectionClosed:
                return False
            finally:
                client.close()
        harness.wait_until(fourth_greeted, 5, interval=0.2, what="a freed connection slot")


if __name__ == "__main__":
    unittest.main()
