"""Promise (issue 8, without giving up invariants 1 and 4): mxgate spends as few round
trips on the backend as the backend allows. XCLIENT goes straight after the greeting;
MAIL and the first RCPT share one write when the backend offers PIPELINING (and only
then); DATA is sent while the client uploads the message, and a message refused after
that never reaches the backend (the connection is closed mid-DATA, the backend discards
it); a backend offering CHUNKING gets one `BDAT n LAST` with the message unstuffed.

The backend here is a scripted SMTP server in this process, so each test can see exactly
what arrived and in which order."""

import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402


def stuffed(content):
    """RFC 5321 4.5.2 transparency, as a client sends it."""
    return content.replace(b"\r\n.", b"\r\n..")


class Connection:
    """What one backend connection received, command by command."""

    def __init__(self):
        self.commands = []          # command lines, in arrival order
        self.messages = []          # message bodies (after DATA or BDAT)
        self.pipelined_rcpt = None  # True: the RCPT arrived before the MAIL was answered
        self.data_before_body = False
        self.closed_in_data = False
        self.closed = threading.Event()
        self.sock = None


class ScriptedBackend:
    """A single-threaded-per-connection SMTP server on loopback.

    extensions: EHLO keywords to offer. xclient_reply: the reply to XCLIENT."""

    def __init__(self, extensions=("PIPELINING", "8BITMIME"), xclient_reply=b"220 backend.test ESMTP\r\n"):
        self.extensions = list(extensions)
        self.xclient_reply = xclient_reply
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((harness.HOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)

    def hang_up(self, record, last_words=b""):
        """Says `last_words` unasked and closes the connection (Postfix's smtpd_timeout)."""
        try:
            record.sock.sendall(last_words)
            record.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _accept(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            record = Connection()
            self.connections.append(record)
            threading.Thread(target=self._serve, args=(sock, record), daemon=True).start()

    def _serve(self, sock, record):
        record.sock = sock
        buffer = bytearray()

        def fill(timeout):
            sock.settimeout(timeout)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise EOFError
            buffer.extend(chunk)
            return chunk

        def line(timeout=10):
            while b"\r\n" not in buffer:
                if fill(timeout) is None:
                    raise EOFError
            end = buffer.index(b"\r\n")
            text = bytes(buffer[:end])
            del buffer[:end + 2]
            return text

        def has_line():
            return b"\r\n" in buffer

        try:
            sock.sendall(b"220 backend.test ESMTP\r\n")
            in_data = False
            while True:
                command = line()
                record.commands.append(command.decode())
                verb = command.split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    lines = [b"backend.test"] + [e.encode() for e in self.extensions]
                    reply = b"".join(b"250-" + x + b"\r\n" for x in lines[:-1])
                    sock.sendall(reply + b"250 " + lines[-1] + b"\r\n")
                elif verb == b"XCLIENT":
                    sock.sendall(self.xclient_reply)
                elif verb == b"MAIL":
                    # Hold the reply briefly: a pipelining client has sent its RCPT too.
                    deadline = time.monotonic() + 1.0
                    while not has_line() and time.monotonic() < deadline:
                        fill(max(0.01, deadline - time.monotonic()))
                    if record.pipelined_rcpt is None:
                        record.pipelined_rcpt = has_line()
                    sock.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    sock.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    # Early DATA comes before the client has sent the message body.
                    record.data_before_body = True
                    in_data = True
                    sock.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    body = bytearray()
                    while True:
                        text = line(30)
                        if text == b".":
                            break
                        body.extend(text + b"\r\n")
                    in_data = False
                    record.messages.append(bytes(body))
                    sock.sendall(b"250 2.0.0 Ok: queued as DATA%d\r\n" % len(record.messages))
                elif verb == b"BDAT":
                    size = int(command.split()[1])
                    while len(buffer) < size:
                        if fill(30) is None:
                            raise EOFError
                    record.messages.append(bytes(buffer[:size]))
                    del buffer[:size]
                    sock.sendall(b"250 2.0.0 Ok: %d bytes queued as BDAT%d\r\n"
                                 % (size, len(record.messages)))
                elif verb == b"RSET":
                    sock.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    sock.sendall(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    sock.sendall(b"502 5.5.2 Error: command not recognized\r\n")
        except (EOFError, OSError):
            record.closed_in_data = in_data
        finally:
            sock.close()
            record.closed.set()


class BackendProtocolTest(harness.IntegrationTest):
    def start_backend(self, **kwargs):
        backend = ScriptedBackend(**kwargs)
        self.addCleanup(backend.stop)
        return backend

    def mxgate_for(self, backend, config=None):
        return self.start_mxgate(backend_port=backend.port, config=config or {})

    def envelope(self, client, recipients=("user@example.org",)):
        self.assertReply(client.command("EHLO client.test"), 250)
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        for recipient in recipients:
            self.assertReply(client.command(f"RCPT TO:<{recipient}>"), 250)

    def test_xclient_first_then_mail_and_rcpt_in_one_write(self):
        backend = self.start_backend()
        mx = self.mxgate_for(backend)
        client = self.connect(mx)
        self.envelope(client, ("user@example.org", "other@example.org"))
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="pipelined") + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        (connection,) = backend.connections
        verbs = [c.split(" ", 1)[0] for c in connection.commands]
        # No EHLO before XCLIENT: that round trip only told whether XCLIENT is offered.
        self.assertEqual(verbs[:4], ["XCLIENT", "EHLO", "MAIL", "RCPT"], connection.commands)
        self.assertIn("ADDR=127.0.0.1", connection.commands[0])
        self.assertIn("HELO=client.test", connection.commands[0])
        self.assertEqual(connection.commands[1], "EHLO client.test")
        self.assertTrue(connection.pipelined_rcpt, "MAIL and the first RCPT were not pipelined")
        self.assertEqual(len(connection.messages), 1)

    def test_no_pipelining_offered_means_one_command_at_a_time(self):
        backend = self.start_backend(extensions=("8BITMIME",))
        mx = self.mxgate_for(backend)
        client = self.connect(mx)
        self.envelope(client)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="serial") + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        (connection,) = backend.connections
        self.assertIs(connection.pipelined_rcpt, False)
        self.assertEqual(len(connection.messages), 1)

    def test_a_backend_refusing_xclient_still_gets_the_mail(self):
        backend = self.start_backend(xclient_reply=b"550 5.7.0 Error: insufficient authorization\r\n")
        mx = self.mxgate_for(backend)
        client = self.connect(mx)
        self.envelope(client)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="no xclient") + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        (connection,) = backend.connections
        verbs = [c.split(" ", 1)[0] for c in connection.commands]
        self.assertEqual(verbs[:3], ["XCLIENT", "EHLO", "MAIL"], connection.commands)
        # Without XCLIENT the EHLO carries mxgate's own name, not the client's.
        self.assertEqual(connection.commands[1], f"EHLO {mx.hostname}")
        self.assertIn("XCLIENT refused", mx.stderr_text())

    def test_data_goes_to_the_backend_while_the_client_uploads(self):
        backend = self.start_backend()
        mx = self.mxgate_for(backend)
        client = self.connect(mx)
        self.envelope(client)
        self.assertReply(client.command("DATA"), 354)
        # The backend has DATA (and has answered 354) before a byte of the body exists.
        harness.wait_until(lambda: "DATA" in backend.connections[0].commands,
                           what="DATA at the backend before the body")
        content = message(subject="early", body="line one\r\n.leading dot\r\n")
        client.send(stuffed(content) + b".\r\n")
        reply = client.read_reply()
        self.assertReply(reply, 250)
        self.assertIn("queued as DATA1", reply.text)
        self.assertTrue(harness.strip_added_headers(backend.connections[0].messages[0])
                        .endswith(b"line one\r\n..leading dot\r\n"))

    def test_a_message_refused_after_early_data_never_reaches_the_backend(self):
        backend = self.start_backend()
        mx = self.mxgate_for(backend, {"content": [
            {"name": "advance-fee", "where": "body", "pattern": "(?i)next of kin",
             "action": "reject"}]})
        client = self.connect(mx)
        self.envelope(client)
        self.assertReply(client.command("DATA"), 354)
        harness.wait_until(lambda: "DATA" in backend.connections[0].commands,
                           what="early DATA")
        client.send(message(subject="hello", body="I am the next of kin.\r\n") + b".\r\n")
        refused = client.read_reply()
        self.assertReply(refused, 550)
        self.assertIsNotNone(refused.ref)
        first = backend.connections[0]
        self.assertTrue(first.closed.wait(5), "backend connection not closed after the refusal")
        self.assertTrue(first.closed_in_data)
        self.assertEqual(first.messages, [])   # nothing reached the backend's queue

        # The session goes on: the next message opens a new backend connection.
        self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="clean", body="Lunch?\r\n") + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        self.assertEqual(len(backend.connections), 2)
        self.assertEqual(len(backend.connections[1].messages), 1)

    def test_an_oversized_message_after_early_data_never_reaches_the_backend(self):
        backend = self.start_backend()
        mx = self.mxgate_for(backend, {"limits": {"max_message_size": "1KiB"}})
        client = self.connect(mx)
        self.envelope(client)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(subject="big", body="x" * 70 + "\r\n") * 40 + b".\r\n")
        self.assertReply(client.read_reply(), 552)
        first = backend.connections[0]
        self.assertTrue(first.closed.wait(5))
        self.assertEqual(first.messages, [])
        self.assertReply(client.command("QUIT"), 221)

    def test_chunking_backend_gets_one_bdat_last_unstuffed(self):
        backend = self.start_backend(extensions=("PIPELINING", "8BITMIME", "CHUNKING"))
        mx = self.mxgate_for(backend)
        client = self.connect(mx)
        self.envelope(client)
        self.assertReply(client.command("DATA"), 354)
        content = message(subject="chunked", body="a\r\n.dot line\r\n")
        client.send(stuffed(content) + b".\r\n")
        reply = client.read_reply()
        self.assertReply(reply, 250)
        self.assertIn("bytes queued as BDAT1", reply.text)   # the backend's own reply
        (connection,) = backend.connections
        bdat = [c for c in connection.commands if c.startswith("BDAT")]
        self.assertNotIn("DATA", connection.commands)
        (received,) = connection.messages
        self.assertEqual(bdat, [f"BDAT {len(received)} LAST"])
        # BDAT carries the message as is: no dot-stuffing, CRLF line ends.
        self.assertEqual(harness.strip_added_headers(received), content)

    def test_client_gone_after_early_data_leaves_nothing_at_the_backend(self):
        backend = self.start_backend()
        mx = self.mxgate_for(backend)
        client = self.connect(mx)
        self.envelope(client)
        self.assertReply(client.command("DATA"), 354)
        client.send(b"Subject: half\r\n\r\nonly half of it")
        harness.wait_until(lambda: "DATA" in backend.connections[0].commands, what="early DATA")
        client.close()
        first = backend.connections[0]
        self.assertTrue(first.closed.wait(5))
        self.assertTrue(first.closed_in_data)
        self.assertEqual(first.messages, [])
        # No QUIT was sent as message text.
        self.assertNotIn("QUIT", first.commands)


if __name__ == "__main__":
    unittest.main()
