//! The deployment files: the systemd unit passes `systemd-analyze verify`, and the production
//! configuration loads as the unit loads it (secrets from the environment and a file).

use std::process::Command;

use crate::helpers::repo_path;

#[test]
fn the_systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        crate::helpers::skip_or_fail(
            "AVVISI_REQUIRE_SYSTEMD_ANALYZE",
            "the systemd unit check: systemd-analyze is not installed (apt-get install systemd)",
        );
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(repo_path("deploy/avvisi.service")).unwrap();
    // The unit names the installed binary; verify checks that it exists and is executable.
    assert!(unit
        .contains("ExecStart=/usr/local/bin/avvisi --config /etc/avvisi/production.toml daemon"));
    let unit = unit.replace("/usr/local/bin/avvisi", env!("CARGO_BIN_EXE_avvisi"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avvisi.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Warnings about this unit (an unknown key, a bad value) are printed but do not fail it.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("avvisi.service"))
        .collect();
    assert!(ours.is_empty(), "{stderr}");
    for hardening in [
        "User=avvisi",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            std::fs::read_to_string(&path).unwrap().contains(hardening),
            "{hardening}"
        );
    }
}

#[test]
fn the_production_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "relay-s3cret\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_avvisi"))
        .current_dir(repo_path("."))
        .args([
            "--config",
            "deploy/production.toml",
            "config",
            "show",
            "--json",
        ])
        // As the unit's environment file and credential provide them.
        .env(
            "AVVISI__DATABASE__URL",
            "postgres://avvisi:db-s3cret@db.example.internal:5432/avvisi",
        )
        .env("AVVISI__SMTP__PASSWORD_FILE", &password)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("s3cret"), "secrets masked: {stdout}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let get = |key: &str| {
        entries
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {stdout}"))
            .clone()
    };
    assert_eq!(get("delivery.transport")["value"], "smtp");
    assert!(get("delivery.transport")["source"]
        .as_str()
        .unwrap()
        .contains("deploy/production.toml"));
    assert_eq!(
        get("smtp.url")["value"],
        "smtp://relay.example.internal:587?tls=required"
    );
    assert!(get("database.url")["value"]
        .as_str()
        .unwrap()
        .starts_with("postgres://avvisi:***@db.example.internal"));
    assert_eq!(get("http.address")["value"], "127.0.0.1:9025");
}
