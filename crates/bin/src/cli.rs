//! The command line: one `Cli` for every subcommand, sharing the store configuration with `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use emporium_api::memory::MemoryBudget;

/// Emporium: an event-sourced order and inventory engine for e-commerce.
#[derive(Debug, Parser)]
#[command(name = "emporium", version, propagate_version = true)]
#[command(after_help = "Examples:
  emporium serve --demo                      start on ./emporium-data with a demo catalog
  emporium serve --database-url postgres://postgres@127.0.0.1/emporium
  emporium projections status
  emporium events export --format parquet --output events.parquet")]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Where the events live. Shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Data directory of the embedded store (event log, read models, keys).
    #[arg(
        long,
        global = true,
        env = "EMPORIUM_DATA_DIR",
        default_value = "./emporium-data"
    )]
    pub data_dir: PathBuf,

    /// Use the PostgreSQL event store at this URL instead of the embedded one.
    /// Read models stay in the data directory (each node is a read replica).
    #[arg(long, global = true, env = "EMPORIUM_DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (commands, queries, events, admin).
    #[command(after_help = "Examples:
  emporium serve
  emporium serve --listen 0.0.0.0:8080 --demo
  EMPORIUM_BOOTSTRAP_KEY=emp_... emporium serve")]
    Serve(ServeArgs),

    /// Inspect and rebuild the read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),

    /// Export or follow the event log.
    #[command(subcommand)]
    Events(EventsCommand),

    /// Show an aggregate's state as it was at a version or a time, as JSON.
    #[command(after_help = "Examples:
  emporium replay stock-SKU-1
  emporium replay stock-SKU-1 --as-of 2026-11-27T14:03:00Z
  emporium replay order-0193a1f2-0000-7000-8000-000000000000 --as-of-version 2")]
    Replay(ReplayArgs),

    /// Check the log (checksums, stream versions), the domain invariants and the projections.
    #[command(after_help = "Exits non-zero with a report on any finding.

Examples:
  emporium verify
  emporium verify --json")]
    Verify(VerifyArgs),

    /// Fill a store with generated data.
    #[command(subcommand)]
    Demo(DemoCommand),

    /// Apply the PostgreSQL schema migrations (event store and API tables).
    #[command(after_help = "Examples:
  emporium migrate --database-url postgres://postgres@127.0.0.1/emporium")]
    Migrate,

    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "EMPORIUM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// On an empty store, seed a demo catalog, stock and order history before serving.
    #[arg(long, env = "EMPORIUM_DEMO")]
    pub demo: bool,

    /// How many products the demo seeds.
    #[arg(long, env = "EMPORIUM_DEMO_PRODUCTS", default_value_t = 10_000)]
    pub demo_products: u64,

    /// Memory for the caches and buffers, divided among them by a fixed rule (warm states,
    /// read-model page caches, search writer, log cache, API store: see
    /// docs/adr/0004-memory-budget.md). The log's index (~46 bytes an event) comes on top.
    #[arg(long, env = "EMPORIUM_MEMORY_BUDGET", default_value_t = MemoryBudget::default())]
    pub memory_budget: MemoryBudget,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's position, lag, throughput and storage size, as stored: nothing is
    /// applied meanwhile (a server catches the projections up when it starts).
    #[command(after_help = "Examples:
  emporium projections status
  emporium projections status --json")]
    Status {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild projections from position 0 into a fresh store and swap it in.
    #[command(
        after_help = "The old store keeps serving until the new one is swapped in; interrupting
the rebuild leaves the old one in place.

Examples:
  emporium projections rebuild catalog
  emporium projections rebuild catalog stock orders
  emporium projections rebuild --all
  emporium projections rebuild search --server http://127.0.0.1:8080 --api-key emp_..."
    )]
    Rebuild(RebuildArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The projections to rebuild (see `projections status`); several are rebuilt together,
    /// from one read of the log.
    #[arg(required_unless_present = "all", conflicts_with = "all", num_args = 1..)]
    pub names: Vec<String>,

    /// Rebuild every projection.
    #[arg(long)]
    pub all: bool,

    /// Ask this running server to rebuild (admin endpoint) instead of a stopped data directory.
    #[arg(long, env = "EMPORIUM_SERVER")]
    pub server: Option<String>,

    /// API key with the `admin` scope, for `--server`.
    #[arg(long, env = "EMPORIUM_API_KEY", requires = "server")]
    pub api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Export decoded events with their envelopes.
    #[command(after_help = "Examples:
  emporium events export --format jsonl --output - | head
  emporium events export --format csv --stream stock- --output stock.csv
  emporium events export --format parquet --type OrderPlaced.v1 --since 2026-11-27T00:00:00Z --output orders.parquet")]
    Export(ExportArgs),

    /// Follow new events live, one JSON line each.
    #[command(after_help = "Examples:
  emporium events tail
  emporium events tail --stream order- --type OrderPlaced.v1
  emporium events tail --server http://127.0.0.1:8080 --api-key emp_... --after 0")]
    Tail(TailArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// First global position to export (inclusive).
    #[arg(long)]
    pub from: Option<u64>,
    /// Last global position to export (inclusive).
    #[arg(long)]
    pub to: Option<u64>,
    /// Only events recorded at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events recorded before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only streams starting with this prefix (e.g. `order-`).
    #[arg(long)]
    pub stream: Option<String>,
    /// Only these event types (repeatable), e.g. `OrderPlaced.v1`.
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Output file, or `-` for standard output.
    #[arg(long, default_value = "-")]
    pub output: String,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only streams starting with this prefix.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only these event types (repeatable).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Start after this position instead of at the head.
    #[arg(long)]
    pub after: Option<u64>,
    /// Follow this running server (its Server-Sent Events stream) instead of opening the store:
    /// the way to follow an embedded store that a server has open.
    #[arg(long, env = "EMPORIUM_SERVER")]
    pub server: Option<String>,
    /// API key with the `events` scope, for `--server`.
    #[arg(long, env = "EMPORIUM_API_KEY", requires = "server")]
    pub api_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The stream, e.g. `stock-SKU-1`, `product-SKU-1`, `order-<uuid>`.
    pub stream: String,
    /// The state after this stream version (inclusive).
    #[arg(long, conflicts_with = "as_of")]
    pub as_of_version: Option<u64>,
    /// The state as it was at this time (RFC 3339).
    #[arg(long)]
    pub as_of: Option<String>,
    /// Print on standard error how long opening the store and the replay itself took.
    #[arg(long)]
    pub timings: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Seed a deterministic catalog, stock and order history through the real command path.
    #[command(after_help = "Examples:
  emporium demo seed --products 10000 --orders 50000
  emporium demo seed --products 1000000 --orders 3000000 --warehouses 4 --seed 7")]
    Seed(SeedArgs),
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Products in the catalog.
    #[arg(long, default_value_t = 10_000)]
    pub products: u64,
    /// Orders placed over the history (some are refused when stock runs out).
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// Warehouses (1 to 64); each product is stocked in one to three.
    #[arg(long, default_value_t = 3)]
    pub warehouses: u32,
    /// Seed of the generator: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Commands in flight at once.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    #[command(after_help = "Examples:
  emporium keys create --name storefront --scopes commands,read
  emporium keys create --name ops --scopes admin,read,events --json")]
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: commands, read, events, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}
