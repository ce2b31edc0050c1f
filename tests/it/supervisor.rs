//! systemd integration of the real binary: READY=1 on the notify socket once ready,
//! watchdog pings at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

fn messages(sock: &UnixDatagram, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} from the service; got {seen:?}");
}

#[test]
fn tells_systemd_ready_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = write_test_config(dir.path(), "");
    let p = ServeProcess::start(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let first = messages(&sock, "READY=1");
    assert!(
        first
            .iter()
            .any(|m| m.contains("STATUS=serving HTTP on 127.0.0.1:")),
        "{first:?}"
    );
    let pings = messages(&sock, "WATCHDOG=1");
    assert!(!pings.is_empty());
    // Pings keep coming (every 200 ms).
    messages(&sock, "WATCHDOG=1");
    let (status, _) = p.terminate();
    assert!(status.success());
    let last = messages(&sock, "STOPPING=1");
    assert!(!last.is_empty());
}
