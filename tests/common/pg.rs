//! A throwaway Postgres server on a free loopback port, in a temporary directory, stopped with
//! its own `pg_ctl stop` and removed when dropped. `initdb` and `postgres` refuse to run as
//! root, so as root they run as the `postgres` user (`runuser`), in a directory it owns.
//! Missing server binaries fail the test with a sentence that says what to install.

use super::{free_port, tmpdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres_user: bool,
}

/// The directory of `initdb` and `pg_ctl`: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else `PATH`.
fn bin_dir() -> PathBuf {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(d) = std::env::var("PG_BIN") {
        let d = PathBuf::from(d);
        assert!(
            has_tools(&d),
            "PG_BIN={} holds no initdb and pg_ctl",
            d.display()
        );
        return d;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has_tools(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return d;
    }
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(PathBuf::from)
        .find(|d| has_tools(d))
        .unwrap_or_else(|| {
            panic!(
                "the Postgres server binaries (initdb, pg_ctl) are not installed: \
                 run `apt-get install -y postgresql`, or set PG_BIN to their directory"
            )
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    pub fn start() -> Postgres {
        let pg = Postgres {
            port: free_port(),
            dir: tmpdir("pg"),
            bin: bin_dir(),
            as_postgres_user: is_root(),
        };
        if pg.as_postgres_user {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&pg.dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand {} to the postgres user", pg.dir.display());
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "flashgate", "--no-sync"],
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.display()
        );
        let log = pg.dir.join("log").display().to_string();
        let out = pg.try_run(
            "pg_ctl",
            &[
                "-D", &data, "-o", &opts, "-l", &log, "-w", "-t", "60", "start",
            ],
        );
        if !out.status.success() {
            panic!(
                "Postgres did not start: {}{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        pg
    }

    /// `postgres://flashgate@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://flashgate@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.try_run(tool, args);
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.try_run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
