//! `rediss://` from the native CLI against redis-server with TLS on: a throwaway CA and server
//! certificates made here with `openssl`; the real `flashgate` binary creates and reads an
//! event with the CA trusted, and fails closed, naming the cause, without it, on an expired
//! certificate and on a certificate for another host name.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command line");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`ca.pem`) in `dir`, and `openssl ca` set up to sign with it.
fn make_ca(dir: &Path) {
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    let conf = format!(
        "[ca]\ndefault_ca = test\n\
         [test]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\n\
         default_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n\
         [any]\ncommonName = supplied\n\
         [ip]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n\
         [other]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:origin.example.com\n",
        d = dir.display()
    );
    std::fs::write(dir.join("ca.cnf"), conf).unwrap();
    new_key_req(
        dir,
        &["-x509"],
        "ca.key",
        &[
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=flashgate test CA",
        ],
    );
}

/// `openssl req <before> <a new unencrypted P-256 key written to key> <after>`.
fn new_key_req(dir: &Path, before: &[&str], key: &str, after: &[&str]) {
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
    ];
    let mut args = vec!["req"];
    args.extend(before);
    args.extend(new_key);
    args.push(key);
    args.extend(after);
    openssl(dir, &args);
}

/// `<name>.pem` and `<name>.key`, signed by the test CA with extensions `ext` (`ip`: valid
/// for 127.0.0.1; `other`: only for origin.example.com), valid from `start` to `end`
/// (YYYYMMDDHHMMSSZ).
fn make_cert(dir: &Path, name: &str, ext: &str, start: &str, end: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    new_key_req(
        dir,
        &[],
        &key,
        &["-out", &csr, "-subj", &format!("/CN={name}")],
    );
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-extensions",
            ext,
            "-startdate",
            start,
            "-enddate",
            end,
            "-notext",
            "-in",
            &csr,
            "-out",
            &pem,
        ],
    );
}

/// redis-server serving only TLS (no plaintext port), stopped by its PID on drop.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    fn start(dir: &Path, cert: &str) -> TlsRedis {
        let port = free_port();
        let data = dir.join(format!("data-{cert}"));
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join(format!("{cert}.pem")))
            .arg("--tls-key-file")
            .arg(dir.join(format!("{cert}.key")))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.pem"))
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let server = TlsRedis { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `flashgate` against `origin`, with `ca` as FLASHGATE_ORIGIN_CA (or none at all).
fn flashgate(origin: &str, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashgate"));
    cmd.env_remove("FLASHGATE_ORIGIN_CA")
        .args(["--origin", origin, "--timeout-ms", "3000"])
        .args(args);
    if let Some(ca) = ca {
        cmd.env("FLASHGATE_ORIGIN_CA", ca);
    }
    cmd.output().unwrap()
}

fn succeeds(out: &Output) -> String {
    assert!(
        out.status.success(),
        "flashgate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one sentence a failure prints; it must say the handshake failed and `why`.
fn fails_naming(out: &Output, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should have failed closed: {err}");
    assert!(
        err.starts_with("flashgate: ") && err.contains("TLS handshake") && err.contains(why),
        "the error should name {why:?}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");
    eprint!("failed closed as expected: {err}");
}

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "flashgate-tls-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn rediss_verified_and_failing_closed() {
    let dir = tmpdir();
    make_ca(&dir);
    make_cert(&dir, "good", "ip", "20200101000000Z", "20991231000000Z");
    make_cert(&dir, "expired", "ip", "20200101000000Z", "20200102000000Z");
    make_cert(&dir, "other", "other", "20200101000000Z", "20991231000000Z");
    let ca = dir.join("ca.pem");
    let good = TlsRedis::start(&dir, "good");

    // Trusted through the environment: create the event, then read it back.
    let out = flashgate(
        &good.url(),
        Some(&ca),
        &[
            "event",
            "create",
            "--id",
            "tls-sale",
            "--starts-in",
            "60",
            "--item",
            "A:Alpha:100:EUR:5",
        ],
    );
    assert!(succeeds(&out).contains("1 items (5 units)"));
    // Trusted through the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .env_remove("FLASHGATE_ORIGIN_CA")
        .arg("--origin-ca")
        .arg(&ca)
        .args([
            "--origin",
            &good.url(),
            "event",
            "status",
            "tls-sale",
            "--json",
        ])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&succeeds(&out)).unwrap();
    assert_eq!(status["state"], "scheduled");

    // The same server without the CA: its issuer is unknown.
    let out = flashgate(&good.url(), None, &["event", "status", "tls-sale"]);
    fails_naming(&out, "UnknownIssuer");
    // Plaintext to the TLS port gets nothing usable either (there is no fallback).
    let plain = good.url().replace("rediss://", "redis://");
    assert!(
        !flashgate(&plain, Some(&ca), &["event", "status", "tls-sale"])
            .status
            .success()
    );

    let expired = TlsRedis::start(&dir, "expired");
    let out = flashgate(&expired.url(), Some(&ca), &["event", "status", "tls-sale"]);
    fails_naming(&out, "certificate expired");

    let other = TlsRedis::start(&dir, "other");
    let out = flashgate(&other.url(), Some(&ca), &["event", "status", "tls-sale"]);
    fails_naming(&out, "not valid for name");

    // A CA file that is not one is refused before any connection.
    let out = flashgate(
        &good.url(),
        Some(&dir.join("index.txt")),
        &["event", "status", "x"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("FLASHGATE_ORIGIN_CA"),
        "{err}"
    );

    drop((good, expired, other));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The worker under `wrangler dev` opens `rediss://` with the Workers socket's own TLS,
/// verified by workerd. workerd trusts the CA bundle named by `SSL_CERT_FILE` (or
/// `NODE_EXTRA_CA_CERTS`) in wrangler's environment, so the test CA can be trusted locally:
/// with it, the worker reaches the origin and places an order over TLS; without it, and with
/// the CA but a certificate for another host or an expired one, it fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_speaks_tls_to_the_origin_and_fails_closed() {
    let dir = tmpdir();
    make_ca(&dir);
    make_cert(&dir, "good", "ip", "20200101000000Z", "20991231000000Z");
    make_cert(&dir, "expired", "ip", "20200101000000Z", "20200102000000Z");
    make_cert(&dir, "other", "other", "20200101000000Z", "20991231000000Z");
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let good = TlsRedis::start(&dir, "good");
    let out = flashgate(
        &good.url(),
        Some(Path::new(ca)),
        &[
            "event",
            "create",
            "--id",
            "tls-w",
            "--starts-in=-1",
            "--item",
            "A:Alpha:100:EUR:5",
        ],
    );
    succeeds(&out);
    // Trust only the test CA, in both places workerd and wrangler look.
    let trust = [("SSL_CERT_FILE", ca), ("NODE_EXTRA_CA_CERTS", ca)];
    let untrusted = [
        ("SSL_CERT_FILE", "/dev/null"),
        ("NODE_EXTRA_CA_CERTS", "/dev/null"),
    ];
    let health = |w: &common::Worker| {
        let url = w.url("/api/health");
        async move {
            let r = reqwest::get(url).await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let trusted = common::Worker::start_in_env(None, &[("ORIGIN_URL", &good.url())], &trust);
    let (status, body) = health(&trusted).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["origin"]["ok"], true, "{body}");
    let http = common::http();
    let placed = trusted
        .send(
            &http,
            &common::Req::purchase("tls-w", "ann", "key-ann-tls1", &["A"]),
        )
        .await;
    assert_eq!(
        placed.status, 201,
        "an order placed over TLS: {}",
        placed.body
    );
    drop(trusted);

    let (expired, other) = (
        TlsRedis::start(&dir, "expired"),
        TlsRedis::start(&dir, "other"),
    );
    for (why, url, env) in [
        ("an unknown issuer", good.url(), &untrusted),
        ("an expired certificate", expired.url(), &trust),
        ("another host's certificate", other.url(), &trust),
    ] {
        let w = common::Worker::start_in_env(None, &[("ORIGIN_URL", &url)], env);
        let (status, body) = health(&w).await;
        eprintln!("{why}: {status} {body}");
        assert_eq!(status, 503, "{why}: fails closed: {body}");
        assert_eq!(body["origin"]["ok"], false, "{why}");
        let refused = w
            .send(
                &http,
                &common::Req::purchase("tls-w", "bob", "key-bob-tls1", &["A"]),
            )
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (503, Some("origin_unavailable")),
            "{why}: {}",
            refused.body
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
