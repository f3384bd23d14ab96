//! A realistic, deterministic demo shop, written through the real command path
//! ([`CommandService`]): a catalog in a three-level category hierarchy with brand-like names,
//! descriptions, tags, attributes and USD prices; stock across warehouses; and four months of
//! order history (payments authorized, captured and failed, shipments, cancellations, refunds,
//! expired reservations), ending on Black Friday 2025.
//!
//! Used by `emporium demo seed`, `emporium serve --demo` and the benchmarks:
//!
//! ```ignore
//! let summary = emporium_api::demo::seed(store, &DemoConfig { products: 10_000, orders: 20_000,
//!     ..DemoConfig::default() }, &|p| eprintln!("{} {}/{}", p.phase, p.done, p.total)).await?;
//! ```
//!
//! Determinism: every product, stock receipt and order is a pure function of `(seed, index)`
//! (a SplitMix64 stream per entity), and time comes from a manual clock that moves in waves
//! (every command of a wave is decided at the wave's time), so the same seed gives the same
//! catalog, stock and orders. What can differ between runs is only the interleaving of
//! concurrent commands within a wave (two orders racing for the last units of a SKU), and the
//! event ids. Every command carries a command id derived from the seed, so seeding the same
//! store again with the same seed writes nothing twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use emporium_domain::ChangePrice;
use emporium_domain::{
    CancelOrder, Command, CreateProduct, DiscontinueProduct, DomainError, ExpireOrder, LineInput,
    MoneyInput, OrderId, PaymentOutcome, PlaceOrder, ReceiveStock, RecordPayment, RefundOrder,
    ShipOrder, Timestamp,
};
use emporium_eventstore::EventStore;
use futures::StreamExt;

use crate::commands::{
    CommandConfig, CommandContext, CommandError, CommandOutcome, CommandService, ManualClock,
};

/// What to generate.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub products: u64,
    pub orders: u64,
    /// Warehouses (1 to 64); each product is stocked in one to three of them.
    pub warehouses: u32,
    pub seed: u64,
    /// Commands in flight at once.
    pub concurrency: usize,
    /// True when nothing else writes to the store meanwhile (the embedded store); false on a
    /// shared store, where appends expect the last events they were decided on (see
    /// `commands`, "Several writers").
    pub only_writer: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            products: 10_000,
            orders: 20_000,
            warehouses: 3,
            seed: 42,
            concurrency: 512,
            only_writer: true,
        }
    }
}

/// Progress of a phase (`catalog`, `stock`, `orders`).
#[derive(Clone, Copy, Debug)]
pub struct DemoProgress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// What was written.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DemoSummary {
    pub products: u64,
    pub stock_receipts: u64,
    pub orders_placed: u64,
    /// Orders the domain refused (out of stock, a discontinued product): part of the realism.
    pub orders_rejected: u64,
    pub commands: u64,
    /// Commands that had been applied by an earlier run with the same seed.
    pub duplicates: u64,
    /// The log's head afterwards.
    pub head: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid demo configuration: {0}")]
    Config(String),
    #[error("{command} failed: {error}")]
    Command {
        command: String,
        #[source]
        error: CommandError,
    },
    #[error(transparent)]
    Store(#[from] emporium_eventstore::StoreError),
}

/// When the history starts: 2025-08-01T00:00:00Z.
pub const HISTORY_START_MICROS: i64 = 1_754_006_400_000_000;
/// The history's length: 120 days, to Black Friday (2025-11-28).
pub const HISTORY_DAYS: i64 = 120;
/// Order waves (time steps of the history).
const WAVES: u64 = 240;
/// How long an order's stock stays reserved unless it is paid.
const RESERVATION_TTL_MICROS: i64 = 30 * 60 * 1_000_000;

const HOUR_MICROS: i64 = 3600 * 1_000_000;

// ---------------------------------------------------------------------------------------------
// Randomness: SplitMix64, one stream per entity, so that entity `i` does not depend on others.

struct Rng(u64);

impl Rng {
    fn for_entity(seed: u64, kind: u64, index: u64) -> Self {
        let mut rng = Rng(seed ^ kind.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        rng.0 ^= index.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

const KIND_PRODUCT: u64 = 1;
const KIND_STOCK: u64 = 2;
const KIND_ORDER: u64 = 3;

// ---------------------------------------------------------------------------------------------
// The catalog

/// (top category, SKU prefix, base price in cents, adjectives, [(sub category, [(leaf, noun)])])
type Leaf = (&'static str, &'static str);
type Sub = (&'static str, &'static [Leaf]);
type Top = (
    &'static str,
    &'static str,
    i64,
    &'static [&'static str],
    &'static [Sub],
);

const CATALOG: &[Top] = &[
    (
        "Electronics",
        "ELE",
        8900,
        &[
            "Wireless",
            "Compact",
            "Smart",
            "Pro",
            "Ultra",
            "Portable",
            "Noise-Cancelling",
        ],
        &[
            (
                "Audio",
                &[
                    ("Headphones", "Headphones"),
                    ("Speakers", "Speaker"),
                    ("Earbuds", "Earbuds"),
                ],
            ),
            (
                "Computers",
                &[
                    ("Laptops", "Laptop"),
                    ("Monitors", "Monitor"),
                    ("Keyboards", "Keyboard"),
                    ("Mice", "Mouse"),
                ],
            ),
            (
                "Cameras",
                &[
                    ("Action Cameras", "Action Camera"),
                    ("Lenses", "Lens"),
                    ("Tripods", "Tripod"),
                ],
            ),
            (
                "Phones",
                &[
                    ("Smartphones", "Smartphone"),
                    ("Chargers", "Charger"),
                    ("Cases", "Phone Case"),
                ],
            ),
        ],
    ),
    (
        "Home & Kitchen",
        "HOM",
        3900,
        &[
            "Stainless",
            "Ceramic",
            "Nonstick",
            "Classic",
            "Modern",
            "Cast-Iron",
            "Bamboo",
        ],
        &[
            (
                "Cookware",
                &[
                    ("Pans", "Frying Pan"),
                    ("Pots", "Stock Pot"),
                    ("Knives", "Chef Knife"),
                ],
            ),
            (
                "Appliances",
                &[
                    ("Coffee Makers", "Coffee Maker"),
                    ("Blenders", "Blender"),
                    ("Kettles", "Kettle"),
                ],
            ),
            (
                "Furniture",
                &[("Chairs", "Chair"), ("Desks", "Desk"), ("Shelves", "Shelf")],
            ),
            (
                "Bedding",
                &[
                    ("Pillows", "Pillow"),
                    ("Duvets", "Duvet"),
                    ("Sheets", "Sheet Set"),
                ],
            ),
        ],
    ),
    (
        "Sports & Outdoors",
        "SPO",
        5900,
        &[
            "Lightweight",
            "Waterproof",
            "Trail",
            "Insulated",
            "Foldable",
            "All-Season",
        ],
        &[
            (
                "Camping",
                &[
                    ("Tents", "Tent"),
                    ("Sleeping Bags", "Sleeping Bag"),
                    ("Lanterns", "Lantern"),
                ],
            ),
            (
                "Fitness",
                &[
                    ("Yoga Mats", "Yoga Mat"),
                    ("Dumbbells", "Dumbbell Set"),
                    ("Resistance Bands", "Resistance Band"),
                ],
            ),
            (
                "Cycling",
                &[
                    ("Helmets", "Helmet"),
                    ("Bike Lights", "Bike Light"),
                    ("Locks", "Bike Lock"),
                ],
            ),
        ],
    ),
    (
        "Fashion",
        "FAS",
        4500,
        &[
            "Slim-Fit", "Organic", "Vintage", "Everyday", "Merino", "Linen", "Relaxed",
        ],
        &[
            (
                "Men",
                &[
                    ("Shirts", "Shirt"),
                    ("Jackets", "Jacket"),
                    ("Sneakers", "Sneaker"),
                ],
            ),
            (
                "Women",
                &[
                    ("Dresses", "Dress"),
                    ("Boots", "Boot"),
                    ("Scarves", "Scarf"),
                ],
            ),
            (
                "Accessories",
                &[
                    ("Watches", "Watch"),
                    ("Backpacks", "Backpack"),
                    ("Sunglasses", "Sunglasses"),
                ],
            ),
        ],
    ),
    (
        "Books",
        "BOO",
        1800,
        &[
            "Illustrated",
            "Collected",
            "Annotated",
            "Pocket",
            "Hardcover",
            "Complete",
        ],
        &[
            (
                "Fiction",
                &[
                    ("Mystery", "Mystery Novel"),
                    ("Science Fiction", "Space Opera"),
                    ("Fantasy", "Fantasy Saga"),
                ],
            ),
            (
                "Non-Fiction",
                &[
                    ("History", "History"),
                    ("Cooking", "Cookbook"),
                    ("Travel", "Travel Guide"),
                ],
            ),
        ],
    ),
    (
        "Toys & Games",
        "TOY",
        2900,
        &[
            "Classic",
            "Deluxe",
            "Wooden",
            "Family",
            "Junior",
            "Collector's",
        ],
        &[
            (
                "Board Games",
                &[
                    ("Strategy", "Strategy Game"),
                    ("Party", "Party Game"),
                    ("Puzzles", "Jigsaw Puzzle"),
                ],
            ),
            (
                "Building",
                &[("Blocks", "Block Set"), ("Models", "Model Kit")],
            ),
        ],
    ),
    (
        "Beauty",
        "BEA",
        2400,
        &[
            "Hydrating",
            "Gentle",
            "Fragrance-Free",
            "Revitalizing",
            "Natural",
            "Daily",
        ],
        &[
            (
                "Skincare",
                &[
                    ("Moisturizers", "Moisturizer"),
                    ("Serums", "Serum"),
                    ("Cleansers", "Cleanser"),
                ],
            ),
            ("Hair", &[("Shampoo", "Shampoo"), ("Dryers", "Hair Dryer")]),
        ],
    ),
    (
        "Garden",
        "GAR",
        3400,
        &[
            "Heavy-Duty",
            "Ergonomic",
            "Solar",
            "Weatherproof",
            "Cordless",
            "Raised",
        ],
        &[
            (
                "Tools",
                &[
                    ("Pruners", "Pruner"),
                    ("Shovels", "Shovel"),
                    ("Hoses", "Garden Hose"),
                ],
            ),
            (
                "Outdoor Living",
                &[
                    ("Grills", "Grill"),
                    ("Planters", "Planter"),
                    ("Lights", "String Lights"),
                ],
            ),
        ],
    ),
];

const BRAND_HEADS: &[&str] = &[
    "Nor", "Vel", "Aur", "Kest", "Lum", "Bram", "Cor", "Zen", "Ost", "Pell", "Tav", "Quill", "Sol",
    "Mar", "Hal", "Fen", "Riv", "Ash", "Bel", "Dax",
];
const BRAND_TAILS: &[&str] = &[
    "ora", "ex", "ia", "tek", "wood", "line", "ford", "io", "ant", "vale", "son", "is", "ark",
    "wick", "eon",
];
const COLORS: &[&str] = &[
    "black",
    "white",
    "graphite",
    "navy",
    "olive",
    "sand",
    "red",
    "sky blue",
    "forest green",
];
const MATERIALS: &[&str] = &[
    "aluminium",
    "recycled plastic",
    "cotton",
    "steel",
    "oak",
    "wool",
    "glass",
    "silicone",
];
const CLAIMS: &[&str] = &[
    "Built to last, with a two-year warranty.",
    "Designed in Copenhagen and tested by thousands of customers.",
    "Ships in plastic-free packaging.",
    "A customer favourite for gifts.",
    "Easy to clean and simple to use.",
    "Made with responsibly sourced materials.",
];
const WAREHOUSES: &[&str] = &[
    "newark", "dallas", "reno", "chicago", "atlanta", "seattle", "denver", "phoenix",
];
const CANCEL_REASONS: &[&str] = &[
    "customer changed their mind",
    "ordered the wrong size",
    "found a better price",
    "duplicate order",
];
const REFUND_REASONS: &[&str] = &["damaged in transit", "not as described", "arrived late"];

struct Leaves {
    /// (top index, category path, noun)
    leaves: Vec<(usize, String, &'static str)>,
}

impl Leaves {
    fn new() -> Self {
        let mut leaves = Vec::new();
        for (t, (top, _, _, _, subs)) in CATALOG.iter().enumerate() {
            for (sub, items) in subs.iter() {
                for (leaf, noun) in items.iter() {
                    leaves.push((t, format!("{top}/{sub}/{leaf}"), *noun));
                }
            }
        }
        Leaves { leaves }
    }
}

fn brand(rng: &mut Rng) -> String {
    format!("{}{}", rng.pick(BRAND_HEADS), rng.pick(BRAND_TAILS))
}

fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Product `index` of the catalog: a CreateProduct and its price in cents.
fn product(leaves: &[(usize, String, &'static str)], seed: u64, index: u64) -> CreateProduct {
    let mut rng = Rng::for_entity(seed, KIND_PRODUCT, index);
    let (top, category, noun) = rng.pick(leaves);
    let (top_name, prefix, base_cents, adjectives, _) = CATALOG[*top];
    let brand = brand(&mut rng);
    let adjective = *rng.pick(adjectives);
    let model = format!(
        "{}{}",
        ["", "X", "S", "Max ", "Mini ", "Air "][rng.below(6) as usize],
        100 + rng.below(900)
    );
    let name = format!("{brand} {adjective} {noun} {model}");
    let color = *rng.pick(COLORS);
    let material = *rng.pick(MATERIALS);
    let description = format!(
        "The {brand} {noun} {model} is a {} {} in {color}, made of {material}. {} {}",
        adjective.to_lowercase(),
        noun.to_lowercase(),
        rng.pick(CLAIMS),
        rng.pick(CLAIMS)
    );
    // Log-normal-ish: a few cheap, a few expensive; ends in .99 like a shop's.
    let factor = (rng.unit() * 2.5 - 1.0).exp();
    let price = ((base_cents as f64 * factor) as i64 / 100).max(1) * 100 - 1;
    let mut tags = vec![slug(noun), slug(adjective), slug(top_name), slug(&brand)];
    if rng.chance(0.3) {
        tags.push("bestseller".to_owned());
    }
    if rng.chance(0.2) {
        tags.push("new".to_owned());
    }
    tags.sort();
    tags.dedup();
    let mut attributes = BTreeMap::new();
    attributes.insert("brand".to_owned(), brand.clone());
    attributes.insert("color".to_owned(), color.to_owned());
    attributes.insert("material".to_owned(), material.to_owned());
    CreateProduct {
        sku: format!("{prefix}-{index:07}"),
        name,
        description,
        category: category.clone(),
        price: MoneyInput::new(price, "USD"),
        tags,
        attributes,
    }
}

/// The stock receipts of product `index`: one to three warehouses.
fn receipts(seed: u64, index: u64, sku: &str, warehouses: u32) -> Vec<ReceiveStock> {
    let mut rng = Rng::for_entity(seed, KIND_STOCK, index);
    let count = (1 + rng.below(3)).min(u64::from(warehouses));
    let first = rng.below(u64::from(warehouses));
    (0..count)
        .map(|k| ReceiveStock {
            sku: sku.to_owned(),
            warehouse: warehouse_id((first + k) % u64::from(warehouses)),
            quantity: 20 + rng.below(200) + if rng.chance(0.1) { 2000 } else { 0 },
            reference: None,
        })
        .collect()
}

fn warehouse_id(n: u64) -> String {
    match WAREHOUSES.get(n as usize) {
        Some(name) => (*name).to_owned(),
        None => format!("wh-{n}"),
    }
}

/// What happens to an order after it is placed.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Captured at once, shipped; sometimes refunded in part.
    Paid { authorize_first: bool, refund: bool },
    /// A payment fails, the retry captures, then shipped.
    FailedThenPaid,
    /// Paid, then cancelled before shipping and refunded in full.
    PaidThenCancelled,
    /// Cancelled before payment.
    Cancelled,
    /// Never paid: the reservation expires.
    Expired,
}

struct OrderPlan {
    index: u64,
    order_id: OrderId,
    customer: String,
    lines: Vec<LineInput>,
    wave: u64,
    fate: Fate,
}

fn order_plan(leaves_len: usize, config: &DemoConfig, index: u64) -> OrderPlan {
    let mut rng = Rng::for_entity(config.seed, KIND_ORDER, index);
    // More orders towards the end (the run-up to Black Friday).
    let wave = ((rng.unit().sqrt()) * WAVES as f64) as u64;
    let wave = wave.min(WAVES - 1);
    let at_ms = (wave_time(wave).as_micros() / 1000) as u64 + rng.below(3_600_000);
    let mut random = [0u8; 10];
    for chunk in random.chunks_mut(8) {
        let bytes = rng.next().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let order_id =
        OrderId::from_uuid(uuid::Builder::from_unix_timestamp_millis(at_ms, &random).into_uuid());
    let customers = (config.orders / 3).max(1);
    let customer = format!("cust-{:06}", rng.below(customers));
    let line_count = match rng.below(10) {
        0..6 => 1,
        6..9 => 2,
        _ => 3,
    };
    let mut lines: Vec<LineInput> = Vec::new();
    while lines.len() < line_count {
        // Popular products first: a cubic skew over the catalog.
        let product = ((rng.unit().powi(3)) * config.products as f64) as u64;
        let product = product.min(config.products - 1);
        let sku = sku_of(config.seed, product, leaves_len);
        if lines.iter().any(|l| l.sku == sku) {
            continue;
        }
        lines.push(LineInput {
            sku,
            quantity: 1 + rng.below(3),
        });
    }
    let fate = match rng.below(100) {
        0..62 => Fate::Paid {
            authorize_first: rng.chance(0.5),
            refund: rng.chance(0.06),
        },
        62..70 => Fate::FailedThenPaid,
        70..74 => Fate::PaidThenCancelled,
        74..87 => Fate::Cancelled,
        _ => Fate::Expired,
    };
    OrderPlan {
        index,
        order_id,
        customer,
        lines,
        wave,
        fate,
    }
}

/// The SKU of product `index` without building the product.
fn sku_of(seed: u64, index: u64, leaves_len: usize) -> String {
    let mut rng = Rng::for_entity(seed, KIND_PRODUCT, index);
    let leaf = rng.below(leaves_len as u64) as usize;
    let top = LEAF_TOPS.with(|tops| tops[leaf]);
    format!("{}-{index:07}", CATALOG[top].1)
}

thread_local! {
    static LEAF_TOPS: Vec<usize> = Leaves::new().leaves.iter().map(|(t, _, _)| *t).collect();
}

/// The time of wave `wave`: the history's start plus a day for the catalog, then equal steps.
fn wave_time(wave: u64) -> Timestamp {
    // Follow-ups run up to 10 waves after the last one: they stay inside the history too.
    let step = (HISTORY_DAYS - 2) * 24 * HOUR_MICROS / (WAVES as i64 + 10);
    Timestamp::from_micros(HISTORY_START_MICROS + 24 * HOUR_MICROS + wave as i64 * step)
}

// ---------------------------------------------------------------------------------------------
// Driving the command service

/// One command to run, with its command id.
struct Job {
    id: String,
    command: Command,
    /// For orders: which plan this is (to schedule what follows).
    order: Option<usize>,
}

struct Runner {
    service: CommandService,
    concurrency: usize,
    seed: u64,
    commands: AtomicU64,
    duplicates: AtomicU64,
}

impl Runner {
    /// Runs `jobs` concurrently; returns each job's outcome (domain rejections included).
    async fn run(
        &self,
        jobs: Vec<Job>,
        mut on_done: impl FnMut(&Job, &Result<CommandOutcome, CommandError>),
    ) -> Result<(), DemoError> {
        let service = &self.service;
        let seed = self.seed;
        let mut results = futures::stream::iter(jobs)
            .map(|job| async move {
                let ctx = CommandContext {
                    command_id: Some(format!("demo-{seed}-{}", job.id)),
                    ..CommandContext::default()
                };
                let result = service.execute(job.command.clone(), ctx).await;
                (job, result)
            })
            .buffer_unordered(self.concurrency.max(1));
        while let Some((job, result)) = results.next().await {
            self.commands.fetch_add(1, Ordering::Relaxed);
            match &result {
                Ok(outcome) if outcome.duplicate => {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) | Err(CommandError::Domain(_)) => {}
                Err(error) => {
                    return Err(DemoError::Command {
                        command: job.command.name().to_owned(),
                        error: clone_error(error),
                    });
                }
            }
            on_done(&job, &result);
        }
        Ok(())
    }
}

fn clone_error(error: &CommandError) -> CommandError {
    CommandError::Internal(error.to_string())
}

/// Seeds `store` with the demo shop (see the module docs). `progress` is called after each
/// chunk of work.
pub async fn seed(
    store: Arc<dyn EventStore>,
    config: &DemoConfig,
    progress: &(dyn Fn(DemoProgress) + Send + Sync),
) -> Result<DemoSummary, DemoError> {
    if config.products == 0 {
        return Err(DemoError::Config("--products must be at least 1".into()));
    }
    if !(1..=64).contains(&config.warehouses) {
        return Err(DemoError::Config("--warehouses must be 1 to 64".into()));
    }
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        HISTORY_START_MICROS,
    )));
    let service = CommandService::with_clock(
        Arc::clone(&store),
        CommandConfig {
            early_lock_release: true,
            shared_store: !config.only_writer,
            // The demo touches each stream a few times: no need to keep them warm for long.
            cache_catalog_bytes: 64 << 20,
            ..CommandConfig::default()
        },
        clock.clone(),
    );
    let runner = Runner {
        service,
        concurrency: config.concurrency,
        seed: config.seed,
        commands: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
    };
    let leaves = Leaves::new().leaves;
    let mut summary = DemoSummary::default();
    const CHUNK: u64 = 20_000;

    // The catalog, then its stock, in chunks (bounded memory).
    for (phase, at) in [("catalog", 0), ("stock", HOUR_MICROS)] {
        clock.set(Timestamp::from_micros(HISTORY_START_MICROS + at));
        let mut done = 0;
        while done < config.products {
            let end = (done + CHUNK).min(config.products);
            let mut jobs = Vec::new();
            for index in done..end {
                let product = product(&leaves, config.seed, index);
                if phase == "catalog" {
                    jobs.push(Job {
                        id: format!("product-{index}"),
                        command: product.into(),
                        order: None,
                    });
                } else {
                    for (k, receipt) in
                        receipts(config.seed, index, &product.sku, config.warehouses)
                            .into_iter()
                            .enumerate()
                    {
                        jobs.push(Job {
                            id: format!("receive-{index}-{k}"),
                            command: receipt.into(),
                            order: None,
                        });
                    }
                }
            }
            let count = jobs.len() as u64;
            runner.run(jobs, |_, _| {}).await?;
            if phase == "catalog" {
                summary.products += end - done;
            } else {
                summary.stock_receipts += count;
            }
            done = end;
            progress(DemoProgress {
                phase,
                done,
                total: config.products,
            });
        }
    }

    // The order history, wave by wave. Follow-ups are scheduled in later waves.
    let mut plans: Vec<OrderPlan> = (0..config.orders)
        .map(|i| order_plan(leaves.len(), config, i))
        .collect();
    plans.sort_by_key(|p| (p.wave, p.index));
    let mut by_wave: BTreeMap<u64, Vec<Job>> = BTreeMap::new();
    for (i, plan) in plans.iter().enumerate() {
        by_wave.entry(plan.wave).or_default().push(Job {
            id: format!("order-{}-place", plan.index),
            command: PlaceOrder {
                order_id: plan.order_id,
                customer_id: plan.customer.clone(),
                lines: plan.lines.clone(),
                expires_at: wave_time(plan.wave)
                    .checked_add_micros(RESERVATION_TTL_MICROS)
                    .unwrap_or(wave_time(plan.wave)),
            }
            .into(),
            order: Some(i),
        });
    }
    // Catalog changes spread over the history: price changes and a few discontinuations.
    for index in 0..config.products {
        let mut rng = Rng::for_entity(config.seed, KIND_PRODUCT + 100, index);
        let sku = sku_of(config.seed, index, leaves.len());
        if rng.chance(0.05) {
            let price = product(&leaves, config.seed, index).price.amount_minor;
            let changed = ((price + 1) * (80 + rng.below(40) as i64) / 100).max(100) - 1;
            by_wave.entry(rng.below(WAVES)).or_default().push(Job {
                id: format!("price-{index}"),
                command: ChangePrice {
                    sku: sku.clone(),
                    price: MoneyInput::new(changed, "USD"),
                }
                .into(),
                order: None,
            });
        }
        // The long tail of the catalog only (the popular products keep selling).
        if index > config.products / 2 && rng.chance(0.01) {
            by_wave.entry(rng.below(WAVES)).or_default().push(Job {
                id: format!("discontinue-{index}"),
                command: DiscontinueProduct { sku }.into(),
                order: None,
            });
        }
    }
    let totals: parking_lot::Mutex<HashMap<usize, i64>> = parking_lot::Mutex::new(HashMap::new());
    let mut wave = 0;
    let mut orders_done = 0u64;
    while let Some((&next, _)) = by_wave.first_key_value() {
        wave = wave.max(next);
        let jobs = by_wave.remove(&next).unwrap_or_default();
        clock.set(wave_time(wave));
        let mut follow_ups: Vec<(u64, Job)> = Vec::new();
        let mut restock: Vec<String> = Vec::new();
        runner
            .run(jobs, |job, result| {
                let Some(i) = job.order else { return };
                let plan = &plans[i];
                let placed = matches!(job.command, Command::PlaceOrder(_));
                match result {
                    Ok(outcome) if placed => {
                        let total = outcome
                            .after
                            .orders
                            .get(&plan.order_id)
                            .map(|o| o.total.amount_minor);
                        if let Some(total) = total {
                            totals.lock().insert(i, total);
                        }
                        summary.orders_placed += 1;
                        orders_done += 1;
                        follow_ups.extend(after_placing(plan, i, wave, total.unwrap_or(0)));
                    }
                    Err(CommandError::Domain(error)) if placed => {
                        summary.orders_rejected += 1;
                        orders_done += 1;
                        if let DomainError::InsufficientStock { lines } = error {
                            restock.extend(lines.iter().map(|l| l.sku.as_str().to_owned()));
                        }
                    }
                    Ok(_) => {
                        let total = totals.lock().get(&i).copied().unwrap_or(0);
                        follow_ups.extend(after_step(plan, i, wave, &job.id, total));
                    }
                    Err(_) => {}
                }
            })
            .await?;
        restock.sort();
        restock.dedup();
        for sku in restock {
            by_wave.entry(wave + 1).or_default().push(Job {
                id: format!("restock-{sku}-{wave}"),
                command: ReceiveStock {
                    sku,
                    warehouse: warehouse_id(0),
                    quantity: 500,
                    reference: None,
                }
                .into(),
                order: None,
            });
        }
        for (at, job) in follow_ups {
            by_wave.entry(at).or_default().push(job);
        }
        progress(DemoProgress {
            phase: "orders",
            done: orders_done,
            total: config.orders,
        });
    }
    summary.commands = runner.commands.load(Ordering::Relaxed);
    summary.duplicates = runner.duplicates.load(Ordering::Relaxed);
    runner.service.snapshots_idle().await;
    summary.head = store.head().await?;
    Ok(summary)
}

fn money(total: i64) -> MoneyInput {
    MoneyInput::new(total, "USD")
}

fn job(plan: &OrderPlan, i: usize, step: &str, command: Command) -> Job {
    Job {
        id: format!("order-{}-{step}", plan.index),
        command,
        order: Some(i),
    }
}

fn payment(plan: &OrderPlan, attempt: u32, outcome: PaymentOutcome) -> Command {
    RecordPayment {
        order_id: plan.order_id,
        payment_ref: format!("pay_{}_{attempt}", plan.index),
        outcome,
    }
    .into()
}

/// What follows a successful placement.
fn after_placing(plan: &OrderPlan, i: usize, wave: u64, total: i64) -> Vec<(u64, Job)> {
    let next = wave + 1;
    let order_id = plan.order_id;
    let captured = PaymentOutcome::Captured {
        amount: money(total),
    };
    vec![match plan.fate {
        Fate::Paid {
            authorize_first: true,
            ..
        } => (
            next,
            job(
                plan,
                i,
                "authorize",
                payment(
                    plan,
                    1,
                    PaymentOutcome::Authorized {
                        amount: money(total),
                    },
                ),
            ),
        ),
        Fate::Paid { .. } | Fate::PaidThenCancelled => {
            (next, job(plan, i, "capture", payment(plan, 1, captured)))
        }
        Fate::FailedThenPaid => (
            next,
            job(
                plan,
                i,
                "fail",
                payment(
                    plan,
                    1,
                    PaymentOutcome::Failed {
                        reason: "card declined".to_owned(),
                    },
                ),
            ),
        ),
        Fate::Cancelled => (
            next,
            job(
                plan,
                i,
                "cancel",
                CancelOrder {
                    order_id,
                    reason: CANCEL_REASONS[plan.index as usize % CANCEL_REASONS.len()].to_owned(),
                }
                .into(),
            ),
        ),
        Fate::Expired => (
            next,
            job(plan, i, "expire", ExpireOrder { order_id }.into()),
        ),
    }]
}

/// The carriers demo shipments go with.
const CARRIERS: [&str; 4] = ["DHL", "UPS", "FedEx", "USPS"];

/// What follows a successful step after placement (`step` is the job id's last part).
fn after_step(plan: &OrderPlan, i: usize, wave: u64, id: &str, total: i64) -> Vec<(u64, Job)> {
    let step = id.rsplit('-').next().unwrap_or("");
    let order_id = plan.order_id;
    let ship = |at| {
        let carrier = CARRIERS[plan.index as usize % CARRIERS.len()];
        let command = ShipOrder {
            order_id,
            carrier: carrier.to_owned(),
            tracking: format!("{}{:012}", &carrier[..2].to_uppercase(), plan.index),
        };
        (at, job(plan, i, "ship", command.into()))
    };
    match (step, plan.fate) {
        ("authorize", _) => vec![(
            wave + 1,
            job(
                plan,
                i,
                "capture",
                payment(
                    plan,
                    2,
                    PaymentOutcome::Captured {
                        amount: money(total),
                    },
                ),
            ),
        )],
        ("fail", _) => vec![(
            wave + 1,
            job(
                plan,
                i,
                "capture",
                payment(
                    plan,
                    2,
                    PaymentOutcome::Captured {
                        amount: money(total),
                    },
                ),
            ),
        )],
        ("capture", Fate::PaidThenCancelled) => vec![(
            wave + 1,
            job(
                plan,
                i,
                "cancelpaid",
                CancelOrder {
                    order_id,
                    reason: "out of stock at the last minute".to_owned(),
                }
                .into(),
            ),
        )],
        ("capture", _) => vec![ship(wave + 2)],
        ("cancelpaid", _) => vec![(
            wave + 1,
            job(
                plan,
                i,
                "refundall",
                RefundOrder {
                    order_id,
                    amount: money(total),
                    reason: "order cancelled".to_owned(),
                }
                .into(),
            ),
        )],
        ("ship", Fate::Paid { refund: true, .. }) if total > 1 => vec![(
            wave + 4,
            job(
                plan,
                i,
                "refund",
                RefundOrder {
                    order_id,
                    amount: money(total / 2),
                    reason: REFUND_REASONS[plan.index as usize % REFUND_REASONS.len()].to_owned(),
                }
                .into(),
            ),
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_a_function_of_seed_and_index() {
        let leaves = Leaves::new().leaves;
        let a = product(&leaves, 7, 12);
        assert_eq!(a, product(&leaves, 7, 12));
        assert_ne!(a, product(&leaves, 8, 12));
        assert_eq!(a.sku, sku_of(7, 12, leaves.len()));
        assert_eq!(a.category.split('/').count(), 3);
        assert!(a.price.amount_minor > 0 && a.price.amount_minor % 100 == 99);
    }

    #[test]
    fn waves_stay_inside_the_history() {
        let end = HISTORY_START_MICROS + HISTORY_DAYS * 24 * HOUR_MICROS;
        assert!(wave_time(WAVES + 10).as_micros() < end);
    }
}
