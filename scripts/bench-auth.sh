#!/usr/bin/env bash
# Login flood benchmark against the x86_64 static release build on 127.0.0.1:
#  1. 200 concurrent clients send 1,000 wrong-password logins with throttling relaxed,
#     so every attempt pays for an argon2id hash: logins/s and peak RSS (VmHWM), which
#     the hashing semaphore (auth.hash_concurrency) must keep bounded;
#  2. the same with 1,000 correct-password logins;
#  3. the same flood with the default throttling (progressive delays after 5 failures)
#     and the default cap of 64 connections per client address: how fast it is shed.
# Each server runs only for its flood, bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=dist/meteomesh-x86_64-unknown-linux-musl
[ -x "$BIN" ] || scripts/build-arm.sh x86_64 >/dev/null

python3 - "$BIN" <<'PY'
import concurrent.futures, http.client, json, os, socket, subprocess, sys, tempfile, threading, time

BIN = os.path.abspath(sys.argv[1])
CONCURRENCY, ATTEMPTS = 200, 1000

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

def call(port, method, path, body=None, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=json.dumps(body) if body else None,
              headers={"Content-Type": "application/json"} if body else {})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, data

def start(extra_env):
    d = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, METEOMESH__HTTP__LISTEN=f"127.0.0.1:{port}",
               METEOMESH__BUS__TCP_LISTEN=f"127.0.0.1:{free_port()}",
               METEOMESH__BUS__WS_LISTEN=f"127.0.0.1:{free_port()}",
               METEOMESH__LOG__LEVEL="warn", **extra_env)
    p = subprocess.Popen([BIN], cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            if call(port, "GET", "/readyz", timeout=1)[0] == 200: break
        except OSError: pass
        if time.time() > deadline or p.poll() is not None: raise SystemExit("server did not start")
        time.sleep(0.01)
    return p, port

def flood(port, password):
    body = {"username": "flood", "password": password}
    codes = {}
    lock = threading.Lock()
    def one(_):
        try:
            s, _ = call(port, "POST", "/api/v1/auth/login", body)
        except OSError as e:
            s = type(e).__name__
        with lock: codes[s] = codes.get(s, 0) + 1
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as ex:
        list(ex.map(one, range(ATTEMPTS)))
    return time.perf_counter() - t0, codes

def run(label, env, password):
    p, port = start(env)
    s, _ = call(port, "POST", "/api/v1/auth/register", {"username": "flood", "password": "flood-password-1"})
    assert s == 201, s
    idle = status_kib(p.pid, "VmRSS")
    elapsed, codes = flood(port, password)
    peak = status_kib(p.pid, "VmHWM")
    p.terminate(); rc = p.wait(timeout=20)
    print(f"{label}")
    print(f"  {ATTEMPTS} logins from {CONCURRENCY} concurrent clients in {elapsed:.2f} s = {ATTEMPTS/elapsed:.1f} logins/s")
    print(f"  answers: {dict(sorted((str(k), v) for k, v in codes.items()))}")
    print(f"  RSS before flood {idle/1024:.1f} MiB, peak (VmHWM) {peak/1024:.1f} MiB; exit code {rc}")
    return peak

# All 200 clients come from 127.0.0.1: lift the per-address connection cap too
# (http.max_connections_per_client, 64), or most of the flood is refused before hashing.
relaxed = {
    "METEOMESH__AUTH__LOGIN_MAX_FAILURES": "1000000",
    "METEOMESH__HTTP__MAX_CONNECTIONS_PER_CLIENT": "1000",
}
print(f"meteomesh release build {BIN}; auth.hash_concurrency = 2 (default); argon2id m=19 MiB t=2 p=1")
print(f"machine: {os.cpu_count()} CPUs")
run("1. wrong passwords, throttling relaxed (every attempt hashed):", relaxed, "wrong-password-x")
run("2. correct passwords (every attempt hashed, token issued):", relaxed, "flood-password-1")
run("3. wrong passwords, default throttling and per-address cap:", {}, "wrong-password-x")
PY
