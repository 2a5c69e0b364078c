"""Promise (invariant 4): what mxgate forwards is unambiguous. A bare CR, bare LF or NUL
never passes; only CRLF.CRLF ends a message; so no second message can be smuggled to
the backend (SMTP smuggling, CVE-2023-51764 and relatives)."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402

# A second transaction hidden in the body, after a fake end-of-data marker. A backend
# that took the fake marker for the end would run these commands and deliver to victim@.
INJECTED = (b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            b"From: <ceo@example.org>\r\nSubject: smuggled\r\n\r\nsmuggled body")

# name -> body bytes put between the headers and the genuine CRLF.CRLF.
PAYLOADS = {
    "bare_lf": b"line one\nline two",
    "bare_cr": b"line one\rline two",
    "nul": b"line one\x00line two",
    "lf_dot_lf": b"text\n.\n" + INJECTED,
    "crlf_dot_lf": b"text\r\n.\n" + INJECTED,
    "lf_dot_crlf": b"text\n.\r\n" + INJECTED,
    "cr_dot_cr": b"text\r.\r" + INJECTED,
    "crlf_dot_crcrlf": b"text\r\n.\r\r\n" + INJECTED,
    "crlf_dot_cr": b"text\r\n.\r" + INJECTED,
    "crcrlf_dot_crlf_lf": b"text\r\r\n.\n" + INJECTED,
}


def send_payload(client, body, recipient="user@example.org", headers=None):
    """One transaction with body inside (after headers); returns the reply to the
    genuine end."""
    client.send(f"MAIL FROM:<sender@client.test>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
    replies = client.read_replies(3)
    assert [r.code for r in replies] == [250, 250, 354], replies
    if headers is None:
        headers = message(subject="smuggling", body="")
    client.send(headers + body + b"\r\n.\r\n")
    return client.read_reply(15)


class NoSmugglingRejectTest(harness.IntegrationTest):
    """Default `smtp.bare_newline: reject`."""

    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port)

    def setUp(self):
        self.sink.clear()

    def test_payloads_rejected_at_genuine_end_and_nothing_forwarded(self):
        for name, body in PAYLOADS.items():
            with self.subTest(payload=name):
                client = self.connect(self.mx)
                reply = send_payload(client, body)
                self.assertReply(reply, 550, "5.5.2", name)
                # The injected commands were data, not commands: no replies to them.
                self.assertTrue(client.nothing_pending(0.2), client.buffer)
                # The session goes on normally after the refused message.
                self.assertReply(client.command("NOOP"), 250)
                self.assertReply(client.command("QUIT"), 221)
                client.close()
        self.assertNothingDelivered(self.sink)

    def test_clean_message_after_refused_one_in_same_session(self):
        client = self.connect(self.mx)
        self.assertReply(send_payload(client, PAYLOADS["crlf_dot_lf"]), 550, "5.5.2")
        reply = send_payload(client, b"clean body")
        self.assertReply(reply, 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual([harness.canonical_path(r) for r in received.rcpts],
                         ["<user@example.org>"])
        self.assertTrue(received.original.endswith(b"\nclean body\n"), received.original)
        self.assertNotIn(b"smuggl", received.original.split(b"\n\n", 1)[1])

    def test_bare_lf_in_command_closes_connection(self):
        for command in (b"MAIL FROM:<sender@client.test>\n",
                        b"MAIL FROM:<sender@client.test>\nRCPT TO:<victim@evil.test>\r\n",
                        b"NOOP\rRSET\r\n"):
            with self.subTest(command=command):
                client = self.connect(self.mx)
                client.send(command)
                reply = client.read_reply()
                self.assertGreaterEqual(reply.code, 500, reply)
                self.assertLess(reply.code, 600, reply)
                self.assertEqual(reply.enhanced, "5.5.2", reply)
                self.assertTrue(client.wait_closed(5), "connection still open")
                client.close()


class NoSmugglingNormalizeTest(harness.IntegrationTest):
    """`-o smtp.bare_newline=normalize`: stray CR, LF (and NUL) become spaces."""

    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port,
                                        overrides=["smtp.bare_newline=normalize"])

    def setUp(self):
        self.sink.clear()

    def test_stray_bytes_become_spaces(self):
        client = self.connect(self.mx)
        headers = message(subject="normalize", body="")
        self.assertReply(send_payload(client, b"one\rtwo\nthree\r\nfour", headers=headers), 250)
        [received] = self.sink.wait_for_messages(1)
        # smtp-sink drops CRs and splits at LFs: a forwarded bare CR or LF would show.
        self.assertEqual(received.original, harness.lf(headers) + b"one two three\nfour\n")

    def test_smuggling_payloads_arrive_as_one_message(self):
        for name in ("lf_dot_lf", "crlf_dot_lf", "lf_dot_crlf", "crlf_dot_crcrlf", "cr_dot_cr"):
            with self.subTest(payload=name):
                self.sink.clear()
                client = self.connect(self.mx)
                self.assertReply(send_payload(client, PAYLOADS[name]), 250, msg=name)
                self.assertTrue(client.nothing_pending(0.2), client.buffer)
                self.assertReply(client.command("QUIT"), 221)
                client.close()
                received = self.sink.wait_for_messages(1)
                time.sleep(0.1)
                received = self.sink.transactions()
                self.assertEqual(len(received), 1, received)
                self.assertEqual([harness.canonical_path(r) for r in received[0].rcpts],
                                 ["<user@example.org>"])
                self.assertIn(b"MAIL FROM:<evil@evil.test>", received[0].original)
                self.assertTrue(received[0].original.endswith(b"smuggled body\n"),
                                received[0].original)


class NoSmugglingToPostfixTest(harness.IntegrationTest):
    """The real target: a Postfix behind mxgate receives neither the smuggled message
    nor the carrier."""

    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.postfix = cls.start_class_postfix(sink=cls.sink)
        cls.mx = cls.start_class_mxgate(backend_port=cls.postfix.port)

    def test_nothing_reaches_postfix(self):
        for name in ("crlf_dot_lf", "lf_dot_crlf", "crlf_dot_crcrlf", "crcrlf_dot_crlf_lf"):
            with self.subTest(payload=name):
                client = self.connect(self.mx)
                self.assertReply(send_payload(client, PAYLOADS[name]), 550, "5.5.2", name)
                self.assertReply(client.command("QUIT"), 221)
                client.close()
        time.sleep(1.0)
        log = self.postfix.log()
        self.assertNotIn("victim@example.org", log)
        self.assertNotIn("status=sent", log)
        self.assertEqual(self.sink.transactions(), [])


if __name__ == "__main__":
    unittest.main()
