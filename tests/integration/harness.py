"""Reusable parts for mxgate's integration tests: the real servers mxgate meets
(smtp-sink, a private Postfix, mxgate itself) on loopback ephemeral ports, and clients.

Standard library only. Every server runs in its own process group, is stopped by PID
(also when a test fails: use `addCleanup` / `addClassCleanup`, and an atexit hook kills
whatever is left), and keeps all its files in its own temporary directory, so test
scripts can run in parallel (ctest -j).
"""

import atexit
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HOST = "127.0.0.1"
# A DNS server address where nothing listens (a privileged UDP port no test binds): a
# query to it is refused at once (ICMP port unreachable), it never times out.
CLOSED_DNS_SERVER = "127.0.0.1:1"
# Default bound on any single wait; a test never hangs longer than this per step.
TIMEOUT = 10.0
SOURCE_DIR = os.environ.get(
    "MXGATE_SOURCE_DIR",
    os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")))

# ---------------------------------------------------------------------------------------
# Processes and ports


_live_process_groups = set()


def _kill_leftovers():
    for pgid in list(_live_process_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


atexit.register(_kill_leftovers)


def _become_subreaper():
    """Makes this process the reaper of orphans it starts: Postfix's master daemonizes,
    and its children outlive it for a moment when it stops. Without a subreaper they
    become zombies of PID 1, which in some containers never reaps them."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


_become_subreaper()
_popen_pids = set()


def reap_orphans():
    """Reaps zombie children that no subprocess.Popen object owns (orphans adopted as
    subreaper), so they do not pile up."""
    my_pid = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in _popen_pids:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == my_pid:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def spawn(argv, *, stdout=None, stderr=None, env=None, cwd=None):
    """Starts argv in a new process group (so it can be killed with its children)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            env=env, cwd=cwd, start_new_session=True)
    _live_process_groups.add(proc.pid)
    _popen_pids.add(proc.pid)
    return proc


def stop_process(proc, timeout=5.0, sig=signal.SIGTERM):
    """Stops a process started by spawn(): sig to its group, then SIGKILL. Idempotent."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Kill the whole group: children may outlive the leader.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    _live_process_groups.discard(proc.pid)
    _popen_pids.discard(proc.pid)
    reap_orphans()
    return proc.returncode


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port():
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _listening_ports():
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":  # TCP_LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def wait_for_port(host, port, timeout=TIMEOUT, proc=None):
    """Waits until something listens on host:port. Looks at /proc/net/tcp rather than
    connecting, so the server does not see (and count, or log) a probe session.
    Raises if `proc` exits first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port in _listening_ports():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} "
                               f"before listening on {host}:{port}")
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_until(predicate, timeout=TIMEOUT, interval=0.05, what="condition"):
    """Polls predicate() until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def make_tempdir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)  # servers that drop privileges must traverse it
    return path


def _uid_gid(user):
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


# ---------------------------------------------------------------------------------------
# smtp-sink


class SinkMessage:
    """One transaction as smtp-sink dumped it. smtp-sink stores text lines ending in LF:
    it strips CR (also a bare CR inside a line) and un-stuffs leading dots; `content`
    is the header and body as the client sent them with CRLF turned into LF."""

    def __init__(self, path, raw):
        self.path = path
        self.raw = raw
        self.client_addr = None
        self.proto = None
        self.helo = None
        self.mail = None
        self.rcpts = []
        lines = raw.split(b"\n")
        index = 0
        while index < len(lines):
            line = lines[index]
            index += 1
            name, _, value = line.partition(b": ")
            if name == b"X-Client-Addr":
                self.client_addr = value.decode("utf-8", "replace")
            elif name == b"X-Client-Proto":
                self.proto = value.decode("utf-8", "replace")
            elif name == b"X-Helo-Args":
                self.helo = value.decode("utf-8", "replace")
            elif name == b"X-Mail-Args":
                self.mail = value.decode("utf-8", "replace")
            elif name == b"X-Rcpt-Args":
                self.rcpts.append(value.decode("utf-8", "replace"))
            elif name == b"Received":
                # smtp-sink's own three-line Received header ends its headers.
                while index < len(lines) and lines[index].startswith(b"\t"):
                    index += 1
                break
        body = b"\n".join(lines[index:])
        # smtp-sink appends one empty line after the content.
        if body.endswith(b"\n\n"):
            body = body[:-1]
        elif body == b"\n":
            body = b""
        self.content = body

    @property
    def added_headers(self):
        """The `X-Mxgate-*` header lines mxgate put on top of the client's message."""
        return self.content[:len(self.content) - len(self.original)]

    @property
    def original(self):
        """content without the `X-Mxgate-*` header lines mxgate prepends (the score
        header, smtp.score_header): what the client sent."""
        return strip_added_headers(self.content)

    @property
    def content_crlf(self):
        return self.content.replace(b"\n", b"\r\n")

    def __repr__(self):
        return (f"SinkMessage(mail={self.mail!r}, rcpts={self.rcpts!r}, "
                f"content={self.content[:200]!r})")


def strip_added_headers(content, prefix=b"X-Mxgate-"):
    """Removes the header lines (with their continuation lines) starting with prefix
    from the top of a LF-terminated message."""
    while content.lower().startswith(prefix.lower()):
        end = content.find(b"\n")
        while end != -1 and content[end + 1:end + 2] in (b" ", b"\t"):
            end = content.find(b"\n", end + 1)
        if end == -1:
            return b""
        content = content[end + 1:]
    return content


class SmtpSink:
    """/usr/sbin/smtp-sink on 127.0.0.1:<ephemeral>, dumping every transaction to a file.

    Options map to smtp-sink's:
      hard_reject=["RCPT"]   -f: 5xx those commands ("." = end of data), reply hard_reply (-B)
      soft_reject=["."]      -r: 4xx those commands, reply soft_reply (-b)
      disconnect_421=["."]   -Q: 421 and disconnect after those commands
      drop=["DATA"]          -q: disconnect without reply after those commands
      xclient=False          -C unless True: smtp-sink's XCLIENT replies 250, not 220 as
                             Postfix does, and only knows NAME and HELO.
    -f and -r imply that PIPELINING is not announced (smtp-sink's rule).
    A rejected end of data (-f . / -r .) is still dumped by smtp-sink; a transaction
    that is aborted (RSET, disconnect mid-DATA) leaves no file.
    """

    BINARY = "/usr/sbin/smtp-sink"

    def __init__(self, *, hostname="sink.test", hard_reject=(), hard_reply=None,
                 soft_reject=(), soft_reply=None, disconnect_421=(), drop=(),
                 xclient=False, pipelining=True, command_timeout=30, extra_args=(),
                 start=True):
        self.hostname = hostname
        self.port = None
        self.proc = None
        self.dir = make_tempdir("mxgate-sink-")
        self.dump_dir = os.path.join(self.dir, "dump")
        os.mkdir(self.dump_dir)
        uid, gid = _uid_gid("nobody")
        os.chown(self.dump_dir, uid, gid)
        args = [self.BINARY, "-u", "nobody", "-4", "-h", hostname,
                "-t", str(command_timeout), "-d", os.path.join(self.dump_dir, "m.")]
        if not xclient:
            args.append("-C")
        if not pipelining:
            args.append("-p")
        if hard_reject:
            args += ["-f", ",".join(hard_reject)]
        if hard_reply:
            args += ["-B", hard_reply]
        if soft_reject:
            args += ["-r", ",".join(soft_reject)]
        if soft_reply:
            args += ["-b", soft_reply]
        if disconnect_421:
            args += ["-Q", ",".join(disconnect_421)]
        if drop:
            args += ["-q", ",".join(drop)]
        self.args = args + list(extra_args)
        if start:
            self.start()

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    def start(self):
        last_error = None
        for _ in range(5):  # the ephemeral port may be taken between free_port() and bind
            self.port = free_port()
            self.log_path = os.path.join(self.dir, f"sink-{self.port}.log")
            with open(self.log_path, "wb") as log:
                self.proc = spawn(self.args + [f"{HOST}:{self.port}", "64"],
                                  stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for_port(HOST, self.port, TIMEOUT, self.proc)
                return self
            except RuntimeError as error:
                last_error = error
                stop_process(self.proc)
        raise RuntimeError(f"smtp-sink did not start: {last_error}: {self.log_text()}")

    def stop(self):
        """Stops smtp-sink (the dump files stay readable until cleanup())."""
        stop_process(self.proc)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""

    def _open_files(self):
        """Dump files smtp-sink still holds open (transactions in progress)."""
        if not self.running():
            return set()
        opened = set()
        fd_dir = f"/proc/{self.proc.pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                try:
                    opened.add(os.readlink(os.path.join(fd_dir, fd)))
                except OSError:
                    pass
        except OSError:
            pass
        return opened

    def transactions(self):
        """Completed transactions as SinkMessage objects, by file modification time:
        that order is only as fine as the file system clock (a few ms), so tests match
        several messages by envelope, not by position."""
        in_progress = self._open_files()
        paths = []
        for path in glob.glob(os.path.join(self.dump_dir, "m.*")):
            if path in in_progress:
                continue
            try:
                paths.append((os.stat(path).st_mtime_ns, path))
            except OSError:
                pass
        result = []
        for _, path in sorted(paths):
            try:
                with open(path, "rb") as f:
                    result.append(SinkMessage(path, f.read()))
            except OSError:
                pass
        return result

    def messages(self):
        """The content (headers and body, LF line ends) of each completed transaction."""
        return [t.content for t in self.transactions()]

    def in_progress(self):
        """Number of transactions smtp-sink has started and not finished."""
        opened = self._open_files()
        return len([p for p in opened if p.startswith(self.dump_dir + os.sep)])

    def wait_for_messages(self, count, timeout=TIMEOUT):
        return wait_until(lambda: (lambda t: t if len(t) >= count else None)(
            self.transactions()), timeout, what=f"{count} message(s) at smtp-sink")

    def clear(self):
        """Forgets what was received so far (between tests sharing one sink)."""
        for path in glob.glob(os.path.join(self.dump_dir, "m.*")):
            if path not in self._open_files():
                try:
                    os.unlink(path)
                except OSError:
                    pass


# ---------------------------------------------------------------------------------------
# A private Postfix instance


class PrivatePostfix:
    """A complete Postfix started with `postfix -c DIR start`, its smtpd on
    127.0.0.1:<ephemeral>, accepting XCLIENT from loopback, relaying mail for its relay
    domains to an SmtpSink (so a test reads the delivered message, Postfix's Received
    header included). Everything (config, queue, data, log) lives in one temp dir.

    Relay control applies to the client identity XCLIENT supplies: the relay
    restrictions are `reject_unauth_destination` only (no permit_mynetworks), so even a
    loopback client cannot relay through it.
    """

    POSTFIX = "/usr/sbin/postfix"

    def __init__(self, *, relay_domains=("example.org",), sink=None, hostname="pf.test",
                 extra_main_cf=None, start=True):
        self.dir = make_tempdir("mxgate-postfix-")
        self.config_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "spool")
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "maillog")
        for path in (self.config_dir, self.queue_dir, self.data_dir):
            os.mkdir(path)
            os.chmod(path, 0o755)
        uid, gid = _uid_gid("postfix")
        os.chown(self.data_dir, uid, gid)
        self.owns_sink = sink is None
        self.sink = sink if sink is not None else SmtpSink()
        self.hostname = hostname
        self.relay_domains = list(relay_domains)
        self.extra_main_cf = dict(extra_main_cf or {})
        self.port = None
        self.master_pid = None
        self.instance_name = "postfix-" + os.path.basename(self.dir).replace("mxgate-postfix-", "")
        if start:
            self.start()

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    def main_cf(self):
        sink = f"[{HOST}]:{self.sink.port}"
        params = {
            "compatibility_level": "3.6",
            "config_directory": self.config_dir,
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "syslog_name": self.instance_name,
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.dir,
            "myhostname": self.hostname,
            "mydomain": "test",
            "myorigin": "$myhostname",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "mydestination": "",
            "relay_domains": ", ".join(self.relay_domains),
            "relay_transport": f"relay:{sink}",
            "default_transport": f"smtp:{sink}",
            "local_transport": f"smtp:{sink}",
            "relayhost": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtpd_banner": "$myhostname ESMTP $mail_name",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_forbid_bare_newline": "reject",
            "smtpd_forbid_bare_newline_exclusions": "",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtputf8_enable": "yes",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "smtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            # "client=name[addr]:port": shows the port XCLIENT supplied.
            "smtpd_client_port_logging": "yes",
            "debug_peer_list": "",
            "message_size_limit": str(50 * 1024 * 1024),
            "delay_warning_time": "0",
        }
        params.update(self.extra_main_cf)
        return "".join(f"{key} = {value}\n" for key, value in params.items())

    def master_cf(self):
        """/etc/postfix/master.cf with smtpd on our port, no chroot, no pipe services."""
        with open("/etc/postfix/master.cf") as f:
            lines = f.read().splitlines()
        out = []
        skipping = False
        for line in lines:
            if line.startswith("#") or not line.strip():
                out.append(line)
                continue
            if line[0].isspace():  # continuation of the previous service
                if not skipping:
                    out.append(line)
                continue
            fields = line.split()
            skipping = len(fields) >= 8 and fields[7] == "pipe"
            if skipping or len(fields) < 8:
                continue
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"{HOST}:{self.port}"
            fields[4] = "n"  # no chroot: the instance's files are not under a chroot
            out.append(" ".join(fields))
        return "\n".join(out) + "\n"

    def _postfix(self, *args, timeout=30):
        return subprocess.run([self.POSTFIX, "-c", self.config_dir, *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def start(self):
        self.port = free_port()
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.write(self.main_cf())
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(self.master_cf())
        check = self._postfix("check")
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {check.stdout}{check.stderr}"
                               f"{self.log()}")
        started = self._postfix("start")
        if started.returncode != 0:
            raise RuntimeError(f"postfix start failed: {started.stdout}{started.stderr}"
                               f"{self.log()}")
        pid_file = os.path.join(self.queue_dir, "pid", "master.pid")

        def read_pid():
            try:
                with open(pid_file) as f:
                    return int(f.read().strip() or 0)
            except (OSError, ValueError):
                return 0

        self.master_pid = wait_until(read_pid, TIMEOUT, what="postfix master.pid")
        _live_process_groups.add(self.master_pid)  # master is a session leader
        try:
            wait_for_port(HOST, self.port, TIMEOUT)
        except TimeoutError:
            raise RuntimeError(f"postfix smtpd not listening: {self.log()}")
        return self

    def stop(self):
        if self.master_pid is None:
            return
        try:
            self._postfix("stop", timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            wait_until(lambda: not pid_alive(self.master_pid), 5, what="postfix master exit")
        except TimeoutError:
            pass
        try:
            os.killpg(self.master_pid, signal.SIGKILL)
        except OSError:
            pass
        _live_process_groups.discard(self.master_pid)
        self.master_pid = None
        time.sleep(0.05)
        reap_orphans()

    def cleanup(self):
        self.stop()
        if self.owns_sink:
            self.sink.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern, timeout=TIMEOUT):
        """Waits for a log line matching the regex; returns the match."""
        regex = re.compile(pattern)
        return wait_until(lambda: regex.search(self.log()), timeout,
                          what=f"postfix log line matching {pattern!r}")

    def wait_for_delivery(self, count=1, timeout=TIMEOUT):
        """Waits until `count` messages reached the sink behind Postfix."""
        try:
            return self.sink.wait_for_messages(count, timeout)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; postfix log:\n{self.log()}")


# ---------------------------------------------------------------------------------------
# mxgate


def find_mxgate():
    """$MXGATE_BIN, or the first build/*/proxy/mxgate under the source tree; None if
    neither exists."""
    path = os.environ.get("MXGATE_BIN")
    if path:
        return path
    for candidate in sorted(glob.glob(os.path.join(SOURCE_DIR, "build", "*", "proxy", "mxgate"))):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_mxgate():
    """The binary's path; skips the test when it was not built (outside ctest)."""
    path = find_mxgate()
    if path is None:
        raise unittest.SkipTest("mxgate binary not found (set MXGATE_BIN)")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"MXGATE_BIN={path} is not an executable file")
    return path


_PLAIN = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./:@+-]*$")
_YAML_SPECIAL = re.compile(r"^(true|false|yes|no|on|off|null|~|[-+]?[0-9][0-9_.eE+-]*)$",
                           re.IGNORECASE)


def _yaml_scalar(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and not _YAML_SPECIAL.match(text):
        return text
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(value, indent=0):
    """A small YAML writer for config dicts (block mappings, flow lists of scalars,
    block lists of mappings)."""
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict):
                if item:
                    lines.append(f"{pad}{key}:")
                    lines.append(to_yaml(item, indent + 2))
                else:
                    lines.append(f"{pad}{key}: {{}}")
            elif isinstance(item, (list, tuple)):
                if item and any(isinstance(x, (dict, list, tuple)) for x in item):
                    lines.append(f"{pad}{key}:")
                    lines.append(to_yaml(list(item), indent + 2))
                else:
                    lines.append(f"{pad}{key}: [{', '.join(_yaml_scalar(x) for x in item)}]")
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(item)}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, dict):
                body = to_yaml(item, indent + 2).splitlines()
                lines.append(f"{pad}- {body[0].lstrip()}")
                lines.extend(body[1:])
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    else:
        lines.append(pad + _yaml_scalar(value))
    return "\n".join(line for line in lines if line != "")


def deep_merge(base, extra):
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        elif value is None:
            result.pop(key, None)  # None removes a default key
        else:
            result[key] = value
    return result


class Mxgate:
    """`mxgate run -c FILE [-o k=v ...]` on 127.0.0.1:<ephemeral>.

    config: a dict deep-merged over the defaults (a None value removes a default key),
    or config_text: the whole YAML file as text (then `port` must be given if the test
    wants wait_for_port to work; `{port}`, `{backend_port}`, `{dir}` are substituted).
    """

    def __init__(self, *, backend_port=None, config=None, config_text=None, overrides=(),
                 hostname="mx.test", start=True, start_timeout=TIMEOUT):
        self.binary = require_mxgate()
        self.dir = make_tempdir("mxgate-run-")
        self.port = free_port()
        self.hostname = hostname
        self.backend_port = backend_port if backend_port is not None else free_port()
        self.rejections_path = os.path.join(self.dir, "rejections.jsonl")
        self.config_path = os.path.join(self.dir, "mxgate.yaml")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.overrides = list(overrides)
        self.proc = None
        self.start_timeout = start_timeout
        if config_text is not None:
            text = config_text.format(port=self.port, backend_port=self.backend_port,
                                      dir=self.dir, host=HOST)
        else:
            defaults = {
                "hostname": hostname,
                "listen": [f"{HOST}:{self.port}"],
                "backend": {"address": f"{HOST}:{self.backend_port}",
                            "connect_timeout": "2s"},
                "relay_domains": ["example.org"],
                "log": {"rejections": self.rejections_path},
                # Every session looks its client's name up (dns.reverse_lookup is on by
                # default): here against a closed port, refused at once, so the production
                # path runs and nothing waits on the machine's resolver.
                "dns": {"servers": [CLOSED_DNS_SERVER]},
            }
            test_dns = (config or {}).get("dns") or {}
            if "servers" in test_dns and "reverse_lookup" not in test_dns:
                # A test that brings its own DNS servers is about DNS lists and their
                # timing (a dead list must not delay an allowlisted client): its reverse
                # lookups stay off unless it asks for them.
                defaults["dns"]["reverse_lookup"] = False
            text = to_yaml(deep_merge(defaults, config or {})) + "\n"
        with open(self.config_path, "w") as f:
            f.write(text)
        if start:
            self.start()

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    def argv(self):
        argv = [self.binary, "run", "-c", self.config_path]
        for override in self.overrides:
            argv += ["-o", override]
        return argv

    def start(self):
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = spawn(self.argv(), stdout=out, stderr=err, cwd=self.dir)
        try:
            wait_for_port(HOST, self.port, self.start_timeout, self.proc)
        except (RuntimeError, TimeoutError) as error:
            stop_process(self.proc)
            raise RuntimeError(f"mxgate did not start: {error}\nargv: {self.argv()}\n"
                               f"config:\n{self.config_text()}\nstderr:\n{self.stderr_text()}")
        return self

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status."""
        return stop_process(self.proc, timeout)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def config_text(self):
        with open(self.config_path) as f:
            return f.read()

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def rejections(self):
        """The JSON objects of the rejection log (a partly written last line is skipped)."""
        try:
            with open(self.rejections_path, "rb") as f:
                data = f.read()
        except OSError:
            return []
        result = []
        for line in data.split(b"\n"):
            if line.strip():
                try:
                    result.append(json.loads(line))
                except ValueError:
                    pass
        return result

    def wait_for_rejections(self, count, timeout=TIMEOUT):
        return wait_until(lambda: (lambda r: r if len(r) >= count else None)(
            self.rejections()), timeout, what=f"{count} rejection log line(s)")

    def diagnostics(self):
        status = "running"
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            status = f"exited with {code}" + (
                f" (signal {signal.Signals(-code).name})" if code < 0 else "")
        return (f"mxgate {status}; argv: {' '.join(self.argv())}\n"
                f"mxgate config:\n{self.config_text()}\nmxgate stderr:\n"
                f"{self.stderr_text()[-4000:]}")


def run_mxgate(*args, timeout=30):
    """Runs the mxgate CLI (check, logs ...) to completion."""
    return subprocess.run([require_mxgate(), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------
# Clients


REF_PATTERN = re.compile(r"\[ref ([A-Z0-9]{8})\]")


class Reply:
    """One (possibly multi-line) SMTP reply."""

    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines      # text after "NNN-" / "NNN "
        self.raw = raw          # exact bytes, CRLFs included

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        match = re.match(r"^([245]\.\d{1,3}\.\d{1,3})\b", self.lines[0] if self.lines else "")
        return match.group(1) if match else None

    @property
    def ref(self):
        match = REF_PATTERN.search(self.text)
        return match.group(1) if match else None

    def __repr__(self):
        return f"Reply({self.raw!r})"


class ConnectionClosed(Exception):
    pass


class RawSmtp:
    """A socket SMTP client that sends exactly the bytes it is given and reads replies
    (multi-line aware). For protocol-level tests: pipelining, bare CR/LF, smuggling."""

    def __init__(self, host, port, timeout=5.0, source=None):
        """source: the local address to connect from (any 127/8 address is ours on
        loopback), so tests can be several clients."""
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buffer = b""
        self.closed_by_peer = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed_by_peer = True
            raise ConnectionClosed(f"connection closed by peer; unread: {self.buffer!r}")
        self.buffer += chunk

    def read_line(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout(f"no complete line within {timeout}s; have {self.buffer!r}")
            self._fill(remaining)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def read_reply(self, timeout=None):
        raw = b""
        lines = []
        while True:
            line = self.read_line(timeout)
            raw += line
            text = line[:-2].decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit():
                raise AssertionError(f"malformed reply line {line!r} (so far {raw!r})")
            lines.append(text[4:])
            if len(text) == 3 or text[3] == " ":
                return Reply(int(text[:3]), lines, raw)
            if text[3] != "-":
                raise AssertionError(f"malformed reply line {line!r}")

    def read_replies(self, count, timeout=None):
        return [self.read_reply(timeout) for _ in range(count)]

    def command(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read_reply(timeout)

    def greeting(self):
        return self.read_reply()

    def ehlo(self, name="client.test"):
        return self.command(f"EHLO {name}")

    def nothing_pending(self, wait=0.3):
        """True when the server sends nothing more within `wait` seconds (and has not
        closed). Leaves anything it read in the buffer."""
        if self.buffer:
            return False
        try:
            self._fill(wait)
        except (socket.timeout, TimeoutError):
            return True
        except ConnectionClosed:
            return False
        return False

    def wait_closed(self, timeout=None):
        """True if the server closes the connection within timeout (data before the
        close is kept in buffer)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._fill(remaining)
        except ConnectionClosed:
            return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True

    def starttls(self, server_hostname="mx.test", context=None):
        """Upgrades the socket (after the server's 220 to STARTTLS was read). Fails if
        the server already sent more clear-text bytes."""
        if self.buffer:
            raise AssertionError(f"server sent clear-text bytes after STARTTLS: {self.buffer!r}")
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self.sock.settimeout(self.timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return self.sock


def session(port, *, helo="client.test", ehlo=True, timeout=5.0):
    """A RawSmtp connected to 127.0.0.1:port, greeting and EHLO/HELO read and checked."""
    client = RawSmtp(HOST, port, timeout)
    greeting = client.read_reply()
    if greeting.code != 220:
        client.close()
        raise AssertionError(f"greeting {greeting!r}")
    reply = client.command(("EHLO " if ehlo else "HELO ") + helo)
    if reply.code != 250:
        client.close()
        raise AssertionError(f"EHLO/HELO reply {reply!r}")
    client.ehlo_reply = reply
    return client


def metric_value(port, name):
    """The value of an unlabelled sample in mxgate's /metrics on `port` (0.0 when absent,
    as Prometheus reads a counter that was never incremented)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


class DnsBlackhole:
    """A DNS server that never answers: a bound UDP socket nobody reads."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def swaks(port, *args, host=HOST, timeout=30):
    """Runs swaks against host:port with extra arguments; returns CompletedProcess
    (returncode, stdout, stderr as text). swaks exits 0 when the message was accepted."""
    argv = ["swaks", "--server", f"{host}:{port}", "--timeout", "10", *args]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def swaks_supports(feature):
    """True when `swaks --support` lists feature (e.g. "TLS": needs Net::SSLeay, Debian
    package libnet-ssleay-perl)."""
    result = subprocess.run(["swaks", "--support"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30)
    return f"=== {feature} supported" in result.stdout + result.stderr


def make_test_cert(directory, common_name="mx.test"):
    """A self-signed certificate and key for STARTTLS; returns (cert_file, key_file)."""
    cert_file = os.path.join(directory, "cert.pem")
    key_file = os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", f"/CN={common_name}", "-days", "1",
                    "-keyout", key_file, "-out", cert_file],
                   stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=60)
    return cert_file, key_file


def message(subject="test", body="Hello.\r\n", sender="sender@client.test",
            recipient="user@example.org", extra_headers=()):
    """A small RFC 5322 message as CRLF bytes."""
    headers = [f"From: <{sender}>", f"To: <{recipient}>", f"Subject: {subject}",
               "Message-ID: <%d.%d@client.test>" % (os.getpid(), time.monotonic_ns()),
               "Date: Mon, 02 Jan 2026 10:00:00 +0000", *extra_headers]
    text = "\r\n".join(headers) + "\r\n\r\n" + body
    return text.encode("utf-8")


def canonical_path(path):
    """`<Local@Domain.>` -> `<Local@domain>`: what an address means to a relay check (the
    local part keeps its case; the domain's case and trailing dot do not matter). Accepts
    smtp-sink's X-Rcpt-Args values (parameters after the path are dropped)."""
    path = path.split()[0] if path.strip() else path
    inner = path[1:-1] if path.startswith("<") and path.endswith(">") else path
    local, at, domain = inner.rpartition("@")
    if not at:
        return f"<{inner}>"
    return f"<{local}@{domain.rstrip('.').lower()}>"


def lf(data):
    """CRLF -> LF, the form smtp-sink stores message content in."""
    return data.replace(b"\r\n", b"\n")


# ---------------------------------------------------------------------------------------
# Test case base


class IntegrationTest(unittest.TestCase):
    """Starts servers that are stopped when the test (start_*) or the class
    (start_class_*) ends, pass or fail, and prints mxgate's config and stderr when a
    test fails."""

    _mxgates = ()

    @classmethod
    def _remember(cls, mx):
        cls._mxgates = tuple(cls._mxgates) + (mx,)

    @classmethod
    def start_class_sink(cls, **kwargs):
        sink = SmtpSink(**kwargs)
        cls.addClassCleanup(sink.cleanup)
        return sink

    @classmethod
    def start_class_postfix(cls, **kwargs):
        postfix = PrivatePostfix(**kwargs)
        cls.addClassCleanup(postfix.cleanup)
        return postfix

    @classmethod
    def start_class_mxgate(cls, **kwargs):
        mx = Mxgate(**kwargs)
        cls.addClassCleanup(mx.cleanup)
        cls._remember(mx)
        return mx

    def start_sink(self, **kwargs):
        sink = SmtpSink(**kwargs)
        self.addCleanup(sink.cleanup)
        return sink

    def start_mxgate(self, **kwargs):
        mx = Mxgate(**kwargs)
        self.addCleanup(mx.cleanup)
        self._test_mxgates = getattr(self, "_test_mxgates", ()) + (mx,)
        return mx

    def connect(self, mx_or_port, **kwargs):
        """A RawSmtp session (greeting and EHLO done), closed at the end of the test."""
        port = getattr(mx_or_port, "port", mx_or_port)
        client = session(port, **kwargs)
        self.addCleanup(client.close)
        return client

    def raw(self, mx_or_port, timeout=5.0):
        """A RawSmtp connection (nothing read yet), closed at the end of the test."""
        port = getattr(mx_or_port, "port", mx_or_port)
        client = RawSmtp(HOST, port, timeout)
        self.addCleanup(client.close)
        return client

    def assertReply(self, reply, code, enhanced=None, msg=None):
        detail = f"{reply!r}" + (f" ({msg})" if msg else "")
        self.assertEqual(reply.code, code, detail)
        if enhanced is not None:
            self.assertEqual(reply.enhanced, enhanced, detail)

    def assertNothingDelivered(self, sink, settle=0.5, timeout=TIMEOUT):
        """No completed transaction at the sink, once in-progress ones are over."""
        time.sleep(settle)
        wait_until(lambda: sink.in_progress() == 0, timeout,
                   what="smtp-sink transactions in progress to end")
        self.assertEqual(sink.transactions(), [])

    def failed_so_far(self):
        """True when this test (or one of its subtests) has failed or errored."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return False
        for test, _ in list(getattr(result, "errors", [])) + list(getattr(result, "failures", [])):
            if test is self or getattr(test, "test_case", None) is self:
                return True
        return False

    def tearDown(self):
        if self.failed_so_far():
            for mx in tuple(self._mxgates) + tuple(getattr(self, "_test_mxgates", ())):
                print(f"\n--- {self.id()}: {mx.diagnostics()}", file=sys.stderr)
