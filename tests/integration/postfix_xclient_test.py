"""Promise: in front of a real Postfix, mxgate forwards the message with the real client
identity (XCLIENT, then EHLO with the client's HELO name), the client's final reply is
Postfix's own `250 2.0.0 Ok: queued as QUEUEID`, and a relay attempt is refused by mxgate
before it reaches Postfix."""

import os
import re
import smtplib
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST, message  # noqa: E402

# Postfix's reply to the end of a message: "Ok: queued as ID" after DATA, "Ok: N bytes
# queued as ID" after BDAT LAST (mxgate forwards with BDAT when Postfix offers CHUNKING).
QUEUED_AS = re.compile(r"250 2\.0\.0 Ok: (?:\d+ bytes )?queued as ([0-9A-Za-z]+)")


class PostfixXclientTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.postfix = cls.start_class_postfix(sink=cls.sink, relay_domains=["example.org"])
        cls.mx = cls.start_class_mxgate(backend_port=cls.postfix.port)

    def setUp(self):
        self.sink.clear()

    def tearDown(self):
        if self.failed_so_far():
            print(f"\n--- postfix log:\n{self.postfix.log()[-6000:]}", file=sys.stderr)
        super().tearDown()

    def delivered_with_message_id(self, message_id):
        def find():
            for transaction in self.sink.transactions():
                if f"Message-ID: <{message_id}>".encode() in transaction.content:
                    return transaction
            return None
        try:
            return harness.wait_until(find, 15, what=f"delivery of <{message_id}>")
        except TimeoutError as error:
            raise AssertionError(f"{error}\npostfix log:\n{self.postfix.log()}")

    def test_swaks_message_arrives_with_client_helo_and_address(self):
        message_id = f"xclient-{time.monotonic_ns()}@client.test"
        result = harness.swaks(self.mx.port, "--helo", "client.test",
                               "--from", "sender@client.test", "--to", "user@example.org",
                               "--header", f"Message-ID: <{message_id}>")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        queued = QUEUED_AS.search(result.stdout)
        self.assertIsNotNone(queued, f"final reply is not Postfix's:\n{result.stdout}")
        queue_id = queued.group(1)

        delivered = self.delivered_with_message_id(message_id)
        # Postfix's Received header names the client's HELO and address, not mxgate's.
        received = re.search(
            rb"Received: from (\S+) \(([^)]*)\)\n\tby pf\.test \(Postfix\) with (\S+) id (\S+)",
            delivered.content)
        self.assertIsNotNone(received, delivered.content)
        helo, name_and_address, protocol, received_id = received.groups()
        self.assertEqual(helo, b"client.test", delivered.content)
        self.assertTrue(name_and_address.endswith(b"[127.0.0.1]"), name_and_address)
        self.assertIn(protocol, (b"ESMTP", b"ESMTPS"))
        self.assertEqual(received_id, queue_id.encode())
        # The envelope Postfix relayed is the client's.
        self.assertTrue(delivered.mail.startswith("<sender@client.test>"), delivered.mail)
        self.assertEqual(delivered.rcpts[0].split()[0], "<user@example.org>")

        # Postfix logged the queue id for this message (the reply was its own).
        self.postfix.wait_for_log(re.escape(f"{queue_id}: message-id=<{message_id}>"))
        self.postfix.wait_for_log(re.escape(queue_id) + r": client=\S*\[127\.0\.0\.1\]")

    def test_smtplib_reply_to_dot_is_postfix_queue_id(self):
        message_id = f"smtplib-{time.monotonic_ns()}@client.test"
        content = message(subject="queue id", extra_headers=[]).replace(
            b"Message-ID: <", b"X-Old-Message-ID: <", 1)
        content = f"Message-ID: <{message_id}>\r\n".encode() + content
        with smtplib.SMTP(HOST, self.mx.port, local_hostname="smtplib.test", timeout=15) as smtp:
            client_port = smtp.sock.getsockname()[1]
            smtp.ehlo()
            self.assertEqual(smtp.mail("sender@client.test")[0], 250)
            self.assertEqual(smtp.rcpt("user@example.org")[0], 250)
            code, text = smtp.data(content)
        self.assertEqual(code, 250, text)
        queued = re.fullmatch(rb"2\.0\.0 Ok: (?:\d+ bytes )?queued as ([0-9A-Za-z]+)", text)
        self.assertIsNotNone(queued, text)
        delivered = self.delivered_with_message_id(message_id)
        self.assertIn(b"id " + queued.group(1) + b"\n", delivered.content)
        # Postfix's Received header is prepended to exactly what the client sent.
        original = harness.lf(content)
        self.assertTrue(delivered.content.endswith(original), delivered.content)
        # XCLIENT gave Postfix the client's own address and port (not the port of
        # mxgate's connection to Postfix): smtpd_client_port_logging shows it.
        self.postfix.wait_for_log(re.escape(queued.group(1).decode()) +
                                  rf": client=\S*\[127\.0\.0\.1\]:{client_port}\b")
        # And the HELO name Postfix records is the client's (EHLO after XCLIENT).
        self.assertIn(b"Received: from smtplib.test (", delivered.content)

    def test_relay_attempt_refused_by_mxgate(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        reply = client.command("RCPT TO:<victim@evil.test>")
        self.assertReply(reply, 550, "5.7.1")
        self.assertIsNotNone(reply.ref, reply)
        # A relay domain recipient still works in the same transaction.
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("QUIT"), 221)
        time.sleep(0.3)
        # Postfix never saw the refused recipient (it would answer 554 5.7.1 itself).
        self.assertNotIn("evil.test", self.postfix.log())


if __name__ == "__main__":
    unittest.main()
