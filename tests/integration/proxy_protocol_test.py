"""Promise (DESIGN: scale out behind HAProxy): with proxy_protocol enabled, mxgate takes
the client's address from a real HAProxy's PROXY v1/v2 header (logs, per-IP limits,
XCLIENT), and closes connections whose header is missing or malformed."""

import os
import shutil
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@unittest.skipUnless(os.path.exists(HAPROXY), "haproxy is not installed")
class ProxyProtocolTest(harness.IntegrationTest):
    def start_haproxy(self, mx_port, send_proxy):
        directory = harness.make_tempdir("haproxy-")
        self.addCleanup(shutil.rmtree, directory, True)
        port = harness.free_port()
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend smtp
    bind 127.0.0.1:{port}
    default_backend mx
backend mx
    server mx1 127.0.0.1:{mx_port} {send_proxy}
""")
        proc = harness.spawn([HAPROXY, "-db", "-f", config])
        self.addCleanup(harness.stop_process, proc)
        harness.wait_for_port(harness.HOST, port, proc=proc)
        return port

    def send_from(self, source_ip, port):
        """One message from `source_ip` (another loopback address) through HAProxy."""
        client = harness.RawSmtp(harness.HOST, port, timeout=5, source=source_ip)
        self.addCleanup(client.close)
        self.assertEqual(client.read_reply().code, 220)
        self.assertReply(client.command("EHLO far.client.test"), 250)
        self.assertReply(client.command("MAIL FROM:<far@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<bob@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(sender="far@client.test") + b".\r\n")
        self.assertEqual(client.read_reply().code, 250)
        relay = client.command("RCPT TO:<u@evil.test>")   # a refusal, to read the log
        self.assertReply(relay, 503)
        client.command("QUIT")

    def check_real_client_is_used(self, send_proxy):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, config={
            "proxy_protocol": {"enabled": True, "trusted_networks": ["127.0.0.1/32"]},
        })
        port = self.start_haproxy(mx.port, send_proxy)
        self.send_from("127.0.0.7", port)
        self.assertEqual(len(sink.wait_for_messages(1)), 1)
        [refusal] = [e for e in mx.wait_for_rejections(1) if e.get("type") == "reject"]
        # HAProxy connects to mxgate from 127.0.0.1; the client was 127.0.0.7.
        self.assertEqual(refusal["client_ip"], "127.0.0.7", refusal)

    def test_proxy_v2_header_gives_the_real_client(self):
        self.check_real_client_is_used("send-proxy-v2")

    def test_proxy_v1_header_gives_the_real_client(self):
        self.check_real_client_is_used("send-proxy")

    def test_connection_without_header_is_closed(self):
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, config={
            "proxy_protocol": {"enabled": True, "trusted_networks": ["127.0.0.1/32"],
                               "timeout": "1s"},
        })
        with socket.create_connection((harness.HOST, mx.port), timeout=5) as sock:
            sock.sendall(b"EHLO not-a-proxy-header\r\n")
            # No greeting and no reply: the connection is closed.
            self.assertEqual(sock.recv(1024), b"")


if __name__ == "__main__":
    unittest.main()
