//! Package structure: the .deb (scripts/build-deb.sh, checked with dpkg-deb) and the
//! OpenWrt .ipk (scripts/build-ipk.sh, an outer tar of debian-binary, control.tar.gz and
//! data.tar.gz), both built around a stand-in binary. Installing and purging the real
//! amd64 .deb runs in CI (scripts/test-deb.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stand_in(dir: &Path) -> PathBuf {
    let bin = dir.join("meteomesh");
    std::fs::write(&bin, "#!/bin/sh\necho meteomesh\n").unwrap();
    run(Command::new("chmod").arg("755").arg(&bin));
    bin
}

fn shell_syntax_ok(path: &Path) {
    run(Command::new("sh").arg("-n").arg(path));
}

#[test]
fn deb_has_the_binary_unit_conffile_and_maintainer_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_in(dir.path());
    let out = dir.path().join("out");
    let deb = run(Command::new(root().join("scripts/build-deb.sh"))
        .arg("amd64")
        .arg(&bin)
        .arg(&out));
    let deb = deb.trim();
    let field = |name: &str| run(Command::new("dpkg-deb").args(["--field", deb, name]));
    assert_eq!(field("Package").trim(), "meteomesh");
    assert_eq!(field("Architecture").trim(), "amd64");
    assert_eq!(field("Version").trim(), env!("CARGO_PKG_VERSION"));
    let contents = run(Command::new("dpkg-deb").args(["--contents", deb]));
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/meteomesh"),
        (
            "-rw-r--r-- root/root",
            "./lib/systemd/system/meteomesh.service",
        ),
        ("-rw-r----- root/root", "./etc/meteomesh/meteomesh.toml"),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{mode} {path} missing in:\n{contents}"
        );
    }
    assert!(
        contents
            .lines()
            .next()
            .unwrap()
            .starts_with("drwxr-xr-x root/root")
    );
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb")
        .args(["--control", deb])
        .arg(&control));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/meteomesh/meteomesh.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        shell_syntax_ok(&control.join(script));
    }
    let unit = std::fs::read_to_string(root().join("systemd/meteomesh.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "User=meteomesh",
        "StateDirectory=meteomesh",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "Restart=on-failure",
        "ExecStart=/usr/bin/meteomesh --config /etc/meteomesh/meteomesh.toml serve",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    assert!(
        !unit.lines().any(|l| l.starts_with("ProcSubset=")),
        "host metrics need /proc"
    );
}

#[test]
fn ipk_is_an_opkg_archive_with_control_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_in(dir.path());
    let out = dir.path().join("out");
    let ipk = run(Command::new(root().join("scripts/build-ipk.sh"))
        .arg("arm_cortex-a7_neon-vfpv4")
        .arg(&bin)
        .arg(&out));
    let ipk = ipk.trim();
    assert!(
        ipk.ends_with("meteomesh_0.1.0-1_arm_cortex-a7_neon-vfpv4.ipk"),
        "{ipk}"
    );
    let outer = run(Command::new("tar").args(["tzf", ipk]));
    assert_eq!(
        outer.lines().collect::<Vec<_>>(),
        ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    );
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run(Command::new("tar").args(["xzf", ipk, "-C"]).arg(&x));
    assert_eq!(
        std::fs::read_to_string(x.join("debian-binary")).unwrap(),
        "2.0\n"
    );
    let c = x.join("control");
    std::fs::create_dir(&c).unwrap();
    run(Command::new("tar")
        .arg("xzf")
        .arg(x.join("control.tar.gz"))
        .arg("-C")
        .arg(&c));
    let control = std::fs::read_to_string(c.join("control")).unwrap();
    for line in [
        "Package: meteomesh",
        "Version: 0.1.0-1",
        "Architecture: arm_cortex-a7_neon-vfpv4",
        "Require-User: meteomesh=397:meteomesh=397",
        "Depends: libc",
    ] {
        assert!(
            control.lines().any(|l| l == line),
            "control lacks {line}:\n{control}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(c.join("conffiles")).unwrap(),
        "/etc/config/meteomesh\n/etc/meteomesh/meteomesh.toml\n"
    );
    shell_syntax_ok(&c.join("postinst"));
    shell_syntax_ok(&c.join("prerm"));
    let data = run(Command::new("tar").arg("tzvf").arg(x.join("data.tar.gz")));
    for (mode, path) in [
        ("-rwxr-xr-x 0/0", "./usr/bin/meteomesh"),
        ("-rwxr-xr-x 0/0", "./etc/init.d/meteomesh"),
        ("-rw------- 0/0", "./etc/config/meteomesh"),
        ("-rw-r----- 0/0", "./etc/meteomesh/meteomesh.toml"),
    ] {
        assert!(
            data.lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{mode} {path} missing in:\n{data}"
        );
    }
    let init = root().join("openwrt/meteomesh.init");
    shell_syntax_ok(&init);
    let init = std::fs::read_to_string(init).unwrap();
    for needle in [
        "USE_PROCD=1",
        "procd_set_param respawn",
        "procd_set_param stdout 1",
        "procd_set_param user meteomesh",
        "procd_add_jail meteomesh",
        "procd_add_reload_trigger meteomesh",
    ] {
        assert!(init.contains(needle), "init script lacks {needle}");
    }
}

/// Every UCI option the init script maps is in the shipped /etc/config/meteomesh, and
/// each environment variable names a real config key.
#[test]
fn uci_options_map_to_config_keys() {
    let init = std::fs::read_to_string(root().join("openwrt/meteomesh.init")).unwrap();
    let uci = std::fs::read_to_string(root().join("openwrt/meteomesh.config")).unwrap();
    let mut mapped = 0;
    for line in init.lines().map(str::trim) {
        let Some(rest) = line
            .strip_prefix("add_env ")
            .or_else(|| line.strip_prefix("add_env_bool "))
        else {
            continue;
        };
        let (option, var) = rest.split_once(' ').unwrap();
        assert!(
            uci.contains(&format!("option {option} ")),
            "{option} not in /etc/config/meteomesh"
        );
        let key = var.strip_prefix("METEOMESH__").unwrap().to_lowercase();
        let (section, name) = key.split_once("__").unwrap();
        let example = std::fs::read_to_string(root().join("config.example.toml")).unwrap();
        let in_section = example
            .split(&format!("[{section}]"))
            .nth(1)
            .unwrap_or_else(|| panic!("no [{section}] for {var}"));
        assert!(
            in_section
                .lines()
                .any(|l| l.starts_with(&format!("{name} = "))),
            "{var}: no {section}.{name}"
        );
        mapped += 1;
    }
    assert_eq!(mapped, 10);
}
