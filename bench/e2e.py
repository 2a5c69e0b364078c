#!/usr/bin/python3
"""mxgate's end-to-end load harness: what mxgate costs in front of Postfix.

Postfix's smtp-source is the load (one message per SMTP session, N sessions in parallel),
smtp-sink the backend, everything on 127.0.0.1 ephemeral ports. Configurations run
alternately in one invocation, each cell repeated (--repeat, median reported):

  direct      smtp-source -> smtp-sink (the ceiling of this box)
  nofilter    smtp-source -> mxgate (no filters) -> smtp-sink
  full-cold   mxgate with the full pipeline, restarted just before the run (empty caches)
  full-warm   the same mxgate right after (warm DNS-list cache, Redis keys exist)

The full pipeline: 4 DNS lists on a loopback rbldnsd, 2 rate-limit rules and reputation
on a loopback redis-server, 1,000 content rules (generated content_files). Output:
messages/s, ratio to direct (median of the per-repetition ratios: both ran minutes
apart at most), mxgate CPU seconds per 1,000 messages (/proc/PID/stat), and per-message
latency p50/p99 from a probe client at concurrency 1 and 100 (the probe is one more
sequential client beside concurrency-1 smtp-source sessions).

Modes:
  bench/e2e.py                          the full matrix (~7-10 min)
  bench/e2e.py --sizes 4096 --concurrency 100 --repeat 5     a slice
  bench/e2e.py --smoke                  seconds: harness check for CI, not a measurement
  bench/e2e.py --soak [DURATION]        steady load; fails if RSS or fds grow (default 10m)
Idle-session scale is bench/idle.py. See bench/README.md.
"""

import argparse
import json
import os
import re
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import harness, log, median, percentile  # noqa: E402

# Messages per run: the direct run lasts ~0.5-2 s on this box; mxgate runs last longer.
DEFAULT_MESSAGES = {
    (4096, 1): 800, (4096, 20): 6000, (4096, 100): 6000, (4096, 500): 8000,
    (102400, 1): 300, (102400, 20): 1500, (102400, 100): 2000, (102400, 500): 2500,
}
CONFIG_ORDER = ["direct", "nofilter", "full"]   # "full" runs full-cold then full-warm
ROW_ORDER = ["direct", "nofilter", "full-cold", "full-warm"]


def parse_duration(text):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 30s, 10m)")
    value = float(match.group(1))
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def int_list(text):
    return [int(item) for item in text.split(",") if item]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mxgate", help="mxgate binary (default: $MXGATE_BIN, build/h-perf, "
                        "build/release)")
    parser.add_argument("--sizes", type=int_list, default=[4096, 102400],
                        help="message payload bytes (smtp-source -l), comma-separated")
    parser.add_argument("--concurrency", type=int_list, default=[1, 20, 100, 500],
                        help="parallel sessions (smtp-source -s), comma-separated")
    parser.add_argument("--configs", default="direct,nofilter,full",
                        help="subset of direct,nofilter,full")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--messages", type=int, help="messages per run (default: by cell)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    parser.add_argument("--latency-concurrency", type=int_list, default=[1, 100],
                        help="concurrency levels for the latency probe ('' = none)")
    parser.add_argument("--latency-count", type=int, default=600,
                        help="probe transactions per config at concurrency 1, split over "
                        "the repetitions; half as many at higher concurrency")
    parser.add_argument("--latency-size", type=int, default=4096)
    parser.add_argument("--affinity", choices=["split", "none"], default="split")
    parser.add_argument("--json", help="write every raw figure to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="1 repetition, direct+nofilter, 20 messages, concurrency 2")
    parser.add_argument("--soak", nargs="?", const="10m", type=str, metavar="DURATION",
                        help="soak mode (default duration 10m)")
    parser.add_argument("--soak-concurrency", type=int, default=50)
    parser.add_argument("--soak-interval", type=float, default=5.0,
                        help="seconds between RSS/fd samples")
    parser.add_argument("--soak-rss-tolerance", type=float, default=10.0,
                        help="allowed RSS growth after warm-up, percent (at least 8 MiB)")
    parser.add_argument("--soak-fd-tolerance", type=int, default=8,
                        help="allowed growth of the idle fd count after warm-up")
    args = parser.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = set(args.configs) - set(CONFIG_ORDER)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}")
    if args.smoke:
        args.sizes, args.concurrency, args.repeat = [4096], [2], 1
        args.configs = ["direct", "nofilter"]
        args.messages = 20
        args.latency_concurrency, args.latency_count = [1], 20
    return args


def machine_note():
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "?")
    except OSError:
        model = "?"
    return f"{os.cpu_count()} CPUs ({model}), load average {benchlib.load_average():.2f}"


class Environment:
    """The servers every configuration needs, started once (mxgate full restarts)."""

    def __init__(self, args, need_full, need_nofilter=True):
        self.args = args
        self.affinity = benchlib.Affinity(args.affinity)
        self.binary = benchlib.find_mxgate(args.mxgate)
        if need_nofilter or need_full:
            if not self.binary or not os.access(self.binary, os.X_OK):
                raise SystemExit("mxgate binary not found: build it or pass --mxgate")
        self.parts = []
        self.work_dir = harness.make_tempdir("mxgate-bench-e2e-")
        self.sink = self._keep(benchlib.Sink(self.affinity))
        self.nofilter = self.full = None
        if need_nofilter:
            self.nofilter = self._keep(benchlib.Mxgate(self.binary, self.affinity,
                                                       self.sink.port, name="nofilter"))
        if need_full:
            for program in (benchlib.RBLDNSD, benchlib.REDIS_SERVER):
                if not os.access(program, os.X_OK):
                    raise SystemExit(f"{program} is needed for the full pipeline")
            self.rbldnsd = self._keep(benchlib.Rbldnsd(self.affinity))
            self.redis = self._keep(benchlib.Redis(self.affinity))
            rules = benchlib.write_content_rules(self.work_dir, 1000)
            self.full = self._keep(benchlib.Mxgate(
                self.binary, self.affinity, self.sink.port, name="full",
                extra_config=benchlib.full_pipeline_config(self.rbldnsd, self.redis, rules)))

    def _keep(self, part):
        self.parts.append(part)
        return part

    def cleanup(self):
        for part in reversed(self.parts):
            try:
                part.cleanup()
            except Exception as error:  # keep cleaning up the others
                log(f"cleanup: {error}")
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def target(self, config):
        """(port, mxgate process or None) for a configuration name."""
        if config == "direct":
            return self.sink.port, None
        mx = self.nofilter if config == "nofilter" else self.full
        return mx.port, mx


def messages_for(args, size, concurrency):
    if args.messages:
        return args.messages
    count = DEFAULT_MESSAGES.get((size, concurrency))
    if count is None:
        count = max(200, int(2_000_000_000 / max(size, 1024) / 200))
    return max(concurrency, int(count * args.scale))


def throughput(env, args, results):
    affinity = env.affinity
    cells = [(size, conc) for size in args.sizes for conc in args.concurrency]
    for rep in range(args.repeat):
        # Alternate the order of the configurations between repetitions, so that a drift
        # in the machine's load does not always favour the same one.
        order = [c for c in CONFIG_ORDER if c in args.configs]
        if rep % 2:
            order.reverse()
        for size, conc in cells:
            count = messages_for(args, size, conc)
            for config in order:
                runs = ["full-cold", "full-warm"] if config == "full" else [config]
                for name in runs:
                    port, mx = env.target(name)
                    if name == "full-cold":
                        mx.restart()
                    run = benchlib.run_source(affinity, port, conc, count, size,
                                              mx.pid if mx else None)
                    record = {"rep": rep, "size": size, "concurrency": conc, "config": name,
                              "messages": count, "seconds": run.seconds, "rate": run.rate,
                              "ok": run.ok, "error": run.error, "mxgate_cpu": run.mxgate_cpu,
                              "load": benchlib.load_average()}
                    results["throughput"].append(record)
                    status = "" if run.ok else f"  FAILED: {run.error}"
                    cpu = (f" cpu {1000 * run.mxgate_cpu / count:.3f}s/1k"
                           if run.mxgate_cpu is not None else "")
                    log(f"rep {rep + 1}/{args.repeat} size {size} c{conc} {name:10s} "
                        f"{run.rate:8.0f} msg/s ({count} in {run.seconds:.2f}s){cpu}{status}")


def latency(env, args, results):
    affinity = env.affinity
    names = []
    for config in CONFIG_ORDER:
        if config in args.configs:
            names += ["full-warm", "full-cold"] if config == "full" else [config]
    offset = 0
    for rep in range(args.repeat):
        order = names if rep % 2 == 0 else list(reversed(names))
        for conc in args.latency_concurrency:
            per_rep = max(5, args.latency_count // max(1, args.repeat) // (1 if conc == 1 else 2))
            for name in order:
                port, mx = env.target(name)
                background = None
                if conc > 1:
                    background = benchlib.start_background_source(
                        affinity, port, conc - 1, args.latency_size)
                    time.sleep(1.0)  # let the background sessions ramp up
                try:
                    samples = benchlib.probe(port, per_rep, args.latency_size,
                                             cold_sources=(name == "full-cold"),
                                             sources_offset=offset)
                    error = ""
                except (OSError, benchlib.ProbeError) as exc:
                    samples, error = [], str(exc)
                finally:
                    if background is not None:
                        harness.stop_process(background)
                if name == "full-cold":
                    offset += per_rep
                results["latency"].append({"rep": rep, "concurrency": conc, "config": name,
                                           "samples": samples, "error": error})
                log(f"rep {rep + 1}/{args.repeat} latency c{conc} {name:10s} "
                    f"p50 {1000 * percentile(samples, 0.5):.2f} ms "
                    f"p99 {1000 * percentile(samples, 0.99):.2f} ms ({len(samples)})"
                    + (f"  FAILED: {error}" if error else ""))


def summarize(args, results):
    lines = []
    rows = results["throughput"]
    if rows:
        lines += ["| Size | Concurrency | Config | msg/s (median) | × direct | "
                  "mxgate CPU s / 1,000 msgs | Failed runs |",
                  "| ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
        summary = []
        for size in args.sizes:
            for conc in args.concurrency:
                cell = [r for r in rows if r["size"] == size and r["concurrency"] == conc]
                direct_by_rep = {r["rep"]: r["rate"] for r in cell
                                 if r["config"] == "direct" and r["ok"]}
                for name in ROW_ORDER:
                    runs = [r for r in cell if r["config"] == name]
                    if not runs:
                        continue
                    good = [r for r in runs if r["ok"]]
                    rate = median([r["rate"] for r in good])
                    ratios = [r["rate"] / direct_by_rep[r["rep"]] for r in good
                              if direct_by_rep.get(r["rep"])]
                    ratio = median(ratios) if name != "direct" else 1.0
                    cpus = [1000 * r["mxgate_cpu"] / r["messages"] for r in good
                            if r["mxgate_cpu"] is not None]
                    cpu = median(cpus) if cpus else None
                    summary.append({"size": size, "concurrency": conc, "config": name,
                                    "rate": rate, "ratio": ratio, "cpu_per_1000": cpu,
                                    "failed": len(runs) - len(good)})
                    lines.append(f"| {size // 1024} KiB | {conc} | {name} | {rate:,.0f} | "
                                 f"{ratio:.2f} | "
                                 f"{'-' if cpu is None else f'{cpu:.3f}'} | "
                                 f"{len(runs) - len(good)} |")
        results["throughput_summary"] = summary
    lat = results["latency"]
    if lat:
        lines += ["", "| Concurrency | Config | p50 ms | p99 ms | +p50 ms vs direct | "
                  "+p99 ms vs direct | Samples |",
                  "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
        summary = []
        for conc in args.latency_concurrency:
            pooled = {}
            for r in lat:
                if r["concurrency"] == conc:
                    pooled.setdefault(r["config"], []).extend(r["samples"])
            direct = pooled.get("direct", [])
            for name in ["direct", "nofilter", "full-warm", "full-cold"]:
                samples = pooled.get(name)
                if samples is None:
                    continue
                p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
                d50 = p50 - percentile(direct, 0.5) if direct else float("nan")
                d99 = p99 - percentile(direct, 0.99) if direct else float("nan")
                summary.append({"concurrency": conc, "config": name, "p50": p50, "p99": p99,
                                "added_p50": d50, "added_p99": d99, "samples": len(samples)})
                lines.append(f"| {conc} | {name} | {1000 * p50:.2f} | {1000 * p99:.2f} | "
                             f"{1000 * d50:+.2f} | {1000 * d99:+.2f} | {len(samples)} |")
        results["latency_summary"] = summary
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Soak


def soak(args):
    duration = parse_duration(args.soak)
    env = Environment(args, need_full=True, need_nofilter=False)
    mx = env.full
    samples, quiet = [], []
    stop = threading.Event()
    started = time.monotonic()

    def sampler():
        while not stop.wait(args.soak_interval):
            try:
                samples.append((time.monotonic() - started, benchlib.rss_kib(mx.pid),
                                benchlib.fd_count(mx.pid)))
            except OSError:
                return

    thread = threading.Thread(target=sampler, daemon=True)
    failures = []
    rounds = messages = 0
    try:
        thread.start()
        round_messages = max(100, args.soak_concurrency * 40)
        while time.monotonic() - started < duration:
            run = benchlib.run_source(env.affinity, mx.port, args.soak_concurrency,
                                      round_messages, 4096, mx.pid)
            rounds += 1
            if not run.ok:
                failures.append(run.error)
            else:
                messages += run.messages
            if mx.proc.poll() is not None:
                failures.append("mxgate exited")
                break
            time.sleep(0.5)  # sessions closed: the idle footprint
            quiet.append((time.monotonic() - started, benchlib.rss_kib(mx.pid),
                          benchlib.fd_count(mx.pid)))
    finally:
        stop.set()
        thread.join(timeout=args.soak_interval + 1)
        env.cleanup()
    elapsed = time.monotonic() - started
    warmup = min(120.0, max(2.0, 0.2 * duration))
    settled = [q for q in quiet if q[0] >= warmup]
    report = {"duration": elapsed, "rounds": rounds, "messages": messages,
              "rate": messages / elapsed if elapsed else 0, "warmup": warmup,
              "samples": samples, "idle_samples": quiet, "failures": failures[:5]}
    verdict = "ok"
    if len(settled) >= 2:
        head, tail = settled[:3], settled[-3:]
        rss_start, rss_end = median([q[1] for q in head]), median([q[1] for q in tail])
        fd_start, fd_end = median([q[2] for q in head]), median([q[2] for q in tail])
        allowed = max(8 * 1024, rss_start * args.soak_rss_tolerance / 100)
        report.update(rss_start_kib=rss_start, rss_end_kib=rss_end, fd_start=fd_start,
                      fd_end=fd_end, rss_allowed_growth_kib=allowed)
        if rss_end - rss_start > allowed:
            verdict = f"RSS grew {rss_end - rss_start:.0f} KiB (allowed {allowed:.0f})"
        elif fd_end - fd_start > args.soak_fd_tolerance:
            verdict = f"fd count grew {fd_end - fd_start:.0f} (allowed {args.soak_fd_tolerance})"
    else:
        verdict = "too few samples after warm-up (run longer)"
    if failures and verdict == "ok":
        verdict = f"{len(failures)} load rounds failed: {failures[0]}"
    report["verdict"] = verdict
    peak_rss = max((s[1] for s in samples), default=0)
    peak_fd = max((s[2] for s in samples), default=0)
    print(f"soak {elapsed:.0f}s, {rounds} rounds, {messages} messages "
          f"({report['rate']:.0f} msg/s, concurrency {args.soak_concurrency}), "
          f"warm-up {warmup:.0f}s")
    if "rss_start_kib" in report:
        print(f"idle RSS after warm-up {report['rss_start_kib']:.0f} KiB -> "
              f"{report['rss_end_kib']:.0f} KiB; idle fds {report['fd_start']:.0f} -> "
              f"{report['fd_end']:.0f}; under load peak RSS {peak_rss} KiB, peak fds {peak_fd}")
    print(f"verdict: {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"soak": report}, f, indent=1)
    return 0 if verdict == "ok" else 1


# ---------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    benchlib.raise_fd_limit()
    if args.soak:
        return soak(args)
    need_full = "full" in args.configs
    need_nofilter = "nofilter" in args.configs
    started = time.monotonic()
    env = Environment(args, need_full, need_nofilter)
    env.affinity.pin_self()
    results = {"machine": machine_note(), "affinity": env.affinity.describe(),
               "mxgate": env.binary, "argv": sys.argv, "date": time.strftime("%Y-%m-%d %H:%M"),
               "throughput": [], "latency": []}
    log(f"{results['machine']}; {results['affinity']}; mxgate {env.binary}")
    try:
        # Warm-up: fault in each server's memory, fill the full pipeline's caches.
        for name in ["direct"] + (["nofilter"] if need_nofilter else []) + (
                ["full-warm"] if need_full else []):
            port, mx = env.target(name)
            benchlib.run_source(env.affinity, port, 10, 200 if not args.smoke else 10, 4096)
        throughput(env, args, results)
        if args.latency_concurrency:
            latency(env, args, results)
    finally:
        env.cleanup()
    results["load_after"] = benchlib.load_average()
    results["seconds"] = time.monotonic() - started
    table = summarize(args, results)
    print(f"# mxgate e2e {results['date']}: {results['machine']}; {results['affinity']}")
    print(table)
    print(f"\n({results['seconds']:.0f} s; load average at the end "
          f"{results['load_after']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    failed = [r for r in results["throughput"] if not r["ok"]]
    failed += [r for r in results["latency"] if r["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
