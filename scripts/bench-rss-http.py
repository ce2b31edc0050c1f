#!/usr/bin/env python3
"""RSS under a fast stream of HTTP requests, to tell a leak from allocator behaviour.

Starts a meteomesh binary on free 127.0.0.1 ports in a temporary directory, registers
one user with 10 subscriptions, waits 35 s (Argon2's pooled memory is freed), then asks
for the user's subscription list as fast as one keep-alive client can (/metrics every
100th request) and prints RSS after each 30 s round.

    scripts/bench-rss-http.py BINARY [ROUNDS] [--idle]

--idle sends no requests (the time-driven baseline: SLA history). To see an allocator's
share, compare builds of the same code: the shipped static build (mimalloc, tuned in
src/main.rs; MIMALLOC_* variables in the environment try other settings) and
`cargo build --release` (glibc); docs/BENCHMARKS.md has runs, musl's own allocator too.
"""
import http.client, json, os, socket, subprocess, sys, tempfile, time

args = [a for a in sys.argv[1:] if a != "--idle"]
idle = "--idle" in sys.argv
if not args:
    sys.exit(__doc__)
binary = os.path.abspath(args[0])
rounds = int(args[1]) if len(args) > 1 else 8


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


http_port = free_port()
env = dict(os.environ, METEOMESH__HTTP__LISTEN=f"127.0.0.1:{http_port}",
           METEOMESH__BUS__TCP_LISTEN=f"127.0.0.1:{free_port()}",
           METEOMESH__BUS__WS_LISTEN=f"127.0.0.1:{free_port()}",
           METEOMESH__WEATHER__OPEN_METEO_URL="http://127.0.0.1:9",
           METEOMESH__LOG__LEVEL="warn")
workdir = tempfile.mkdtemp(prefix="meteomesh-rss-")
proc = subprocess.Popen([binary], cwd=workdir, env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rss_kib():
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def connect():
    return http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)


def call(conn, method, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    r = conn.getresponse()
    return r.status, r.read()


try:
    started = time.time()
    while True:
        try:
            c = connect(); c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() - started > 30:
            sys.exit("meteomesh did not become ready")
        time.sleep(0.05)
    conn = connect()
    status, data = call(conn, "POST", "/api/v1/auth/register",
                        {"username": "rss", "password": "rss-password-1"})
    assert status == 201, (status, data)
    token = json.loads(data)["token"]
    for i in range(10):
        status, data = call(conn, "POST", "/api/v1/subscriptions",
                            {"label": f"s{i}", "place": {"lat": 40 + i, "lon": 10}, "min_temp": 5},
                            token)
        assert status == 201, (status, data)
    time.sleep(35)
    conn = connect()  # the idle wait outlasted the keep-alive deadline
    start = rss_kib()
    print(f"start: RSS {start} KiB", flush=True)
    n = 0
    for _ in range(rounds):
        round_start = time.time()
        while time.time() - round_start < 30:
            if idle:
                time.sleep(1)
                continue
            status, _ = call(conn, "GET", "/api/v1/subscriptions", token=token)
            assert status == 200, status
            n += 1
            if n % 100 == 0:
                call(conn, "GET", "/metrics")
        rss = rss_kib()
        print(f"{n} requests: RSS {rss} KiB ({rss - start:+d})", flush=True)
finally:
    proc.terminate()
    proc.wait(timeout=20)
