#!/usr/bin/env bash
# Footprint benchmark: stripped binary size per target (from dist/), and for the x86_64
# static release build: time from exec to the first `/readyz` 200, idle RSS after 10 s,
# RSS right after 20 registrations and 32 s later (Argon2 memory freed), and RSS with
# 1,000 weather subscriptions (20 users) and 100 MQTT clients connected;
# Debian's mosquitto idle and with the same 100 clients, measured in the same run.
#
#   scripts/bench-footprint.sh            # builds dist/meteomesh-x86_64-unknown-linux-musl if missing
#
# Everything listens on 127.0.0.1; each server runs ~10 s and is stopped by the script.
set -euo pipefail
cd "$(dirname "$0")/.."

X86=dist/meteomesh-x86_64-unknown-linux-musl
[ -x "$X86" ] || scripts/build-arm.sh x86_64 >/dev/null
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || {
  echo "needs Debian's mosquitto (apt-get install mosquitto)"; exit 1; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

echo "## Binary size (stripped, static musl)"
for f in dist/meteomesh-*; do
  [ -f "$f" ] || continue
  bytes=$(stat -c %s "$f")
  printf '%-48s %9d bytes  %5.2f MiB\n' "$(basename "$f")" "$bytes" "$(echo "$bytes/1048576" | bc -l)"
done
echo

python3 - "$X86" "$MOSQUITTO" <<'PY'
import os, socket, statistics, subprocess, sys, tempfile, time, http.client

meteomesh, mosquitto = sys.argv[1], sys.argv[2]
IDLE = 10.0

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def anon_kib(pid):
    # Private memory the process owns (heap, stacks); the rest of RSS is the binary's
    # own pages, clean and file-backed, which the kernel can drop and re-read.
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])

def pss_kib(pid):
    # Proportional set size: shared libraries count by share, so a dynamically linked
    # peer is not charged for all of libc/libssl.
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])

def ready(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        c.request("GET", "/readyz"); ok = c.getresponse().status == 200; c.close(); return ok
    except OSError:
        return False

def run_meteomesh():
    d = tempfile.mkdtemp()
    http_port = free_port()
    env = dict(os.environ, METEOMESH__HTTP__LISTEN=f"127.0.0.1:{http_port}",
               METEOMESH__BUS__TCP_LISTEN=f"127.0.0.1:{free_port()}",
               METEOMESH__BUS__WS_LISTEN=f"127.0.0.1:{free_port()}",
               METEOMESH__LOG__LEVEL="warn")
    t0 = time.perf_counter()
    p = subprocess.Popen([os.path.abspath(meteomesh)], cwd=d, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready(http_port):
        if p.poll() is not None: raise SystemExit("meteomesh exited early")
        if time.perf_counter() - t0 > 30: raise SystemExit("meteomesh not ready in 30 s")
        time.sleep(0.001)
    t_ready = time.perf_counter() - t0
    time.sleep(IDLE)
    rss, pss, anon = rss_kib(p.pid), pss_kib(p.pid), anon_kib(p.pid)
    p.terminate(); code = p.wait(timeout=20)
    return t_ready, rss, pss, code, anon

def mqtt_connect(port, client_id, user, password):
    """A minimal MQTT 3.1.1 CONNECT (keepalive 0: no pings needed); returns the socket."""
    def s(b): return len(b).to_bytes(2, "big") + b
    var = s(b"MQTT") + bytes([4, 0xC2]) + (0).to_bytes(2, "big")
    payload = s(client_id.encode()) + s(user.encode()) + s(password.encode())
    body = var + payload
    n, rl = len(body), b""
    while True:
        d, n = n % 128, n // 128
        rl += bytes([d | (0x80 if n else 0)])
        if not n: break
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(bytes([0x10]) + rl + body)
    ack = sock.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise SystemExit(f"CONNACK refused: {ack!r}")
    return sock

def api(port, method, path, body=None, token=None):
    import json
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"content-type": "application/json"}
    if token: h["authorization"] = f"Bearer {token}"
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse(); data = r.read(); c.close()
    if r.status >= 300: raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None

def run_meteomesh_loaded():
    d = tempfile.mkdtemp()
    http_port, mqtt_port = free_port(), free_port()
    env = dict(os.environ, METEOMESH__HTTP__LISTEN=f"127.0.0.1:{http_port}",
               METEOMESH__BUS__TCP_LISTEN=f"127.0.0.1:{mqtt_port}",
               METEOMESH__BUS__WS_LISTEN=f"127.0.0.1:{free_port()}",
               METEOMESH__BUS__USERS="bench:bench-password",
               METEOMESH__WEATHER__OPEN_METEO_URL="http://127.0.0.1:9",
               METEOMESH__LOG__LEVEL="warn")
    p = subprocess.Popen([os.path.abspath(meteomesh)], cwd=d, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    while not ready(http_port):
        if time.perf_counter() - t0 > 30: raise SystemExit("meteomesh not ready in 30 s")
        time.sleep(0.01)
    for u in range(20):
        tok = api(http_port, "POST", "/api/v1/auth/register",
                  {"username": f"bench{u}", "password": "bench-password-1"})["token"]
        for k in range(50):
            i = u * 50 + k
            api(http_port, "POST", "/api/v1/subscriptions",
                {"label": f"s{i}", "place": {"lat": 30 + (i // 40) * 0.5, "lon": -10 + (i % 40) * 0.5},
                 "min_temp": 5, "max_temp": 30, "rain": True}, tok)
    # Argon2's working memory (19 MiB per hashing permit) is pooled while logins come and
    # freed 30 s after the last one.
    rss_logins = rss_kib(p.pid)
    time.sleep(32)
    rss_after_logins = rss_kib(p.pid)
    socks = [mqtt_connect(mqtt_port, f"bench-{i}", "bench", "bench-password") for i in range(100)]
    time.sleep(5)
    rss, anon = rss_kib(p.pid), anon_kib(p.pid)
    for s_ in socks: s_.close()
    p.terminate(); p.wait(timeout=20)
    return rss, anon, rss_logins, rss_after_logins

def run_mosquitto_loaded():
    d = tempfile.mkdtemp()
    conf, pw = os.path.join(d, "m.conf"), os.path.join(d, "pw")
    subprocess.run(["mosquitto_passwd", "-b", "-c", pw, "bench", "bench-password"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\npersistence false\n")
    # mosquitto started as root drops to its own user, which must read these files.
    os.chmod(d, 0o755); os.chmod(pw, 0o644); os.chmod(conf, 0o644)
    p = subprocess.Popen([mosquitto, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError:
            if time.perf_counter() - t0 > 10: raise SystemExit("mosquitto did not listen")
            time.sleep(0.05)
    socks = [mqtt_connect(port, f"bench-{i}", "bench", "bench-password") for i in range(100)]
    time.sleep(5)
    rss, anon = rss_kib(p.pid), anon_kib(p.pid)
    for s_ in socks: s_.close()
    p.terminate(); p.wait(timeout=20)
    return rss, anon

def run_mosquitto():
    d = tempfile.mkdtemp()
    conf = os.path.join(d, "m.conf")
    with open(conf, "w") as f:
        f.write(f"listener {free_port()} 127.0.0.1\nallow_anonymous false\npersistence false\n")
    p = subprocess.Popen([mosquitto, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(IDLE)
    rss, pss, anon = rss_kib(p.pid), pss_kib(p.pid), anon_kib(p.pid)
    p.terminate(); p.wait(timeout=20)
    return rss, pss, anon

runs = [run_meteomesh() for _ in range(3)]
ready_ms = statistics.median(r[0] for r in runs) * 1000
rss = statistics.median(r[1] for r in runs)
pss = statistics.median(r[2] for r in runs)
anon = statistics.median(r[4] for r in runs)
assert all(r[3] == 0 for r in runs), f"meteomesh exit codes {[r[3] for r in runs]}"
mosq, mosq_pss, mosq_anon = run_mosquitto()
v = subprocess.run([mosquitto, "-h"], capture_output=True, text=True).stdout.splitlines()
mver = v[0] if v else "mosquitto"
print("## Start and idle memory (x86_64 static release build, median of 3)")
print(f"meteomesh time to /readyz 200 : {ready_ms:7.1f} ms   (target <= 150 ms)")
print(f"meteomesh idle RSS after {IDLE:.0f} s : {rss/1024:7.2f} MiB  (target <= 8 MiB)   PSS {pss/1024:5.2f} MiB")
print(f"{mver} (Debian, dynamically linked)")
print(f"mosquitto idle RSS after {IDLE:.0f} s : {mosq/1024:7.2f} MiB                     PSS {mosq_pss/1024:5.2f} MiB")
print(f"anonymous (private) memory      : meteomesh {anon/1024:5.2f} MiB, mosquitto {mosq_anon/1024:5.2f} MiB")
print(f"ratio meteomesh / mosquitto     : RSS {rss/mosq:4.2f}x  PSS {pss/mosq_pss:4.2f}x  anonymous {anon/mosq_anon:4.2f}x  (meteomesh also serves HTTP + SQLite)")
lrss, lanon, rss_logins, rss_after_logins = run_meteomesh_loaded()
mrss, manon = run_mosquitto_loaded()
print("## Loaded: 1,000 subscriptions (20 users) + 100 MQTT clients connected")
print(f"meteomesh RSS right after 20 registrations : {rss_logins/1024:7.2f} MiB, 32 s later {rss_after_logins/1024:7.2f} MiB")
print(f"meteomesh RSS                   : {lrss/1024:7.2f} MiB  anonymous {lanon/1024:5.2f} MiB")
print(f"mosquitto RSS (100 clients)     : {mrss/1024:7.2f} MiB  anonymous {manon/1024:5.2f} MiB")
print(f"ratio meteomesh / mosquitto     : RSS {lrss/mrss:4.2f}x  anonymous {lanon/manon:4.2f}x")
PY
