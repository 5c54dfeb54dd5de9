//! `flashgate`: the operator's command line. It parses arguments (`args`) and calls the
//! libraries: flashgate-core's operations, the order writer (flashgate-sink), the load
//! generator and fleet simulator (flashgate-sim); `views` renders what they read and `bridge`
//! serves the HTTP dialects. Every error is printed as one sentence with a non-zero exit.

mod args;
mod bridge;
mod views;

use args::{spec_from_flags, Cli, Command, EventCmd, OrdersCmd};
use clap::Parser;
use flashgate_core::model::{format_ms, now_ms};
use flashgate_core::{net, ops, orders};
use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its option number in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Freed memory is kept for reuse, not returned to the kernel, and is faulted in 4 KiB at a
    // time: the simulator allocates and frees hundreds of megabytes in a sale's first seconds.
    // SAFETY: sets a process-wide option; mimalloc reads options thread-safely.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's flag.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let cli = Cli::parse();
    // Every origin connection of this process (the order writer's and the simulator's too)
    // reads the CA from the environment; the flag sets it before any thread starts.
    if let Some(ca) = &cli.origin_ca {
        std::env::set_var(net::ORIGIN_CA_ENV, ca);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flashgate: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flashgate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let acks = (cli.replica_acks > 0).then_some(flashgate_core::origin::Acks {
        replicas: cli.replica_acks,
        timeout_ms: cli.replica_ack_ms,
    });
    let origin = || {
        net::connect_acked(
            &cli.origin,
            cli.origin_password.clone(),
            cli.timeout_ms,
            acks,
        )
    };
    match cli.cmd {
        Command::Event(EventCmd::Create(a)) => {
            let spec = match &a.file {
                Some(f) => views::read_spec(f)?,
                None => spec_from_flags(&a)?,
            };
            let ev = ops::create(&origin()?, &spec, a.replace).await?;
            let units: u64 = ev.stock.iter().map(|(_, n)| u64::from(*n)).sum();
            println!(
                "created event {} with {} items ({} units); starts {}",
                ev.meta.id,
                ev.stock.len(),
                units,
                format_ms(ev.meta.starts_at)
            );
        }
        Command::Event(EventCmd::Start { id }) => flip(&origin()?, &id, ops::Verb::Start).await?,
        Command::Event(EventCmd::Pause { id }) => flip(&origin()?, &id, ops::Verb::Pause).await?,
        Command::Event(EventCmd::Resume { id }) => flip(&origin()?, &id, ops::Verb::Resume).await?,
        Command::Event(EventCmd::End { id }) => flip(&origin()?, &id, ops::Verb::End).await?,
        Command::Event(EventCmd::Budget {
            id,
            attempts_per_sec,
        }) => {
            ops::set_budget(&origin()?, &id, attempts_per_sec).await?;
            println!("event {id}: the origin budget is now {attempts_per_sec} attempts/s; the edge follows within a second");
        }
        Command::Event(EventCmd::VerifyDraw { id, json }) => {
            let r = flashgate_core::draw::verify_draw(&origin()?, &id, now_ms()).await?;
            if json {
                println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            } else {
                println!(
                    "event {id}: seed {} matches commitment {}\n{} orders in turn, {} out of turn, {} without a window (not checked)",
                    r.seed, r.commitment, r.in_turn, r.out_of_turn.len(), r.unchecked
                );
                for c in &r.out_of_turn {
                    println!(
                        "  out of turn: order {} of {} (window {}, place {:.6}) placed at {} when the line was at most {:.6}",
                        c.order, c.user, c.window, c.place, format_ms(c.created_ms), c.threshold
                    );
                }
            }
            if !r.out_of_turn.is_empty() {
                return Err(format!(
                    "{} orders of event {id} were placed out of turn",
                    r.out_of_turn.len()
                ));
            }
        }
        Command::Event(EventCmd::Status {
            id,
            json,
            watch: true,
        }) => views::watch(&origin()?, &id, json).await?,
        Command::Event(EventCmd::Status { id, json, .. }) => {
            let s = ops::status(&origin()?, &id).await?;
            if json {
                println!("{}", views::status_json(&s, now_ms()));
            } else {
                print!("{}", views::status_table(&s, now_ms()));
            }
        }
        Command::Orders(OrdersCmd::Pay { order_id, event }) => {
            use flashgate_core::script::{SettleVerb, Settled};
            let o = origin()?;
            let r = orders::settle(&o, &event, &order_id, SettleVerb::Pay, now_ms());
            match r.await? {
                Settled::Done { .. } => println!("order {order_id} is paid"),
                Settled::AlreadyPaid => println!("order {order_id} was already paid"),
                Settled::AlreadyExpired => {
                    return Err(format!(
                        "order {order_id} expired before it was paid; its units went back on sale"
                    ))
                }
                Settled::AlreadyCancelled => {
                    return Err(format!(
                        "order {order_id} was cancelled before it was paid; its units went back on sale"
                    ))
                }
                Settled::NoSuchOrder | Settled::NotDue { .. } => {
                    return Err(format!("there is no order {order_id} in event {event}"))
                }
            }
        }
        Command::Orders(OrdersCmd::Cancel { order_id, event }) => {
            use flashgate_core::script::{SettleVerb, Settled};
            let o = origin()?;
            let r = orders::settle(&o, &event, &order_id, SettleVerb::Cancel, now_ms());
            match r.await? {
                Settled::Done { units } => {
                    println!("order {order_id} is cancelled; {units} units went back on sale")
                }
                Settled::AlreadyCancelled => println!("order {order_id} was already cancelled"),
                Settled::AlreadyExpired => println!(
                    "order {order_id} had already expired; its units were already back on sale"
                ),
                Settled::AlreadyPaid => {
                    return Err(format!(
                        "order {order_id} is paid and cannot be cancelled; refund it in the shop"
                    ))
                }
                Settled::NoSuchOrder | Settled::NotDue { .. } => {
                    return Err(format!("there is no order {order_id} in event {event}"))
                }
            }
        }
        Command::Orders(OrdersCmd::Expire { event, max }) => {
            let o = origin()?;
            let s = orders::expire_due(&o, &event, now_ms(), max).await?;
            println!(
                "expired {} orders of {event}; {} units went back on sale",
                s.expired, s.units
            );
        }
        Command::Orders(OrdersCmd::Sink(a)) => {
            let pw = cli.origin_password.clone();
            let o = flashgate_sink::cli::origin(acks, &cli.origin, pw, cli.timeout_ms)?;
            flashgate_sink::cli::main(a, o).await?
        }
        Command::Orders(OrdersCmd::SinkBench(a)) => {
            let pw = cli.origin_password.clone();
            flashgate_sink::cli::bench_main(a, acks, &cli.origin, pw, cli.timeout_ms).await?
        }
        Command::Token { user, ttl, secret } => {
            if !flashgate_core::model::valid_id(&user) {
                return Err("--user must match [A-Za-z0-9_-]{1,64}".into());
            }
            if secret.len() < flashgate_core::token::MIN_SECRET_LEN {
                return Err(format!(
                    "the secret must be at least {} bytes",
                    flashgate_core::token::MIN_SECRET_LEN
                ));
            }
            println!(
                "{}",
                flashgate_core::token::mint(secret.as_bytes(), &user, now_ms() / 1000 + ttl)
            );
        }
        Command::Bridge {
            listen,
            password,
            connections,
        } => {
            let conns = (0..connections.max(1))
                .map(|_| origin())
                .collect::<Result<Vec<_>, _>>()?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            eprintln!("flashgate bridge: http://{} → {} (POST /api: Dragonfly dialect, POST /: Upstash dialect)", listener.local_addr().map(|a| a.to_string()).unwrap_or(listen), cli.origin);
            bridge::serve(listener, bridge::Pool::new(conns), password)
                .await
                .map_err(|e| format!("bridge stopped: {e}"))?;
        }
        Command::Load(args) => {
            flashgate_sim::load::main(args, &cli.origin, cli.origin_password.clone()).await?
        }
        Command::Simulate(args) => {
            flashgate_sim::simulate::main(args, &cli.origin, cli.origin_password.clone()).await?
        }
    }
    Ok(())
}

async fn flip(o: &net::NativeOrigin, id: &str, verb: ops::Verb) -> Result<(), String> {
    let to = ops::set_state(o, id, verb).await?;
    println!("event {id} is now {}", to.as_str());
    Ok(())
}
