"""Promise (issue 8): the load harness never rots. bench/e2e.py --smoke (direct and
mxgate without filters, 20 messages at concurrency 2, the latency probe), bench/idle.py
with 200 idle sessions, and a few seconds of --soak produce their figures and leave no
process behind. This checks that the harness works, not how fast mxgate is."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BENCH_DIR = os.path.join(harness.SOURCE_DIR, "bench")
NEEDED = ["/usr/sbin/smtp-source", "/usr/sbin/smtp-sink"]


class BenchSmokeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        for program in NEEDED:
            if not os.access(program, os.X_OK):
                raise unittest.SkipTest(f"{program} is not installed")
        cls.mxgate = harness.require_mxgate()
        cls.dir = tempfile.mkdtemp(prefix="mxgate-bench-smoke-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def run_script(self, script, *args, timeout=40):
        """Runs a bench script in its own process group; afterwards nothing of that group
        (smtp-sink, mxgate, rbldnsd, redis-server, smtp-source) may be left running."""
        env = dict(os.environ, MXGATE_BIN=self.mxgate, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.Popen([sys.executable, os.path.join(BENCH_DIR, script), *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            stdout, stderr = proc.communicate()
            self.fail(f"{script} took over {timeout}s:\n{stderr.decode()[-3000:]}")
        # harness makes this process a subreaper: whatever the script left running is
        # reparented to us.
        leftovers = self.children_of_us()
        self.assertEqual(leftovers, [], f"{script} left processes running")
        return proc.returncode, stdout.decode(), stderr.decode()

    def children_of_us(self):
        me = os.getpid()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                found.append(int(entry))
        return found

    def test_e2e_smoke_produces_rates_cpu_and_latency(self):
        out = os.path.join(self.dir, "e2e.json")
        code, stdout, stderr = self.run_script("e2e.py", "--smoke", "--json", out)
        self.assertEqual(code, 0, stderr[-3000:])
        with open(out) as f:
            results = json.load(f)
        rows = {row["config"]: row for row in results["throughput_summary"]}
        self.assertEqual(set(rows), {"direct", "nofilter"})
        for row in rows.values():
            self.assertGreater(row["rate"], 0)
        self.assertGreater(rows["nofilter"]["ratio"], 0)
        # CPU time is read in clock ticks (10 ms): a 20-message smoke of a Release build
        # can round to zero, so only its presence is checked here.
        self.assertGreaterEqual(rows["nofilter"]["cpu_per_1000"], 0)
        latency = {row["config"]: row for row in results["latency_summary"]}
        self.assertEqual(latency["direct"]["samples"], 20)
        self.assertEqual(latency["nofilter"]["samples"], 20)
        self.assertGreater(latency["nofilter"]["p99"], 0)
        self.assertIn("| 4 KiB | 2 | nofilter |", stdout)

    def test_idle_holds_sessions_and_reports_rss_per_session(self):
        out = os.path.join(self.dir, "idle.json")
        code, stdout, stderr = self.run_script("idle.py", "--sessions", "200", "--probes", "5",
                                               "--json", out)
        self.assertEqual(code, 0, stdout + stderr[-3000:])
        with open(out) as f:
            result = json.load(f)
        self.assertEqual(result["held"], 200)
        self.assertGreater(result["rss_per_session_kib"], 0)
        self.assertGreaterEqual(result["fds_held"], result["fds_before"] + 200)
        self.assertEqual(len(result["greeting_during"]), 5)
        self.assertIn("KiB per idle session", stdout)

    @unittest.skipUnless(os.access("/usr/sbin/rbldnsd", os.X_OK) and shutil.which("redis-server"),
                         "rbldnsd and redis-server are needed for the full pipeline")
    def test_soak_samples_rss_and_fds(self):
        out = os.path.join(self.dir, "soak.json")
        code, stdout, stderr = self.run_script("e2e.py", "--soak", "6s", "--soak-interval", "1",
                                               "--soak-concurrency", "4", "--json", out)
        with open(out) as f:
            report = json.load(f)["soak"]
        self.assertGreater(report["messages"], 0, stderr[-3000:])
        self.assertEqual(report["failures"], [], stderr[-3000:])
        self.assertGreaterEqual(len(report["idle_samples"]), 2)
        self.assertIn("rss_start_kib", report)
        self.assertIn("verdict:", stdout)
        # A leak this short run could see is not the point here: the exit status follows
        # the verdict.
        self.assertEqual(code, 0 if report["verdict"] == "ok" else 1)


if __name__ == "__main__":
    unittest.main()
