"""Promise (issue 7): operators can ship the rejection log to syslog without it ever
stalling mail, and a daemon started as root to bind port 25 serves as the configured
unprivileged user, unable to regain root."""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import message  # noqa: E402

# <PRI>Mmm dd hh:mm:ss mxgate[pid]: text, PRI = facility mail (2) * 8 + severity.
SYSLOG_LINE = re.compile(rb"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d mxgate\[(\d+)\]: (.*)$",
                         re.S)
LOG_MAIL_NOTICE = 2 * 8 + 5
LOG_MAIL_INFO = 2 * 8 + 6


class SyslogListener:
    """A Unix datagram socket standing in for /dev/log (journald, rsyslog)."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)  # a daemon that dropped root still writes to /dev/log

    def receive(self, count, timeout=harness.TIMEOUT):
        lines = []
        deadline = time.monotonic() + timeout
        while len(lines) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(lines)} syslog lines of {count}: {lines}")
            self.sock.settimeout(remaining)
            try:
                lines.append(self.sock.recv(65536))
            except socket.timeout:
                continue
        return lines

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def parse_syslog(datagram):
    match = SYSLOG_LINE.match(datagram)
    if not match:
        raise AssertionError(f"not an RFC 3164 line: {datagram!r}")
    return int(match.group(1)), int(match.group(2)), json.loads(match.group(3))


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


class SyslogTest(harness.IntegrationTest):
    def listener(self):
        directory = harness.make_tempdir("mxgate-syslog-")
        self.addCleanup(shutil.rmtree, directory, True)
        listener = SyslogListener(os.path.join(directory, "log"))
        self.addCleanup(listener.close)
        return listener

    def test_refusals_and_summaries_reach_syslog_with_the_ref(self):
        listener = self.listener()
        sink = self.start_sink()
        mx = self.start_mxgate(backend_port=sink.port, config={
            "log": {"syslog": True, "syslog_socket": listener.path}})
        client = self.connect(mx)
        self.assertReply(client.command("EHLO client.test"), 250)
        self.assertReply(client.command("MAIL FROM:<a@client.test>"), 250)
        refused = client.command("RCPT TO:<victim@elsewhere.test>")
        self.assertReply(refused, 550, "5.7.1")
        self.assertReply(client.command("QUIT"), 221)

        first, second = listener.receive(2)
        priority, pid, refusal = parse_syslog(first)
        self.assertEqual(priority, LOG_MAIL_NOTICE)
        self.assertEqual(pid, mx.proc.pid)
        self.assertEqual(refusal["ref"], refused.ref)
        self.assertEqual(refusal["client_ip"], harness.HOST)
        priority, _, summary = parse_syslog(second)
        self.assertEqual(priority, LOG_MAIL_INFO)
        self.assertEqual(summary["type"], "session")
        # The file has the same lines: syslog is a copy, not a replacement.
        refs = [line.get("ref") for line in mx.wait_for_rejections(1)]
        self.assertIn(refused.ref, refs)

    def test_a_missing_syslog_socket_loses_nothing_and_is_retried(self):
        directory = harness.make_tempdir("mxgate-syslog-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "log")
        sink = self.start_sink()
        metrics_port = harness.free_port()
        mx = self.start_mxgate(backend_port=sink.port, config={
            "log": {"syslog": True, "syslog_socket": path},
            "metrics": {"listen": f"{harness.HOST}:{metrics_port}"}})
        # No syslog daemon: mail still flows, the file still gets the refusal.
        client = self.connect(mx)
        self.assertReply(client.command("MAIL FROM:<a@client.test>"), 250)
        refused = client.command("RCPT TO:<victim@elsewhere.test>")
        self.assertReply(refused, 550)
        self.assertReply(client.command("RCPT TO:<bob@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(sender="a@client.test") + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        self.assertEqual(len(sink.wait_for_messages(1)), 1)
        self.assertEqual(mx.wait_for_rejections(1)[0]["ref"], refused.ref)
        harness.wait_until(
            lambda: harness.metric_value(metrics_port, "mxgate_syslog_dropped_total") >= 1,
            what="mxgate_syslog_dropped_total counts the dropped line")

        # The daemon comes (back): after the one-second retry pause, lines arrive again.
        listener = SyslogListener(path)
        self.addCleanup(listener.close)
        time.sleep(1.1)
        again = self.connect(mx)
        self.assertReply(again.command("MAIL FROM:<a@client.test>"), 250)
        refused = again.command("RCPT TO:<victim@elsewhere.test>")
        self.assertReply(refused, 550)
        _, _, refusal = parse_syslog(listener.receive(1)[0])
        self.assertEqual(refusal["ref"], refused.ref)

    def test_syslog_socket_must_be_absolute(self):
        mx = harness.Mxgate(config={"log": {"syslog": True, "syslog_socket": "dev/log"}},
                            start=False)
        self.addCleanup(mx.cleanup)
        result = harness.run_mxgate("check", "-c", mx.config_path)
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr, r"mxgate\.yaml:\d+:\d+: log\.syslog_socket: must be an "
                                        r"absolute path")


@unittest.skipUnless(os.geteuid() == 0, "dropping privileges needs root")
class PrivilegeDropTest(harness.IntegrationTest):
    def test_serves_as_the_configured_user_after_binding(self):
        nobody = pwd.getpwnam("nobody")
        sink = self.start_sink()
        mx = harness.Mxgate(backend_port=sink.port, config={"user": "nobody"}, start=False)
        self.addCleanup(mx.cleanup)
        # The rejection log's directory belongs to the user, as logrotate's `create`
        # would leave it, so a reopen after rotation works without root.
        logs = os.path.join(mx.dir, "logs")
        os.mkdir(logs)
        os.chown(logs, nobody.pw_uid, nobody.pw_gid)
        mx.rejections_path = os.path.join(logs, "rejections.jsonl")
        with open(mx.config_path) as f:
            text = f.read()
        with open(mx.config_path, "w") as f:
            f.write(text.replace(os.path.join(mx.dir, "rejections.jsonl"), mx.rejections_path))
        mx.start()

        status = proc_status(mx.proc.pid)
        self.assertEqual(status["Uid"], [str(nobody.pw_uid)] * 4)   # real, effective, saved, fs
        self.assertEqual(status["Gid"], [str(nobody.pw_gid)] * 4)
        self.assertNotIn("0", status.get("Groups", []))
        self.assertEqual(status["CapEff"], ["0000000000000000"])
        # Every worker thread switched too, not just the main one.
        for task in os.listdir(f"/proc/{mx.proc.pid}/task"):
            with open(f"/proc/{mx.proc.pid}/task/{task}/status") as f:
                uid_line = next(line for line in f if line.startswith("Uid:"))
            self.assertEqual(uid_line.split()[1:], [str(nobody.pw_uid)] * 4)

        client = self.connect(mx)
        self.assertReply(client.command("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(client.command("RCPT TO:<victim@elsewhere.test>"), 550)
        self.assertReply(client.command("RCPT TO:<bob@example.org>"), 250)
        self.assertReply(client.command("DATA"), 354)
        client.send(message(sender="a@client.test") + b".\r\n")
        self.assertReply(client.read_reply(), 250)
        self.assertEqual(len(sink.wait_for_messages(1)), 1)
        mx.wait_for_rejections(1)

        # logrotate: move the file, SIGUSR1; the unprivileged daemon opens a new one.
        os.rename(mx.rejections_path, mx.rejections_path + ".1")
        mx.proc.send_signal(signal.SIGUSR1)
        harness.wait_until(lambda: os.path.exists(mx.rejections_path), what="log reopened")
        self.assertEqual(os.stat(mx.rejections_path).st_uid, nobody.pw_uid)
        again = self.connect(mx)
        refused = again.command("RCPT TO:<victim@elsewhere.test>")
        self.assertIn(refused.code, (503, 550))
        def in_new_file():
            with open(mx.rejections_path) as f:
                return refused.ref in f.read()
        harness.wait_until(in_new_file, what="the refusal written to the reopened file")

    def test_an_unknown_user_is_refused_by_check_and_run(self):
        mx = harness.Mxgate(config={"user": "no-such-user-mxgate"}, start=False)
        self.addCleanup(mx.cleanup)
        result = harness.run_mxgate("check", "-c", mx.config_path)
        self.assertEqual(result.returncode, 1)
        self.assertIn("user: no such user 'no-such-user-mxgate'", result.stderr)
        result = harness.run_mxgate("run", "-c", mx.config_path)
        self.assertEqual(result.returncode, 1)
        self.assertIn("no such user", result.stderr)


if __name__ == "__main__":
    unittest.main()
