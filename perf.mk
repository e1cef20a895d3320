# `make bench-check`: the hardware-limit measurements of issue 6, each printed as a ratio
# against its target. Informational: it never fails on a time. CI runs exactly `make test`, not
# this (a full check takes about 10 minutes and writes tens of GB, one run at a time); run it by hand.
#
# It builds release, starts a broker on a free loopback port with a temporary data directory
# under PERF_DIR_PARENT, runs each load PERF_RUNS times, and prints one table. The machine's
# limits (loopback TCP with iperf3, the data directory's O_DIRECT write/read bandwidth with
# `gregor bench disk`) are measured right before each run compared with them, and each ratio
# is the median of the per-run ratios (this machine's disk drifts by half within minutes).
# Every figure and its exact command are explained in docs/BENCHMARKS.md ("Hardware-limit
# targets").
#
# Overrides: PERF_RUNS=3 PERF_DIR_PARENT=<dir on the disk to judge> PERF_P1K_MESSAGES=1500000
# PERF_P100_MESSAGES=5000000 PERF_PRODUCERS=4 PERF_LATENCY_SECS=10 PERF_BATCH_BYTES=262144
# PERF_LATENCY_BATCH_BYTES=16384 PERF_TAIL_MESSAGES=1500000 PERF_JSON=out.json
# PERF_BROKER_SETTINGS="k=v ..." (broker settings for every broker the check starts, e.g.
# cores.pinned=false; printed with the table)

PERF_CARGO_TARGET_DIR ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
PERF_GREGOR := $(PERF_CARGO_TARGET_DIR)/release/gregor
PERF_SEGMENT_ACCESS := $(PERF_CARGO_TARGET_DIR)/release/examples/segment_access
PERF_RUNS ?= 3
# Not /tmp: on many systems it is tmpfs, and the point is to judge the data disk.
PERF_DIR_PARENT ?= $(PERF_CARGO_TARGET_DIR)
PERF_P1K_MESSAGES ?= 1500000
PERF_P100_MESSAGES ?= 5000000
PERF_PRODUCERS ?= 4
PERF_LATENCY_SECS ?= 10
# Producer batch.size for every produce load (Kafka's default is 16384; throughput setups
# raise it, as the OpenMessaging Benchmark's Kafka drivers do).
PERF_BATCH_BYTES ?= 262144
# batch.size of the informational latency loads (Kafka's default).
PERF_LATENCY_BATCH_BYTES ?= 16384
# Records written and then read back from the tail cache (1 KB each): about 1.6 GB, which
# fits in the 960 MiB per core that the cache can have (see the tail section below).
PERF_TAIL_MESSAGES ?= 1500000
PERF_JSON ?=
PERF_BROKER_SETTINGS ?=

define PERF_CHECK_PY
import json, os, re, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

G, ACCESS = os.environ["PERF_GREGOR"], os.environ["PERF_SEGMENT_ACCESS"]
RUNS = int(os.environ["PERF_RUNS"])
P1K, P100 = os.environ["PERF_P1K_MESSAGES"], os.environ["PERF_P100_MESSAGES"]
PRODUCERS, LAT_SECS = os.environ["PERF_PRODUCERS"], os.environ["PERF_LATENCY_SECS"]
BATCH, TAIL_N = os.environ["PERF_BATCH_BYTES"], os.environ["PERF_TAIL_MESSAGES"]
LAT_BATCH = os.environ["PERF_LATENCY_BATCH_BYTES"]
parent = os.environ["PERF_DIR_PARENT"]
os.makedirs(parent, exist_ok=True)
work = tempfile.mkdtemp(prefix="gregor-bench-check.", dir=parent)
import atexit
atexit.register(shutil.rmtree, work, True)  # the data directory goes, however the check ends
data = os.path.join(work, "data")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def run_json(cmd, timeout=300):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(out.stdout)
    except ValueError:
        pass
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON from {' '.join(cmd)}: {out.stderr[-400:]}")

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

results, commands = {}, {}
def record(key, values, cmd):
    results[key] = med(values); commands[key] = cmd
    print(f"  {key}: {results[key]}  runs {values}", flush=True)

def attempt(what, f):
    """Runs one measurement; a failure or hang is reported and leaves it n/a (never fatal)."""
    try:
        f()
    except Exception as e:
        print(f"  {what}: failed: {str(e)[:300]}", flush=True)

def runs(what, f):
    """f() RUNS times; a failed or hung run is reported and counts as missing (never fatal)."""
    vals = []
    for _ in range(RUNS):
        try:
            vals.append(f())
        except Exception as e:
            print(f"  {what}: run failed: {str(e)[:300]}", flush=True)
    return vals

def field(vals, *path):
    out = []
    for v in vals:
        for k in path:
            v = v[k]
        out.append(v)
    return out

load_before = open("/proc/loadavg").read().split()[0]
# Machine limits.
iperf = shutil.which("iperf3")
if iperf:
    def tcp():
        port = free_port()
        srv = subprocess.Popen([iperf, "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            j = run_json([iperf, "-c", "127.0.0.1", "-p", str(port), "-t", "5", "-J"], timeout=30)
        finally:
            srv.kill(); srv.wait()
        return j["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
else:
    print("  iperf3 not found: the tail ratio will be n/a (it divides by iperf3's loopback TCP figure; apt-get install iperf3)", flush=True)
# The disk is measured right before each run that is compared with it (this virtual disk's
# bandwidth drifts by half within minutes), and each ratio is the median of the ratios of
# those pairs.
# Deleting a file on a disk mounted with `discard` makes ext4 trim its blocks at the next
# journal commit (within 5 s), and reads queued behind a trim of GBs waited up to 12 ms here:
# the 1 GB file of each disk run, or the topic of the run before, slowed whatever ran next.
# A guest kernel with free page reporting (virtio-balloon, as on the Firecracker VMs here) hands
# freed memory back to its host in passes 2 s apart. After a run's topic with GBs of page cache
# (a catch-up's) was deleted, the passes went on for about 15 s, and during each one every
# process on the VM stalled: a bare `sleep(0.5 ms)` loop woke 30 to 45 ms late, the broker's
# end-to-end p99 at 100,000 records/s went from 7 to 32 ms (docs/BENCHMARKS.md, change 39).
# Every measured run starts once the machine is quiet: synced, nothing in flight on the disk,
# no trim started for 1 s, and under 128 MiB reported to the host in the last 3 s (the device's
# counters and the kernel's reporting counter in /sys; whichever is missing is not waited
# for). An idle VM here reports 10 to 30 MiB every 2 s, so "nothing reported" never comes.
def disk_stat_file(path):
    st = os.stat(path)
    f = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat"
    return f if os.path.exists(f) else None
DISK_STAT = disk_stat_file(work)
REPORTED_KIB = "/sys/module/page_reporting/parameters/reported_kib"
REPORTED = REPORTED_KIB if os.path.exists(REPORTED_KIB) else None
settle_waits = []
def settle():
    t0 = time.monotonic()
    os.sync()
    # A machine that never gets quiet (other work on it) would cost 30 s per run, about 25
    # minutes a check: after three waits that ran out, only sync.
    if sum(w >= 30 for w in settle_waits) >= 3:
        settle_waits.append(time.monotonic() - t0)
        return
    disk, disk_since = None, t0
    reported = []  # (time, KiB reported so far)
    # At most 30 s: other activity on the machine must not stall the check (trims here took
    # 4 s, a 4.5 GB free took 15 s to report).
    while time.monotonic() - t0 < 30:
        at = time.monotonic()
        quiet = True
        if DISK_STAT:
            fields = open(DISK_STAT).read().split()
            # Field 9 is the I/Os in flight, field 14 the sectors discarded (Linux 4.18+).
            now = (fields[8], fields[13] if len(fields) > 13 else None)
            if now != disk:
                disk, disk_since = now, at
            quiet = quiet and now[0] == "0" and at - disk_since >= 1
        if REPORTED:
            now = int(open(REPORTED).read())
            reported.append((at, now))
            before = [kib for t, kib in reported if at - t >= 3]
            quiet = quiet and bool(before) and now - before[-1] < (128 << 10)
        if quiet:
            break
        time.sleep(0.25)
    settle_waits.append(time.monotonic() - t0)
def with_disk_reads(f):
    """(f(), MiB read from the data disk while it ran), or None for the MiB without the
    device's counters (field 3 of its stat: 512-byte sectors read so far)."""
    sectors = lambda: int(open(DISK_STAT).read().split()[2]) if DISK_STAT else None
    before = sectors()
    out = f()
    return out, None if before is None else (sectors() - before) / 2048
def disk_run():
    settle()
    return run_json([G, "bench", "disk", "--data-dir", work, "--size-mb", "1024", "--json"])
DISK_CMD = "gregor bench disk --data-dir <dir> --size-mb 1024"

# Settings for every broker of the check; a load's own settings come after (and win).
BROKER_SETTINGS = os.environ.get("PERF_BROKER_SETTINGS", "").split()

def start_broker(data_dir, *settings):
    """A broker on a free loopback port; returns (process, bootstrap) once it answers."""
    b = f"127.0.0.1:{free_port()}"
    args = [G, "broker", "--data-dir", data_dir, "--listen", b]
    for kv in BROKER_SETTINGS + list(settings):
        args += ["--set", kv]
    p = subprocess.Popen(args, stdout=open(data_dir + ".log", "w"), stderr=subprocess.STDOUT)
    for _ in range(100):
        if subprocess.run([G, "topics", "--bootstrap", b, "list"], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    return p, b

def stop_broker(p):
    p.terminate()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()

broker, B = start_broker(data)
try:
    seq = [0]
    def topic():
        # Each run's topic is deleted once the next one is asked for, so the data directory
        # holds one run at a time (a full check writes tens of GB in total; a flat-out
        # producer writes about 15 GB in the 6 s of the tail-while-producing run).
        # The broker deletes a deleted topic's files in the background; wait for that, so a
        # run never pays for the previous run's deletion (freeing GBs costs the disk).
        if seq[0] > 0:
            subprocess.run([G, "topics", "--bootstrap", B, "delete", f"check-{seq[0]}"], capture_output=True, timeout=60)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and any(n.endswith(".deleted") for n in os.listdir(data)):
                time.sleep(0.2)
        seq[0] += 1; return f"check-{seq[0]}"
    def bench(*args, timeout=300, nice=None):
        first = ["nice", "-n", str(nice)] if nice else []
        return run_json([*first, G, "bench", *args, "--bootstrap", B, "--json", "--no-progress"], timeout=timeout)
    common = ["--partitions", "6", "--producers", PRODUCERS, "--batch-bytes", BATCH]
    def produce(size, messages, acks):
        # The topic first: taking it deletes the previous run's, whose trims settle() waits out.
        t = topic()
        settle()
        return bench("produce", "--topic", t, *common, "--messages", messages, "--size", size, "--acks", acks)

    # Each run: the disk, then produce acks=1, then produce acks=all, back to back.
    def produce_triple():
        d = disk_run()
        one = produce("1024", P1K, "1")
        return d, one, produce("1024", P1K, "all")
    r = runs("disk, produce 1 KB acks=1, acks=all", produce_triple)
    d, one, every = [x[0] for x in r], [x[1] for x in r], [x[2] for x in r]
    record("disk_write_mb_s", field(d, "write_mb_per_sec"), DISK_CMD + " (right before each acks=1 run)")
    record("p1k_mb_s", field(one, "mb_per_sec"), f"gregor bench produce --partitions 6 --producers {PRODUCERS} --batch-bytes {BATCH} --messages {P1K} --size 1024 --acks 1")
    record("p1k_rec_s", field(one, "records_per_sec"), "(same run)")
    record("pall_mb_s", field(every, "mb_per_sec"), f"gregor bench produce --partitions 6 --producers {PRODUCERS} --batch-bytes {BATCH} --messages {P1K} --size 1024 --acks all (right after each acks=1 run)")
    record("p1k_over_disk", [o["mb_per_sec"] / x["write_mb_per_sec"] for x, o in zip(d, one)], "each acks=1 run over the disk run just before it")
    record("pall_over_p1k", [a["mb_per_sec"] / o["mb_per_sec"] for o, a in zip(one, every)], "each acks=all run over the acks=1 run just before it")
    r = runs("produce 100 B", lambda: produce("100", P100, "1"))
    record("p100_rec_s", field(r, "records_per_sec"), f"gregor bench produce --partitions 6 --producers {PRODUCERS} --batch-bytes {BATCH} --messages {P100} --size 100 --acks 1")

    def catchup():
        # Consume from the start of a topic written just before (most of it only on disk),
        # right after a disk run.
        t = topic()
        bench("produce", "--topic", t, *common, "--messages", P1K, "--size", "1024")
        d = disk_run()
        settle()
        return d, bench("consume", "--topic", t, "--partitions", "6", "--messages", P1K, "--size", "1024")
    r = runs("catch-up consume", catchup)
    d, c = [x[0] for x in r], [x[1] for x in r]
    record("disk_read_mb_s", field(d, "read_mb_per_sec"), DISK_CMD + " (right before each catch-up run)")
    record("catchup_mb_s", field(c, "mb_per_sec"), f"gregor bench consume --partitions 6 --messages {P1K} (after producing them)")
    record("catchup_over_disk", [x["mb_per_sec"] / y["read_mb_per_sec"] for y, x in zip(d, c)], "each catch-up run over the disk run just before it")

    def e2e_during_catchup():
        # Producers' end-to-end latency at a moderate rate, alone and while a consumer reads
        # 3x P1K records from disk (written just before, so not in any cache).
        def e2e(t):
            return bench("e2e", "--topic", t, "--partitions", "6", "--producers", "2", "--size", "1024", "--rate", "100000", "--duration-secs", "6", timeout=60)
        t = topic()
        settle()
        alone = e2e(t)["latency_ms"]["p99"]
        old = topic()
        bench("produce", "--topic", old, *common, "--messages", str(3 * int(P1K)), "--size", "1024")
        settle()
        out = {}
        def live():
            try:
                out["e"] = e2e(f"{old}-live")
            except Exception as e:
                out["e"] = e
        th = threading.Thread(target=live); th.start(); time.sleep(1)
        try:
            bench("consume", "--topic", old, "--partitions", "6", "--messages", str(3 * int(P1K)), "--size", "1024")
        finally:
            th.join()
            subprocess.run([G, "topics", "--bootstrap", B, "delete", f"{old}-live"], capture_output=True, timeout=60)
        if isinstance(out.get("e"), Exception):
            raise out["e"]
        return alone, out["e"]["latency_ms"]["p99"]
    r = runs("e2e latency during a catch-up read", e2e_during_catchup)
    record("e2e_alone_p99_ms", [x[0] for x in r], "gregor bench e2e --partitions 6 --producers 2 --size 1024 --rate 100000 --duration-secs 6")
    record("e2e_catchup_p99_ms", [x[1] for x in r], f"the same, while gregor bench consume reads {3 * int(P1K)} records just written (from disk)")

    def tail_while_producing():
        # Consume from the end while producers write flat out; the consumer's window lies
        # inside the producers' run, so its rate is what it keeps up with at the tail (it
        # cannot exceed what the producers write on the same 2 cores). A consumer that falls
        # more than the tail cache behind reads from disk, paced while producers write
        # (BENCHMARKS change 33), so the MiB read from disk meanwhile are printed with it.
        t = topic()
        bench("produce", "--topic", t, "--partitions", "6", "--messages", "6", "--size", "1024")
        settle()
        out = {}
        def produce_flat_out():
            try:
                out["p"] = bench("produce", "--topic", t, *common, "--size", "1024", "--duration-secs", "6", timeout=60)
            except Exception as e:
                out["p"] = e
        th = threading.Thread(target=produce_flat_out); th.start(); time.sleep(1)
        try:
            return with_disk_reads(lambda: bench("consume", "--topic", t, "--partitions", "6", "--messages", "1000000000", "--size", "1024", "--from-latest", "--duration-secs", "4", "--timeout-secs", "5", timeout=60)["mb_per_sec"])
        finally:
            th.join()
    r = runs("tail consume while producing", tail_while_producing)
    record("tail_live_mb_s", [x[0] for x in r], f"gregor bench consume --from-latest --duration-secs 4, while bench produce --producers {PRODUCERS} --batch-bytes {BATCH} --size 1024 --duration-secs 6 runs")
    if all(x[1] is not None for x in r):
        record("tail_live_disk_read_mib", [x[1] for x in r], "MiB read from the data disk during that consume (the consumer fell behind the tail cache)")

    # Latency at half the maximum 1 KB throughput measured above, with the same producer
    # settings (open loop, no coordinated omission). The same loads with Kafka's default
    # batch.size (16 KB), at half the maximum that setting reaches, are shown for information.
    lat_common = ["--partitions", "6", "--producers", PRODUCERS, "--batch-bytes", LAT_BATCH]
    def settled(f):
        def g():
            t = topic()
            settle()
            return f(t)
        return g
    r = runs("produce 1 KB, latency batch size", settled(lambda t: bench("produce", "--topic", t, *lat_common, "--messages", P1K, "--size", "1024", "--acks", "1")))
    record("p1k_lat_cfg_rec_s", field(r, "records_per_sec"), f"gregor bench produce --partitions 6 --producers {PRODUCERS} --batch-bytes {LAT_BATCH} --messages {P1K} --size 1024 --acks 1")
    def latency(prefix, flags, batch, max_rec_s):
        rate = str(int((max_rec_s or 200000) / 2))
        def produce_at_rate(t, nice=None):
            return bench("produce", "--topic", t, *flags, "--size", "1024", "--rate", rate, "--duration-secs", LAT_SECS, "--warmup-secs", "1", timeout=int(float(LAT_SECS)) + 60, nice=nice)
        r = runs(f"produce latency ({prefix})", settled(produce_at_rate))
        record(f"{prefix}_p99_ms", field(r, "latency_ms", "p99"), f"gregor bench produce --partitions 6 --producers {PRODUCERS} --batch-bytes {batch} --size 1024 --rate {rate} --duration-secs {LAT_SECS} --warmup-secs 1")
        record(f"{prefix}_p999_ms", field(r, "latency_ms", "p999"), "(same run)")
        record(f"{prefix}_request_p99_ms", field(r, "request_latency_ms", "p99"), "(same run: from the request written to its acknowledgment)")
        # How long one producer's sticky batch takes to fill at that rate: every record waits
        # part of it before its request is sent, whatever the broker does.
        results[f"{prefix}_batch_fill_ms"] = int(batch) / 1040 / (int(rate) / int(PRODUCERS)) * 1000
        commands[f"{prefix}_batch_fill_ms"] = f"batch.size / about 1,040 bytes per 1 KB record / (rate / {PRODUCERS} producers)"
        if prefix == "lat":
            # The same load with the load tool at a lower CPU priority, so the broker runs as
            # soon as it is runnable: how much of the latency is the two sharing 2 CPUs
            # (BENCHMARKS.md, "Observed (session 21)"). Information only.
            r = runs("produce latency, load tool at nice 10", settled(lambda t: produce_at_rate(t, nice=10)))
            record(f"{prefix}_nice_p99_ms", field(r, "latency_ms", "p99"), "nice -n 10 gregor bench produce (the same flags)")
            record(f"{prefix}_nice_p999_ms", field(r, "latency_ms", "p999"), "(same run)")
            record(f"{prefix}_nice_request_p99_ms", field(r, "request_latency_ms", "p99"), "(same run)")
        # The first second is left out, as for the produce rows above (fresh memory and new
        # segment files; it is where most end-to-end spikes were seen).
        r = runs(f"e2e latency ({prefix})", settled(lambda t: bench("e2e", "--topic", t, *flags, "--size", "1024", "--rate", rate, "--duration-secs", LAT_SECS, "--warmup-secs", "1", "--verify", timeout=int(float(LAT_SECS)) + 60)))
        record(f"{prefix}_e2e_p99_ms", field(r, "latency_ms", "p99"), f"gregor bench e2e --partitions 6 --producers {PRODUCERS} --batch-bytes {batch} --size 1024 --rate {rate} --duration-secs {LAT_SECS} --warmup-secs 1 --verify")
        results[f"{prefix}_e2e_worst_second_ms"] = med([max(x["series"]["latency_max_ms"] or [0]) for x in r])
    latency("lat", common, BATCH, results.get("p1k_rec_s"))
    latency("lat_default_batch", lat_common, LAT_BATCH, results.get("p1k_lat_cfg_rec_s"))
    status = open(f"/proc/{broker.pid}/status").read()
    results["broker_rss_peak_mb"] = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    commands["broker_rss_peak_mb"] = "VmHWM of the broker after all of the above"
finally:
    stop_broker(broker)

# Tail consume: read data that is still in the broker's memory (the tail cache), as fast as
# the fetch path serves it. A broker of its own, whose cache holds everything written here;
# the catch-up broker above keeps the default cache, so its reads come from disk.
# The cache lives in the memory registered with io_uring, at most 1 GiB per core, and `auto`
# keeps 64 MiB of it for writes in flight: 960 MiB per core at most (BENCHMARKS change 38).
# The records written must fit in that (3 million did not: half of them were read from
# disk, change 40); the disk reads during the read-back are printed to show it.
tail_mib_per_core = 960
tail_broker, TB = start_broker(os.path.join(work, "tail-data"), f"tail.cache.bytes.per.core={tail_mib_per_core << 20}")
try:
    def tail():
        # iperf3 right before each read-back, so both see the same machine.
        t = f"tail-{time.monotonic_ns()}"
        settle()
        run_json([G, "bench", "produce", "--bootstrap", TB, "--json", "--no-progress", "--topic", t, "--partitions", "6", "--producers", PRODUCERS, "--batch-bytes", BATCH, "--messages", TAIL_N, "--size", "1024"], timeout=300)
        # Read back by one consumer per broker core (the consumers split the partitions),
        # then by a single consumer: one consumer thread checking every CRC and walking every
        # record tops out near one core, so alone it measures the tool, not the broker.
        def consume(consumers):
            return run_json([G, "bench", "consume", "--bootstrap", TB, "--json", "--no-progress", "--topic", t, "--partitions", "6", "--messages", TAIL_N, "--size", "1024", "--consumers", str(consumers)], timeout=300)["mb_per_sec"]
        settle()
        try:
            net = tcp() if iperf else None
            two, read_mib = with_disk_reads(lambda: consume(2))
            return net, two, consume(1), read_mib
        finally:
            subprocess.run([G, "topics", "--bootstrap", TB, "delete", t], capture_output=True, timeout=60)
    r = runs("tail consume", tail)
    if iperf:
        record("tcp_mb_s", [x[0] for x in r], "iperf3 -c 127.0.0.1 -t 5 (one stream, right before each tail run)")
    record("tail_mb_s", [x[1] for x in r], f"gregor bench consume --partitions 6 --messages {TAIL_N} --consumers 2 (just produced, all in the tail cache: tail.cache.bytes.per.core={tail_mib_per_core} MiB)")
    record("tail_one_consumer_mb_s", [x[2] for x in r], "the same with --consumers 1, right after")
    record("tail_over_tcp", [c / n for n, c, _, _ in r if n], "each tail run (2 consumers) over the iperf3 run just before it")
    if all(x[3] is not None for x in r):
        record("tail_disk_read_mib", [x[3] for x in r], "MiB read from the data disk while the 2 consumers read (0: all from the tail cache)")
finally:
    stop_broker(tail_broker)

acc = runs("segment access", lambda: run_json([ACCESS, work, "1000", "1000"]))
record("oldest_over_newest", field(acc, "oldest_over_newest"), "segment_access <dir> 1000 1000 (engine example, tail cache off)")
shutil.rmtree(work, ignore_errors=True)

def fmt(key):
    v = results.get(key)
    return "n/a" if v is None else f"{v:.0f}"
rows = [
    ("produce 1 KB acks=1 / disk write", results.get("p1k_over_disk"), ">= 0.80", lambda v: v >= 0.8, f'medians {fmt("p1k_mb_s")} / {fmt("disk_write_mb_s")} MB/s'),
    ("produce 100 B acks=1, records/s", results.get("p100_rec_s"), ">= 2e6", lambda v: v >= 2e6, ""),
    ("acks=all / acks=1 (1 KB)", results.get("pall_over_p1k"), ">= 0.60", lambda v: v >= 0.6, f'medians {fmt("pall_mb_s")} / {fmt("p1k_mb_s")} MB/s'),
    ("tail consume / loopback TCP", results.get("tail_over_tcp"), ">= 0.70", lambda v: v >= 0.7, f'medians {fmt("tail_mb_s")} / {fmt("tcp_mb_s")} MB/s' if iperf else "iperf3 not installed (apt-get install iperf3), no TCP figure to divide by"),
    ("  read from disk meanwhile (MiB)", results.get("tail_disk_read_mib"), "info", lambda v: True, "about 0: the tail cache served it"),
    ("tail consume, 1 consumer (MB/s)", results.get("tail_one_consumer_mb_s"), "info", lambda v: True, "one client thread"),
    ("tail consume while producing (MB/s)", results.get("tail_live_mb_s"), "info", lambda v: True, "producers flat out on the same cores"),
    ("  read from disk meanwhile (MiB)", results.get("tail_live_disk_read_mib"), "info", lambda v: True, "behind the tail cache: paced disk reads"),
    ("catch-up consume / disk read", results.get("catchup_over_disk"), ">= 0.80", lambda v: v >= 0.8, f'medians {fmt("catchup_mb_s")} / {fmt("disk_read_mb_s")} MB/s'),
    ("produce p99 at half max (ms)", results.get("lat_p99_ms"), "<= 2", lambda v: v <= 2, f"batch.size {BATCH}"),
    ("produce p99.9 at half max (ms)", results.get("lat_p999_ms"), "<= 10", lambda v: v <= 10, ""),
    ("  of which request p99 (ms)", results.get("lat_request_p99_ms"), "info", lambda v: True, "request written to acknowledged: the broker, the disk and loopback"),
    ("  one producer's batch fills in (ms)", results.get("lat_batch_fill_ms"), "info", lambda v: True, "a record waits up to this before it is sent"),
    ("  load tool at nice 10: p99 (ms)", results.get("lat_nice_p99_ms"), "info", lambda v: True, "the broker first on the shared CPUs"),
    ("  load tool at nice 10: p99.9 (ms)", results.get("lat_nice_p999_ms"), "info", lambda v: True, ""),
    ("  load tool at nice 10: request p99 (ms)", results.get("lat_nice_request_p99_ms"), "info", lambda v: True, ""),
    ("end-to-end p99 at half max (ms)", results.get("lat_e2e_p99_ms"), "<= 5", lambda v: v <= 5, ""),
    ("  worst e2e latency in any second (ms)", results.get("lat_e2e_worst_second_ms"), "info", lambda v: True, "median over runs of the worst second"),
    ("e2e p99 at 100k rec/s (ms)", results.get("e2e_alone_p99_ms"), "info", lambda v: True, ""),
    ("  the same during a catch-up read (ms)", results.get("e2e_catchup_p99_ms"), "info", lambda v: True, "a consumer reading from disk meanwhile"),
    ("produce 1 KB, default batches (rec/s)", results.get("p1k_lat_cfg_rec_s"), "info", lambda v: True, f"batch.size {LAT_BATCH}"),
    ("  at half that: p99 (ms)", results.get("lat_default_batch_p99_ms"), "info", lambda v: True, ""),
    ("  at half that: p99.9 (ms)", results.get("lat_default_batch_p999_ms"), "info", lambda v: True, ""),
    ("  at half that: e2e p99 (ms)", results.get("lat_default_batch_e2e_p99_ms"), "info", lambda v: True, ""),
    ("read oldest / newest of 1000 segments", results.get("oldest_over_newest"), "<= 1.20", lambda v: v <= 1.2, ""),
    ("broker peak RSS (MB)", results.get("broker_rss_peak_mb"), "info", lambda v: True, "see docs/BENCHMARKS.md"),
]
results["settle_wait_s"] = sum(settle_waits)
commands["settle_wait_s"] = f"waits for a quiet machine before {len(settle_waits)} runs (sync, no I/O in flight, no trim started for 1 s, under 128 MiB reported to the host in 3 s)"
unwatched = [name for name, f in (("block device counters", DISK_STAT), ("page reporting counter", REPORTED)) if not f]
ran_out = sum(w >= 30 for w in settle_waits)
rows.append(("waits for a quiet machine, total (s)", results["settle_wait_s"], "info", lambda v: True, f"before {len(settle_waits)} runs, longest {max(settle_waits, default=0):.0f} s" + (f"; {ran_out} ran out (after 3, sync only)" if ran_out else "") + (f"; not watched (absent): {', '.join(unwatched)}" if unwatched else "")))
load_after = open("/proc/loadavg").read().split()[0]
print(f"\nbench-check {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, medians of {RUNS}, load {load_before} -> {load_after}")
if BROKER_SETTINGS:
    print(f"broker settings: {' '.join(BROKER_SETTINGS)}")
print(f"{'measure':40s} {'value':>12s} {'target':>8s}  {'':4s} detail")
for name, v, target, ok, detail in rows:
    shown = "n/a" if v is None else (f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}")
    mark = "" if v is None or target == "info" else ("met" if ok(v) else "MISS")
    print(f"{name:40s} {shown:>12s} {target:>8s}  {mark:4s} {detail}")
if os.environ.get("PERF_JSON"):
    json.dump({"results": results, "commands": commands, "broker_settings": BROKER_SETTINGS}, open(os.environ["PERF_JSON"], "w"), indent=1)
endef
# Exported to the bench-check recipe only, not to every target of the including Makefile.
bench-check: export PERF_CHECK_PY := $(PERF_CHECK_PY)

.PHONY: bench-check
bench-check:
	CARGO_TARGET_DIR=$(PERF_CARGO_TARGET_DIR) cargo build --release -p gregor-tools
	CARGO_TARGET_DIR=$(PERF_CARGO_TARGET_DIR) cargo build --release -p gregor-engine --example segment_access
	@PERF_GREGOR=$(PERF_GREGOR) PERF_SEGMENT_ACCESS=$(PERF_SEGMENT_ACCESS) PERF_RUNS=$(PERF_RUNS) \
	PERF_DIR_PARENT=$(PERF_DIR_PARENT) PERF_P1K_MESSAGES=$(PERF_P1K_MESSAGES) \
	PERF_P100_MESSAGES=$(PERF_P100_MESSAGES) PERF_PRODUCERS=$(PERF_PRODUCERS) \
	PERF_LATENCY_SECS=$(PERF_LATENCY_SECS) PERF_BATCH_BYTES=$(PERF_BATCH_BYTES) \
	PERF_TAIL_MESSAGES=$(PERF_TAIL_MESSAGES) PERF_LATENCY_BATCH_BYTES=$(PERF_LATENCY_BATCH_BYTES) \
	PERF_JSON=$(PERF_JSON) PERF_BROKER_SETTINGS="$(PERF_BROKER_SETTINGS)" python3 -c "$$PERF_CHECK_PY"
