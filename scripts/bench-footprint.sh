#!/usr/bin/env bash
# Footprint benchmark: stripped binary size per target (from dist/), and for the x86_64
# static release build: time from exec to the first `/readyz` 200 and idle RSS after
# 10 s; Debian's mosquitto idle RSS measured in the same run as the peer.
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
PY
