//! Search index benchmark: indexing throughput and query latency percentiles on N generated
//! products (`EMPORIUM_BENCH_PRODUCTS`, default 100000; 1000000 for the target figure).
//!
//! `cargo bench -p emporium-projections --bench search` prints products/s and p50/p95/p99 per
//! query of a fixed set, then runs criterion on three of them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use emporium_projections::search::{
    ProductDoc, SearchIndex, SearchIndexConfig, SearchRequest, SortOrder,
};

/// A deterministic generator (splitmix64): the same N gives the same catalog.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Top level, then `(middle level, leaves)`.
type Tree = &'static [(
    &'static str,
    &'static [(&'static str, &'static [&'static str])],
)];

const TREE: Tree = &[
    (
        "Electronics",
        &[
            (
                "Audio",
                &[
                    "Headphones",
                    "Earphones",
                    "Speakers",
                    "Soundbars",
                    "Turntables",
                ],
            ),
            (
                "Computers",
                &[
                    "Laptops",
                    "Keyboards",
                    "Mice",
                    "Monitors",
                    "Docking Stations",
                ],
            ),
            (
                "Phones",
                &["Smartphones", "Cases", "Chargers", "Screen Protectors"],
            ),
            (
                "Cameras",
                &["Mirrorless Cameras", "Action Cameras", "Lenses", "Tripods"],
            ),
            ("Gaming", &["Consoles", "Controllers", "Gaming Headsets"]),
        ],
    ),
    (
        "Home & Kitchen",
        &[
            (
                "Coffee",
                &["Espresso Machines", "Grinders", "Kettles", "Pour Over"],
            ),
            (
                "Appliances",
                &["Blenders", "Toasters", "Air Fryers", "Vacuum Cleaners"],
            ),
            (
                "Cookware",
                &["Skillets", "Dutch Ovens", "Saucepans", "Knives"],
            ),
            ("Furniture", &["Desks", "Chairs", "Bookshelves"]),
        ],
    ),
    (
        "Sports & Outdoors",
        &[
            ("Running", &["Running Shoes", "Running Jackets", "Watches"]),
            (
                "Camping",
                &["Tents", "Sleeping Bags", "Backpacks", "Stoves"],
            ),
            ("Cycling", &["Helmets", "Bike Lights", "Bike Computers"]),
            ("Fitness", &["Dumbbells", "Yoga Mats", "Resistance Bands"]),
        ],
    ),
    (
        "Toys & Games",
        &[
            (
                "Board Games",
                &["Strategy Games", "Family Games", "Party Games"],
            ),
            ("Building Sets", &["Bricks", "Model Kits"]),
        ],
    ),
    (
        "Books",
        &[
            ("Fiction", &["Science Fiction", "Mystery", "Fantasy"]),
            ("Nonfiction", &["Cooking", "History", "Travel Guides"]),
        ],
    ),
];

const BRANDS: &[&str] = &[
    "Sony",
    "Bose",
    "Sennheiser",
    "JBL",
    "Apple",
    "Samsung",
    "Google",
    "Logitech",
    "Razer",
    "Keychron",
    "Anker",
    "Lenovo",
    "Dell",
    "ASUS",
    "Canon",
    "Nikon",
    "GoPro",
    "Fujifilm",
    "Breville",
    "DeLonghi",
    "Gaggia",
    "Baratza",
    "Hario",
    "Vitamix",
    "Ninja",
    "Lodge",
    "Nike",
    "Adidas",
    "Brooks",
    "Salomon",
    "Garmin",
    "MSR",
    "Coleman",
    "Osprey",
    "Giro",
    "Lego",
    "Hasbro",
    "Penguin",
    "Philips",
    "Dyson",
    "Bosch",
    "Makita",
    "Yeti",
    "Stanley",
    "Patagonia",
];
const ADJECTIVES: &[&str] = &[
    "Wireless",
    "Portable",
    "Compact",
    "Professional",
    "Ultralight",
    "Rugged",
    "Smart",
    "Premium",
    "Classic",
    "Waterproof",
    "Ergonomic",
    "Mechanical",
    "Bluetooth",
    "Noise Cancelling",
    "Stainless",
    "Cordless",
    "Foldable",
    "Adjustable",
    "Heavy Duty",
    "Lightweight",
    "Digital",
    "Vintage",
    "Modern",
    "Outdoor",
    "Travel",
    "Studio",
    "Gaming",
    "Kids",
    "Eco",
    "Electric",
];
const COLORS: &[&str] = &[
    "Black",
    "White",
    "Silver",
    "Graphite",
    "Midnight Blue",
    "Red",
    "Sage Green",
    "Rose Gold",
];
const PHRASES: &[&str] = &[
    "built for everyday use",
    "with a long battery life",
    "designed for comfort",
    "with premium materials",
    "easy to clean",
    "dishwasher safe",
    "backed by a two year warranty",
    "with fast charging over USB-C",
    "perfect for travel",
    "for beginners and professionals",
    "with adaptive noise cancellation",
    "with a durable aluminium body",
    "water resistant",
    "with multipoint pairing",
    "energy efficient",
    "award winning design",
    "quiet operation",
    "with a detachable cable",
    "includes a carrying case",
    "for small spaces",
];

fn vocabulary(rng: &mut Rng) -> Vec<String> {
    // Pseudo-words: a realistic term dictionary size for descriptions.
    let syllables = [
        "ka", "lo", "mi", "ne", "ra", "tu", "vo", "shi", "gen", "tor", "bel", "cran", "dor", "fel",
        "gal", "hin", "jor", "kel", "lum", "mar", "nor", "pel", "quin", "ros", "sal", "tem", "ur",
        "vel", "wen", "yor",
    ];
    (0..20_000)
        .map(|_| {
            let n = 2 + rng.below(3);
            (0..n)
                .map(|_| syllables[rng.below(syllables.len())])
                .collect()
        })
        .collect()
}

fn generate(n: usize) -> Vec<ProductDoc> {
    let mut rng = Rng(0x5eed);
    let words = vocabulary(&mut rng);
    let leaves: Vec<String> = TREE
        .iter()
        .flat_map(|(top, mids)| {
            mids.iter().flat_map(move |(mid, leaves)| {
                leaves.iter().map(move |leaf| format!("{top}/{mid}/{leaf}"))
            })
        })
        .collect();
    (0..n)
        .map(|i| {
            let category = &leaves[rng.below(leaves.len())];
            let leaf = category.rsplit('/').next().unwrap_or_default();
            let brand = rng.pick(BRANDS);
            let adjective = rng.pick(ADJECTIVES);
            let adjective2 = rng.pick(ADJECTIVES);
            let model = format!(
                "{}{}-{}",
                (b'A' + rng.below(26) as u8) as char,
                (b'A' + rng.below(26) as u8) as char,
                rng.below(9000) + 100
            );
            let name = format!(
                "{brand} {adjective} {adjective2} {leaf} {model}, {}",
                rng.pick(COLORS)
            );
            let mut description = format!(
                "{brand} {} {}, {}.",
                adjective.to_lowercase(),
                leaf.to_lowercase(),
                rng.pick(PHRASES)
            );
            for _ in 0..3 {
                description.push(' ');
                description.push_str(&words[rng.below(words.len())]);
            }
            description.push_str(&format!(". {}.", rng.pick(PHRASES)));
            let tags = vec![
                adjective.to_lowercase(),
                adjective2.to_lowercase(),
                words[rng.below(words.len())].clone(),
            ];
            let price_minor = match rng.below(10) {
                0..=3 => 500 + rng.below(5_000),
                4..=7 => 5_000 + rng.below(45_000),
                _ => 50_000 + rng.below(200_000),
            } as i64;
            ProductDoc {
                sku: format!("SKU-{i:07}"),
                name,
                description,
                category: category.clone(),
                tags,
                price_minor,
                currency: "USD".into(),
                available: if rng.below(5) == 0 {
                    0
                } else {
                    rng.below(500) as i64 + 1
                },
                created_at_micros: 1_700_000_000_000_000 + i as i64 * 1_000_000,
                active: true,
            }
        })
        .collect()
}

fn queries() -> Vec<(&'static str, SearchRequest)> {
    let req = |q: &str| SearchRequest::query(q);
    vec![
        (
            "typo2+cat+price+facets",
            SearchRequest {
                category: Some("Electronics".into()),
                min_price: Some(5_000),
                max_price: Some(50_000),
                ..req("wireles headphnes")
            },
        ),
        ("prefix 'wireless head'", req("wireless head")),
        ("typo 'blutooth speakr'", req("blutooth speakr")),
        (
            "typo+cat 'cofee grindr'",
            SearchRequest {
                category: Some("Home & Kitchen/Coffee".into()),
                ..req("cofee grindr")
            },
        ),
        (
            "browse cat+stock price_asc",
            SearchRequest {
                category: Some("Sports & Outdoors/Camping".into()),
                in_stock_only: true,
                sort: SortOrder::PriceAsc,
                ..req("")
            },
        ),
        (
            "'running shoes' newest",
            SearchRequest {
                sort: SortOrder::Newest,
                ..req("running shoes")
            },
        ),
        ("one letter prefix 's'", req("s")),
        ("model number 'sony ab-1234'", req("sony ab-1234")),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let n: usize = std::env::var("EMPORIUM_BENCH_PRODUCTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let t = Instant::now();
    let products = generate(n);
    eprintln!("generated {n} products in {:.1?}", t.elapsed());

    let dir = tempfile::tempdir().expect("tempdir");
    let index = SearchIndex::open_with(dir.path(), SearchIndexConfig::default()).expect("open");
    let batch: usize = std::env::var("EMPORIUM_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let t = Instant::now();
    let mut committing = Duration::ZERO;
    for (i, chunk) in products.chunks(batch).enumerate() {
        index.upsert_all(chunk).expect("upsert");
        let c = Instant::now();
        index.commit(i as u64).expect("commit");
        committing += c.elapsed();
    }
    let elapsed = t.elapsed();
    println!(
        "indexed {n} products in {:.2?} ({:.0} products/s, commit every {batch}; {:.2?} in commits)",
        elapsed,
        n as f64 / elapsed.as_secs_f64(),
        committing
    );
    drop(products);

    // Latency of a price change becoming searchable: one update, one commit.
    let t = Instant::now();
    index
        .set_price("SKU-0000042", 123_456, "USD")
        .expect("set_price");
    index
        .set_available("SKU-0000043", 0)
        .expect("set_available");
    index.commit(u64::MAX - 1).expect("commit");
    println!("update + commit + reload: {:.2?}", t.elapsed());

    let runs = 300;
    // CPU per search (this process's user + system time over the runs): on a shared machine
    // the wall-clock percentiles move with the load, this much less.
    println!(
        "{:<32} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "query", "total", "p50", "p95", "p99", "CPU/search"
    );
    let mut everything = Vec::new();
    for (name, req) in queries() {
        for _ in 0..20 {
            black_box(index.search(&req).expect("search"));
        }
        let mut times = Vec::with_capacity(runs);
        let mut total = 0;
        let cpu = process_cpu();
        for _ in 0..runs {
            let t = Instant::now();
            let resp = index.search(black_box(&req)).expect("search");
            times.push(t.elapsed());
            total = resp.total;
        }
        let cpu = process_cpu().saturating_sub(cpu) / u32::try_from(runs).unwrap_or(u32::MAX);
        times.sort();
        everything.extend_from_slice(&times);
        println!(
            "{:<32} {:>8} {:>9.2?} {:>9.2?} {:>9.2?} {:>10.2?}",
            name,
            total,
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&times, 0.99),
            cpu
        );
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        black_box(index.suggest("wireless he", 8).expect("suggest"));
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{:<32} {:>8} {:>9.2?} {:>9.2?} {:>9.2?}",
        "suggest 'wireless he'",
        "",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 0.99)
    );
    everything.sort();
    println!(
        "{:<32} {:>8} {:>9.2?} {:>9.2?} {:>9.2?}",
        "all searches",
        "",
        percentile(&everything, 0.5),
        percentile(&everything, 0.95),
        percentile(&everything, 0.99)
    );

    concurrent(&index);

    let mut criterion = Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let set = queries();
    for (name, req) in set.iter().take(3) {
        criterion.bench_function(&format!("search {name}"), |b| {
            b.iter(|| index.search(black_box(req)).expect("search"))
        });
    }
    criterion.bench_function("suggest 'wireless he'", |b| {
        b.iter(|| index.suggest(black_box("wireless he"), 8).expect("suggest"))
    });
    criterion.final_summary();
}

/// This process's CPU time (user + system), from `/proc/self/stat` (Linux; zero elsewhere).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the state field; the
    // kernel's clock tick is 100 Hz on every Linux this runs on.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Whether searches run in parallel: the query set from 1, 2 and 4 threads at once for a few
/// seconds each, with searches/s, the cores the process used (CPU time / wall time) and CPU time
/// per search. A search path serialized somewhere (a lock, one thread) shows as cores used stuck
/// at 1 however many threads search; on a shared machine compare CPU per search, which load
/// does not change much.
fn concurrent(index: &SearchIndex) {
    let seconds: u64 = std::env::var("EMPORIUM_BENCH_CONCURRENT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let set = queries();
    println!(
        "{:<32} {:>10} {:>11} {:>14}",
        "concurrent searches", "searches/s", "cores used", "CPU per search"
    );
    for threads in [1usize, 2, 4] {
        let done = std::sync::atomic::AtomicU64::new(0);
        let cpu = process_cpu();
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (set, done) = (&set, &done);
                scope.spawn(move || {
                    let mut i = t;
                    while Instant::now() < until {
                        black_box(index.search(&set[i % set.len()].1).expect("search"));
                        i += 1;
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let wall = started.elapsed();
        let cpu = process_cpu().saturating_sub(cpu);
        let n = done.into_inner().max(1);
        println!(
            "{:<32} {:>10.0} {:>11.2} {:>14.2?}",
            format!("{threads} thread(s)"),
            n as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() / wall.as_secs_f64(),
            cpu / u32::try_from(n).unwrap_or(u32::MAX)
        );
    }
}
