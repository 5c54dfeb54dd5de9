//! `flashgate`: the operator's command line. It parses arguments and calls the library;
//! every error is printed as one sentence with a non-zero exit.

mod bridge;
mod views;

use clap::{Args, Parser, Subcommand};
use flashgate_core::model::{format_ms, now_ms, parse_rfc3339_ms, Caps, EventSpec, ItemSpec};
use flashgate_core::{net, ops, orders};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "flashgate",
    version,
    about = "Operate flashgate flash sales: events, tokens, the HTTP bridge, load."
)]
struct Cli {
    /// The origin, as redis://[user:password@]host:port.
    #[arg(
        long,
        global = true,
        env = "FLASHGATE_ORIGIN",
        default_value = "redis://127.0.0.1:6379"
    )]
    origin: String,
    /// Origin password (AUTH), if not in the URL.
    #[arg(
        long,
        global = true,
        env = "FLASHGATE_ORIGIN_PASSWORD",
        hide_env_values = true
    )]
    origin_password: Option<String>,
    /// PEM file of a CA to trust for a rediss:// origin, besides the public roots.
    #[arg(long, global = true, env = "FLASHGATE_ORIGIN_CA")]
    origin_ca: Option<std::path::PathBuf>,
    /// Bound on each origin command, in ms.
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, flip and inspect sale events.
    #[command(subcommand)]
    Event(EventCmd),
    /// Pay for and expire orders; write the order stream into the shop's database.
    #[command(subcommand)]
    Orders(OrdersCmd),
    /// Mint a development identity token.
    Token {
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// The worker's IDENTITY_SECRET.
        #[arg(long, env = "IDENTITY_SECRET", hide_env_values = true)]
        secret: String,
    },
    /// Serve Dragonfly's /api and Upstash's REST dialects in front of the RESP origin.
    Bridge {
        #[arg(long, default_value = "127.0.0.1:8079")]
        listen: String,
        /// Require this password from HTTP clients (Basic for /api, Bearer for /).
        #[arg(long, env = "FLASHGATE_BRIDGE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Connections to the origin.
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// Generate a flash crowd against a worker.
    Load(flashgate_sim::load::LoadArgs),
    /// Simulate a fleet of isolates (the worker's own core) meeting a crowd, against the
    /// origin; report what the origin saw.
    Simulate(flashgate_sim::simulate::SimulateArgs),
}

#[derive(Subcommand)]
enum EventCmd {
    /// Create an event from a JSON/TOML file or from flags, and preload its stock.
    Create(CreateArgs),
    /// Start the sale now.
    Start { id: String },
    /// Pause a live sale.
    Pause { id: String },
    /// Resume a paused sale.
    Resume { id: String },
    /// End the sale now.
    End { id: String },
    /// Change the purchase attempts per second the origin should see, live.
    Budget { id: String, attempts_per_sec: u32 },
    /// Stock, sold and remaining per item, and orders queued.
    Status {
        id: String,
        /// Print JSON (with --watch: one document per line, each second).
        #[arg(long)]
        json: bool,
        /// Live: redraw every second until Ctrl-C, with the fleet's figures per second,
        /// orders pending, paid and expired, and the order writer's lag.
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Subcommand)]
enum OrdersCmd {
    /// Mark a pending order paid (it then never expires).
    Pay {
        /// The order id (o_...).
        order_id: String,
        /// The event the order belongs to.
        #[arg(long)]
        event: String,
    },
    /// Expire every pending order of the event past its payment deadline, giving its
    /// units back to stock.
    Expire {
        #[arg(long)]
        event: String,
        /// At most this many orders.
        #[arg(long, default_value_t = 10_000)]
        max: usize,
    },
    /// Write events' order streams into SQLite or Postgres, exactly once (the order sink).
    Sink(flashgate_sink::cli::SinkArgs),
    /// Measure the sink against a plain batched INSERT (prints JSON).
    #[command(hide = true)]
    SinkBench(flashgate_sink::cli::SinkBenchArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// An event file (.json or .toml); flags below are ignored when given.
    #[arg(long)]
    file: Option<String>,
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// RFC 3339 start time.
    #[arg(long, conflicts_with = "starts_in")]
    starts_at: Option<String>,
    /// Start this many seconds from now.
    #[arg(long)]
    starts_in: Option<i64>,
    /// Length of the sale in seconds.
    #[arg(long, default_value_t = 86_400)]
    duration: i64,
    #[arg(long, default_value = "+00:00")]
    utc_offset: String,
    /// SKU:NAME:PRICE_MINOR:CURRENCY:STOCK (repeatable).
    #[arg(long = "item")]
    items: Vec<String>,
    #[arg(long, default_value_t = 1)]
    cap_item: u32,
    #[arg(long, default_value_t = 5)]
    cap_total: u32,
    #[arg(long, default_value_t = 1)]
    cap_qty: u32,
    /// Seconds a placed order may stay unpaid before it expires.
    #[arg(long, default_value_t = flashgate_core::model::DEFAULT_PAY_WITHIN_SECS)]
    pay_within: u32,
    /// Purchase attempts per second the origin should see at most.
    #[arg(long, default_value_t = flashgate_core::model::DEFAULT_ORIGIN_BUDGET)]
    origin_budget: u32,
    /// Recreate the event if it exists (clears its sales, buyers and orders).
    #[arg(long)]
    replace: bool,
}

fn spec_from_flags(a: &CreateArgs) -> Result<EventSpec, String> {
    let id = a.id.clone().ok_or("give --file, or --id with --item")?;
    let start = match (&a.starts_at, a.starts_in) {
        (Some(s), _) => parse_rfc3339_ms(s)
            .ok_or_else(|| format!("--starts-at {s:?} is not an RFC 3339 time"))?,
        (None, Some(secs)) => now_ms() + secs * 1000,
        (None, None) => now_ms() + 60_000,
    };
    let items = a
        .items
        .iter()
        .map(|s| {
            let p: Vec<&str> = s.split(':').collect();
            let [sku, name, price, currency, stock] = p.as_slice() else {
                return Err(format!(
                    "--item {s:?} must be SKU:NAME:PRICE_MINOR:CURRENCY:STOCK"
                ));
            };
            Ok(ItemSpec {
                sku: sku.to_string(),
                name: name.to_string(),
                price: price
                    .parse()
                    .map_err(|_| format!("--item {s:?}: price must be whole minor units"))?,
                currency: currency.to_string(),
                stock: stock
                    .parse()
                    .map_err(|_| format!("--item {s:?}: stock must be a whole number"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(EventSpec {
        name: a.name.clone().unwrap_or_else(|| id.clone()),
        id,
        utc_offset: a.utc_offset.clone(),
        starts_at: format_ms(start),
        ends_at: format_ms(start + a.duration * 1000),
        caps: Caps {
            per_item_per_day: a.cap_item,
            total: a.cap_total,
            per_order_qty: a.cap_qty,
        },
        items,
        pay_within: a.pay_within,
        origin_budget: a.origin_budget,
    })
}

fn main() -> ExitCode {
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
    let origin = || net::connect(&cli.origin, cli.origin_password.clone(), cli.timeout_ms);
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
            flashgate_sink::cli::main(a, &cli.origin, pw, cli.timeout_ms).await?
        }
        Command::Orders(OrdersCmd::SinkBench(a)) => {
            let pw = cli.origin_password.clone();
            flashgate_sink::cli::bench_main(a, &cli.origin, pw, cli.timeout_ms).await?
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
