"""Promise: with a certificate configured, mxgate offers STARTTLS (RFC 3207) and a
message sent inside TLS is forwarded; without one, STARTTLS is neither offered nor
accepted."""

import os
import shutil
import smtplib
import ssl
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST, message  # noqa: E402


def client_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class StartTlsTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.cert_dir = harness.make_tempdir("mxgate-cert-")
        cls.addClassCleanup(shutil.rmtree, cls.cert_dir, True)
        cls.cert_file, cls.key_file = harness.make_test_cert(cls.cert_dir)

    def setUp(self):
        # One mxgate per test: a TLS failure that kills it stays in its own test.
        self.sink.clear()
        self.mx = self.start_mxgate(
            backend_port=self.sink.port,
            config={"tls": {"cert_file": self.cert_file, "key_file": self.key_file}})

    def test_starttls_advertised_and_message_forwarded(self):
        client = self.connect(self.mx)
        self.assertIn("STARTTLS", [line.upper() for line in client.ehlo_reply.lines])
        self.assertReply(client.command("STARTTLS"), 220, "2.0.0")
        tls = client.starttls()
        self.assertIn(tls.version(), ("TLSv1.2", "TLSv1.3"))
        # The certificate is the configured one.
        with open(self.cert_file) as f:
            expected = ssl.PEM_cert_to_DER_cert(f.read())
        self.assertEqual(tls.getpeercert(binary_form=True), expected)
        ehlo = client.command("EHLO client.test")
        self.assertReply(ehlo, 250)
        self.assertNotIn("STARTTLS", [line.upper() for line in ehlo.lines])
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        content = message(subject="inside tls")
        client.send(content + b".\r\n")
        self.assertReply(client.read_reply(15), 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.original, harness.lf(content))

    def test_smtplib_starttls(self):
        content = message(subject="smtplib tls")
        with smtplib.SMTP(HOST, self.mx.port, local_hostname="client.test", timeout=10) as smtp:
            smtp.ehlo()
            self.assertTrue(smtp.has_extn("starttls"))
            code, _ = smtp.starttls(context=client_context())
            self.assertEqual(code, 220)
            smtp.ehlo()
            self.assertFalse(smtp.has_extn("starttls"))
            self.assertEqual(smtp.mail("sender@client.test")[0], 250)
            self.assertEqual(smtp.rcpt("user@example.org")[0], 250)
            code, _ = smtp.data(content)
            self.assertEqual(code, 250)
        [received] = self.sink.wait_for_messages(1)
        self.assertEqual(received.original, harness.lf(content))

    def test_swaks_tls(self):
        if not harness.swaks_supports("TLS"):
            self.skipTest("swaks has no TLS support here (install libnet-ssleay-perl)")
        result = harness.swaks(self.mx.port, "--tls", "--helo", "client.test",
                               "--from", "sender@client.test", "--to", "user@example.org")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("TLS started", result.stdout)
        self.assertEqual(len(self.sink.wait_for_messages(1)), 1)

    def test_second_starttls_refused(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("STARTTLS"), 220)
        client.starttls()
        self.assertReply(client.command("EHLO client.test"), 250)
        reply = client.command("STARTTLS")
        self.assertEqual(reply.code // 100, 5, reply)

    def test_garbage_instead_of_handshake_does_not_hurt_server(self):
        client = self.connect(self.mx)
        self.assertReply(client.command("STARTTLS"), 220)
        client.send(b"this is not a TLS ClientHello\r\n" * 4)
        client.wait_closed(5)
        client.close()
        # The server is still there for the next client.
        again = self.connect(self.mx)
        self.assertReply(again.command("NOOP"), 250)


class NoTlsConfiguredTest(harness.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.sink = cls.start_class_sink()
        cls.mx = cls.start_class_mxgate(backend_port=cls.sink.port)

    def test_starttls_not_offered_nor_accepted(self):
        client = self.connect(self.mx)
        self.assertNotIn("STARTTLS", [line.upper() for line in client.ehlo_reply.lines])
        reply = client.command("STARTTLS")
        self.assertIn(reply.code, (454, 502), reply)
        # Still clear text and usable.
        self.assertReply(client.command("NOOP"), 250)


if __name__ == "__main__":
    unittest.main()
