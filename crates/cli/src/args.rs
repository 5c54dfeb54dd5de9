//! The `flashgate` command line as clap parses it, and an event spec from its flags.

use clap::{Args, Parser, Subcommand};
use flashgate_core::model::{format_ms, now_ms, parse_rfc3339_ms, Caps, EventSpec, ItemSpec};

#[derive(Parser)]
#[command(
    name = "flashgate",
    version,
    about = "Operate flashgate flash sales: events, tokens, the HTTP bridge, load."
)]
pub(crate) struct Cli {
    /// The origin, as redis://[user:password@]host:port.
    #[arg(
        long,
        global = true,
        env = "FLASHGATE_ORIGIN",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub(crate) origin: String,
    /// Origin password (AUTH), if not in the URL.
    #[arg(
        long,
        global = true,
        env = "FLASHGATE_ORIGIN_PASSWORD",
        hide_env_values = true
    )]
    pub(crate) origin_password: Option<String>,
    /// PEM file of a CA to trust for a rediss:// origin, besides the public roots.
    #[arg(long, global = true, env = "FLASHGATE_ORIGIN_CA")]
    pub(crate) origin_ca: Option<std::path::PathBuf>,
    /// Bound on each origin command, in ms.
    #[arg(long, global = true, default_value_t = 5000)]
    pub(crate) timeout_ms: u64,
    /// Replicas that must acknowledge each order change (payment, expiry) before it counts
    /// (WAIT after the script), and that must hold the entries the order writer reads before
    /// it writes them; 0: do not wait. As the worker's ORIGIN_REPLICA_ACKS.
    #[arg(
        long,
        global = true,
        env = "FLASHGATE_REPLICA_ACKS",
        default_value_t = 0
    )]
    pub(crate) replica_acks: u32,
    /// How long to wait for them, in ms.
    #[arg(long, global = true, env = "FLASHGATE_REPLICA_ACK_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=5000))]
    pub(crate) replica_ack_ms: u64,
    #[command(subcommand)]
    pub(crate) cmd: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum EventCmd {
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
pub(crate) enum OrdersCmd {
    /// Mark a pending order paid (it then never expires).
    Pay {
        /// The order id (o_...).
        order_id: String,
        /// The event the order belongs to.
        #[arg(long)]
        event: String,
    },
    /// Cancel a pending order (the payment failed, or the shopper changed their mind): its
    /// units go back on sale and the shopper's caps come back at once.
    Cancel {
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
pub(crate) struct CreateArgs {
    /// An event file (.json or .toml); flags below are ignored when given.
    #[arg(long)]
    pub(crate) file: Option<String>,
    #[arg(long)]
    pub(crate) id: Option<String>,
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// RFC 3339 start time.
    #[arg(long, conflicts_with = "starts_in")]
    pub(crate) starts_at: Option<String>,
    /// Start this many seconds from now.
    #[arg(long)]
    pub(crate) starts_in: Option<i64>,
    /// Length of the sale in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub(crate) duration: i64,
    #[arg(long, default_value = "+00:00")]
    pub(crate) utc_offset: String,
    /// SKU:NAME:PRICE_MINOR:CURRENCY:STOCK (repeatable).
    #[arg(long = "item")]
    pub(crate) items: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub(crate) cap_item: u32,
    #[arg(long, default_value_t = 5)]
    pub(crate) cap_total: u32,
    #[arg(long, default_value_t = 1)]
    pub(crate) cap_qty: u32,
    /// Seconds a placed order may stay unpaid before it expires.
    #[arg(long, default_value_t = flashgate_core::model::DEFAULT_PAY_WITHIN_SECS)]
    pub(crate) pay_within: u32,
    /// Purchase attempts per second the origin should see at most.
    #[arg(long, default_value_t = flashgate_core::model::DEFAULT_ORIGIN_BUDGET)]
    pub(crate) origin_budget: u32,
    /// Recreate the event if it exists (clears its sales, buyers and orders).
    #[arg(long)]
    pub(crate) replace: bool,
}

pub(crate) fn spec_from_flags(a: &CreateArgs) -> Result<EventSpec, String> {
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
