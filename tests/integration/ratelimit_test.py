"""Promise (issue 5): rate limits hold through the whole proxy, for one mxgate and for a
fleet sharing one real redis-server. N sessions pass, session N+1 gets
`451 4.7.1 rate limit exceeded, try again later [ref ...]` at RCPT; two instances on one
Redis enforce one combined limit, concurrency slots included; with Redis killed mid-run sessions continue as the
rule's on_error says (allow: mail flows; tempfail: 451 4.3.0), and the limit is
enforced again once Redis is back (also when Redis was down when mxgate started); the embedded store (no redis section) limits too."""

import os
import shutil
import sys
import time
import types
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
LIMIT = 3


class RedisServer:
    """redis-server on 127.0.0.1:<ephemeral>, no persistence, stopped by PID."""

    def __init__(self, port=None):
        self.dir = harness.make_tempdir("mxgate-redis-")
        self.port = port or harness.free_port()
        self.proc = None
        self.start()

    def start(self):
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", harness.HOST, "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"]
        with open(os.path.join(self.dir, "redis.log"), "ab") as log:
            self.proc = harness.spawn(argv, stdout=log, stderr=log)
        harness.wait_for_port(harness.HOST, self.port, harness.TIMEOUT, self.proc)

    def kill(self):
        harness.stop_process(self.proc, sig=harness.signal.SIGKILL)

    def cleanup(self):
        harness.stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def limit_rule(on_error="allow", limit=LIMIT):
    return {"name": "conn-per-ip", "stage": "connect", "key": ["client_ip"],
            "rate": "1/h", "burst": limit, "count": "connections", "action": "tempfail",
            "on_error": on_error}


class RateLimitTest(harness.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        if not os.access(REDIS_SERVER, os.X_OK):
            raise unittest.SkipTest("redis-server is not installed")
        harness.require_mxgate()
        cls.sink = cls.start_class_sink()

    def start_redis(self, port=None):
        redis = RedisServer(port)
        self.addCleanup(redis.cleanup)
        return redis

    def start_limited(self, redis=None, on_error="allow", prefix="mxgate", threads=None):
        config = {"ratelimit": [limit_rule(on_error)]}
        if threads:
            config["threads"] = threads
        if redis is not None:
            config["redis"] = {"address": f"{harness.HOST}:{redis.port}", "timeout": "200ms",
                               "key_prefix": prefix}
        return self.start_mxgate(backend_port=self.sink.port, config=config)

    def rcpt_reply(self, mx):
        """One session up to its first RCPT: the reply that decides it."""
        client = self.connect(mx)
        reply = client.command("MAIL FROM:<sender@client.test>")
        self.assertReply(reply, 250)
        reply = client.command("RCPT TO:<user@example.org>")
        client.command("QUIT")
        client.close()
        return reply

    def assertLimited(self, reply):
        self.assertReply(reply, 451, "4.7.1")
        self.assertIn("rate limit exceeded, try again later", reply.text)
        self.assertIsNotNone(reply.ref, f"no [ref ...] in {reply!r}")

    def test_n_sessions_pass_then_451_with_ref(self):
        redis = self.start_redis()
        mx = self.start_limited(redis)
        for i in range(LIMIT):
            self.assertReply(self.rcpt_reply(mx), 250, msg=f"session {i + 1}")
        refused = self.rcpt_reply(mx)
        self.assertLimited(refused)
        # Support finds the refusal by the reference the client quoted.
        events = mx.wait_for_rejections(1)
        self.assertTrue(any(refused.ref in str(event) for event in events), events)

    def test_embedded_store_limits_without_redis(self):
        mx = self.start_limited(None)
        for i in range(LIMIT):
            self.assertReply(self.rcpt_reply(mx), 250, msg=f"session {i + 1}")
        self.assertLimited(self.rcpt_reply(mx))

    def test_two_instances_share_one_limit(self):
        redis = self.start_redis()
        first = self.start_limited(redis)
        second = self.start_limited(redis)
        replies = [self.rcpt_reply(first if i % 2 == 0 else second) for i in range(LIMIT + 2)]
        passed = [reply for reply in replies if reply.code == 250]
        self.assertEqual(len(passed), LIMIT, replies)
        for reply in replies[LIMIT:]:
            self.assertLimited(reply)

    def test_concurrency_limit_across_two_instances(self):
        redis = self.start_redis()
        rule = {"name": "sessions-per-ip", "key": ["client_ip"], "count": "concurrency",
                "limit": 2}
        config = {"ratelimit": [rule],
                  "redis": {"address": f"{harness.HOST}:{redis.port}", "timeout": "200ms"}}
        first = self.start_mxgate(backend_port=self.sink.port, config=config)
        second = self.start_mxgate(backend_port=self.sink.port, config=config)
        held = []
        for mx in (first, second):  # one open session on each instance
            client = self.connect(mx)
            self.assertReply(client.command("MAIL FROM:<sender@client.test>"), 250)
            self.assertReply(client.command("RCPT TO:<user@example.org>"), 250)
            held.append(client)
        refused = self.rcpt_reply(first)
        self.assertReply(refused, 451, "4.7.1")
        self.assertIn("too many concurrent sessions", refused.text)
        # A session ends: its slot is released at close, for the whole fleet.
        held[1].command("QUIT")
        held[1].close()
        harness.wait_until(lambda: self.rcpt_reply(first).code == 250, timeout=5,
                           interval=0.2, what="the slot to be released")

    def test_redis_down_at_start_up_then_started(self):
        port = harness.free_port()  # where Redis will be
        mx = self.start_limited(types.SimpleNamespace(port=port), on_error="allow", threads=1)
        for i in range(LIMIT + 1):  # mxgate serves; the rule lets mail through
            self.assertReply(self.rcpt_reply(mx), 250, msg=f"session {i + 1}")
        self.start_redis(port=port)
        harness.wait_until(lambda: self.rcpt_reply(mx).code == 451, timeout=15, interval=0.3,
                           what="the limit to be enforced once Redis is up")

    def test_redis_killed_mid_run_follows_on_error_and_recovers(self):
        redis = self.start_redis()
        # One worker thread, so one Redis connection and one circuit breaker: "recovered"
        # then means every session sees Redis again.
        lenient = self.start_limited(redis, on_error="allow", prefix="lenient", threads=1)
        strict = self.start_limited(redis, on_error="tempfail", prefix="strict", threads=1)
        self.assertReply(self.rcpt_reply(lenient), 250)
        self.assertReply(self.rcpt_reply(strict), 250)
        redis.kill()
        for i in range(LIMIT + 2):
            started = time.monotonic()
            # on_error allow: mail keeps flowing, beyond the limit (nothing can count it).
            self.assertReply(self.rcpt_reply(lenient), 250, msg=f"lenient session {i + 1}")
            # on_error tempfail: when in doubt, 4xx.
            self.assertReply(self.rcpt_reply(strict), 451, "4.3.0")
            self.assertLess(time.monotonic() - started, 3.0, "a session stalled on Redis")
        # Redis returns (empty: its data died with it); the limit holds again.
        self.start_redis(port=redis.port)

        def counts_again():
            return self.rcpt_reply(strict).code == 250
        harness.wait_until(counts_again, timeout=15, interval=0.5,
                           what="mxgate to reconnect to redis")
        replies = [self.rcpt_reply(strict) for _ in range(LIMIT + 1)]
        self.assertLimited(replies[-1])


if __name__ == "__main__":
    unittest.main()
