//! What the instruments stand on, apart from the fleet: a blocking RESP connection over a std
//! `TcpStream` ([`BlockingConn`]), the raised scheduling priority of the OS thread that uses it
//! ([`raise_priority`]), and a monotonic clock that speaks the sale's milliseconds ([`Clock`]).
//!
//! Why not a task on the simulator's tokio runtime: the fleet, its connection pool and the
//! origin share this machine's cores with the instruments, and a task waits for a worker
//! thread and for the reactor to notice its reply. Under a crowd of tens of thousands of
//! attempts per second that wait is the generator's, not the origin's, and it swamps the
//! origin's own latency. A thread of its own that blocks in `read(2)` is woken by the kernel
//! when the reply lands; at `SCHED_FIFO` it then runs at once, ahead of every ordinary
//! (`SCHED_OTHER`) thread of the fleet, so the round trip it times is the network stack and
//! the origin, not the queue of runnable threads. The codec is the worker's own
//! ([`encode_command`], [`decode_reply`]), the same bytes any client sends.

use super::time;
use flashgate_core::origin::resp::{
    decode_reply, encode_command, RespConfig, ServerReply, MAX_REPLY_BYTES,
};
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The real-time priority asked for (1–99; low, since it only has to beat ordinary threads).
const FIFO_PRIORITY: i32 = 10;
/// The nice value asked for when real-time scheduling is refused.
const NICE: i32 = -20;

/// The scheduling an instrument thread got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// `SCHED_FIFO`: it runs as soon as it is woken, ahead of every ordinary thread.
    Fifo,
    /// `SCHED_OTHER` at nice −20: the largest share, but no guarantee to run at once.
    Nice,
    /// Neither was permitted: an ordinary thread, as noisy as the fleet's.
    #[default]
    Normal,
}

impl Priority {
    /// Its name, as the JSON report spells it.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Fifo => "fifo",
            Priority::Nice => "nice",
            Priority::Normal => "normal",
        }
    }
}

/// Raises the calling thread's scheduling priority as far as permitted: `SCHED_FIFO`, else
/// nice −20, else nothing (silently: the report says which).
pub fn raise_priority() -> Priority {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: FIFO_PRIORITY,
        };
        // SAFETY: plain syscalls on the calling thread with a valid, initialised argument.
        unsafe {
            if libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) == 0 {
                return Priority::Fifo;
            }
            // On Linux, PRIO_PROCESS with a thread id sets that one thread's nice value.
            if libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) == 0 {
                return Priority::Nice;
            }
        }
    }
    Priority::Normal
}

/// Monotonic time as milliseconds after the sale's start (`t0_ms`, Unix ms). The wall clock
/// is read once, to place the start; every later reading is `Instant`, which never jumps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    anchor: Instant,
    /// `t0_ms` in microseconds of the sale's time after `anchor` (negative when the start was
    /// before it).
    t0_us: i64,
    /// Wall-clock time per unit of the sale's ([`time`]).
    scale: f64,
}

impl Clock {
    pub fn new(t0_ms: i64) -> Clock {
        Clock {
            anchor: Instant::now(),
            t0_us: (t0_ms - time::now_ms()) * 1000,
            scale: time::slow().scale,
        }
    }

    /// Microseconds after the start at `at`, in the sale's time.
    pub fn us_at(&self, at: Instant) -> i64 {
        let since = match at.checked_duration_since(self.anchor) {
            Some(d) => d.as_micros() as i64,
            None => -((self.anchor - at).as_micros() as i64),
        };
        (since as f64 / self.scale) as i64 - self.t0_us
    }

    /// Milliseconds after the start at `at` (rounded down).
    pub fn ms_at(&self, at: Instant) -> i64 {
        self.us_at(at).div_euclid(1000)
    }

    /// The instant `ms` milliseconds after the start.
    pub fn instant(&self, ms: i64) -> Instant {
        let us = ((self.t0_us + ms * 1000) as f64 * self.scale) as i64;
        if us >= 0 {
            self.anchor + Duration::from_micros(us as u64)
        } else {
            self.anchor
                .checked_sub(Duration::from_micros(us.unsigned_abs()))
                .unwrap_or(self.anchor)
        }
    }
}

/// One RESP connection, blocking, for a thread of its own. A failed call leaves it unusable
/// (its reply stream is lost): open another.
pub struct BlockingConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl BlockingConn {
    /// Connects to `config`'s seed node (AUTH if it has a password); every connect, write and
    /// read is bounded by its `timeout_ms`.
    pub fn open(config: &RespConfig) -> io::Result<BlockingConn> {
        if config.tls {
            return Err(io::Error::other(
                "rediss:// is supported by the worker only; from the CLI, reach the origin through a TLS tunnel",
            ));
        }
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let addr = (config.seed.host.as_str(), config.seed.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{} has no address", config.seed.host)))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut conn = BlockingConn {
            stream,
            buf: Vec::with_capacity(4096),
        };
        if let Some(pw) = &config.password {
            let mut auth = vec!["AUTH".to_string()];
            auth.extend(config.username.clone());
            auth.push(pw.clone());
            conn.call(&auth)?
                .map_err(|e| io::Error::other(format!("AUTH: {e}")))?;
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[String]) -> io::Result<ServerReply> {
        self.stream.write_all(&encode_command(args))?;
        loop {
            if let Some((reply, used)) = decode_reply(&self.buf).map_err(io::Error::other)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(io::Error::other("reply too large"));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the origin closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One command as a test's RESP server reads it (`*N`, then `$len` and the argument, N times);
/// `None` once the client has gone.
#[cfg(test)]
pub(crate) fn read_command(r: &mut impl std::io::BufRead) -> Option<Vec<String>> {
    let mut line = String::new();
    if !r.read_line(&mut line).is_ok_and(|n| n > 0) {
        return None;
    }
    let n: usize = line.trim()[1..].parse().unwrap();
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut len, mut arg) = (String::new(), String::new());
        r.read_line(&mut len).unwrap();
        r.read_line(&mut arg).unwrap();
        args.push(arg.trim_end().to_string());
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgate_core::model::now_ms;
    use flashgate_core::origin::Value;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_priority_reported_is_the_one_in_force() {
        std::thread::spawn(|| {
            let got = raise_priority();
            // SAFETY: queries about the calling thread.
            let (policy, nice) = unsafe {
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t),
                )
            };
            assert_eq!(policy == libc::SCHED_FIFO, got == Priority::Fifo, "{got:?}");
            if got == Priority::Nice {
                assert_eq!(nice, NICE);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_clock_places_instants_around_the_start() {
        let t0 = now_ms() + 500;
        let c = Clock::new(t0);
        let now = Instant::now();
        let at = c.ms_at(now);
        assert!((-502..=-498).contains(&at), "{at}");
        let start = c.instant(0);
        assert!(start > now && start - now <= Duration::from_millis(502));
        assert_eq!(c.ms_at(c.instant(1234)), 1234);
        assert_eq!(c.ms_at(c.instant(-300)), -300);
        let past = Clock::new(now_ms() - 10_000);
        assert!((9_998..=10_002).contains(&past.ms_at(Instant::now())));
        assert_eq!(past.ms_at(past.instant(0)), 0, "before the clock was made");
    }

    /// A one-shot RESP server on a thread: answers each command line it reads with `reply`.
    fn server(replies: Vec<&'static [u8]>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut seen = Vec::new();
            for reply in replies {
                seen.push(read_command(&mut r).unwrap().join(" "));
                // The reply in two writes: the reader must wait for the rest.
                let (a, b) = reply.split_at(reply.len() / 2);
                w.write_all(a).unwrap();
                w.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
                w.write_all(b).unwrap();
            }
            seen
        });
        (port, t)
    }

    #[test]
    fn a_blocking_connection_authenticates_and_reads_split_replies() {
        let (port, t) = server(vec![
            b"+OK\r\n",
            b"+PONG\r\n",
            b"$2\r\n42\r\n",
            b"-ERR nope\r\n",
        ]);
        let url = format!("redis://:secret@127.0.0.1:{port}");
        let mut c = BlockingConn::open(&RespConfig::from_url(&url, 1000).unwrap()).unwrap();
        let call = |c: &mut BlockingConn, a: &[&str]| {
            c.call(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
        };
        assert_eq!(call(&mut c, &["PING"]).unwrap(), Value::Str("PONG".into()));
        assert_eq!(
            call(&mut c, &["HGET", "k", "f"]).unwrap(),
            Value::Str("42".into())
        );
        assert!(call(&mut c, &["X"]).is_err(), "a server error is a reply");
        assert_eq!(t.join().unwrap(), ["AUTH secret", "PING", "HGET k f", "X"]);
        let e = c.call(&["PING".to_string()]).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ),
            "{e}"
        );
    }

    #[test]
    fn a_silent_origin_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://127.0.0.1:{}", l.local_addr().unwrap().port());
        let mut c = BlockingConn::open(&RespConfig::from_url(&url, 50).unwrap()).unwrap();
        let t = Instant::now();
        assert!(c.call(&["PING".to_string()]).is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
