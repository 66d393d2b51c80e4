//! DKIM that verifies: every email avvisi signs passes an independent verifier (dkimpy) against
//! the public key, for RSA and ed25519, and fails it once a header is changed after signing.
//!
//! The verifier is Python's dkimpy (Debian's `python3-dkim python3-nacl`, or `pip install dkimpy
//! pynacl`). Without it the test is skipped with a message, unless
//! `AVVISI_REQUIRE_DKIM_VERIFIER=1` (set by `.ci/run`) or `CI=true`.

use std::process::Command;

use crate::helpers::{repo_path, spawn_app, Backend};

pub(crate) fn verifier_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import dkim, nacl"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        crate::helpers::skip_or_fail(
            "AVVISI_REQUIRE_DKIM_VERIFIER",
            "the DKIM verification: dkimpy is not installed \
             (apt-get install python3-dkim python3-nacl, or pip install dkimpy pynacl)",
        );
    }
    ok
}

pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (key file contents, public key for the DNS record) of a new key.
pub(crate) fn new_key(algorithm: &str, dir: &std::path::Path) -> (String, String) {
    match algorithm {
        "rsa" => {
            let pem = dir.join("rsa.pem");
            let pem = pem.to_str().unwrap();
            run("openssl", &["genrsa", "-traditional", "-out", pem, "2048"]);
            let public = run(
                "sh",
                &[
                    "-c",
                    &format!("openssl rsa -in {pem} -pubout -outform DER 2>/dev/null | base64 -w0"),
                ],
            );
            (std::fs::read_to_string(pem).unwrap(), public)
        }
        _ => {
            let seed: [u8; 32] = rand::random();
            let seed = run(
                "python3",
                &["-c", "import base64,sys; print(base64.b64encode(bytes.fromhex(sys.argv[1])).decode())", &hex(&seed)],
            );
            let public = run(
                "python3",
                &[
                    "-c",
                    "import base64,sys,nacl.signing; \
                     k = nacl.signing.SigningKey(base64.b64decode(sys.argv[1])); \
                     print(base64.b64encode(bytes(k.verify_key)).decode())",
                    seed.trim(),
                ],
            );
            (seed, public)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_and_a_changed_header_breaks_them() {
    if !verifier_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    app.import_examples().await;
    for algorithm in ["rsa", "ed25519"] {
        let (key, public) = new_key(algorithm, app.dir.path());
        let key_file = app.dir.path().join(format!("{algorithm}.key"));
        std::fs::write(&key_file, key).unwrap();
        let outbox = app.dir.path().join(format!("outbox-{algorithm}"));
        let signed = app.with_settings(&[
            ("AVVISI__DKIM__SELECTOR", "avvisi2026"),
            ("AVVISI__DKIM__DOMAIN", "istruzione.it"),
            ("AVVISI__DKIM__KEY_FILE", key_file.to_str().unwrap()),
            ("AVVISI__DKIM__ALGORITHM", algorithm),
            ("AVVISI__DELIVERY__DIR", outbox.to_str().unwrap()),
        ]);
        // The same 47 rows (30 emails) each time: planned once, sent to this algorithm's folder.
        sqlx::query("DELETE FROM outbox")
            .execute(app.db.pool())
            .await
            .unwrap();
        signed.run_once().await;
        let files: Vec<String> = std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .filter(|p| p.ends_with(".eml"))
            .collect();
        assert_eq!(files.len(), 30, "{algorithm}");
        let script = repo_path("tests/tools/dkim_verify.py");
        let mut args = vec![script.to_str().unwrap(), algorithm, public.trim()];
        args.extend(files.iter().map(String::as_str));
        let report = run("python3", &args);
        let passed = report.lines().filter(|l| l.starts_with("pass ")).count();
        let tampered_failed = report
            .lines()
            .filter(|l| l.starts_with("tampered-fail "))
            .count();
        assert_eq!(
            (passed, tampered_failed),
            (30, 30),
            "{algorithm}:\n{report}"
        );
    }
    app.teardown().await;
}
