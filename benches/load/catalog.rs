//! The generated catalog: product `i` is the same on every run and for every system (Emporium,
//! the PostgreSQL peers), so that they serve the same data and answer the same queries.

use crate::run::Rng;

pub struct Product {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: &'static str,
    pub price_minor: i64,
    pub tags: Vec<&'static str>,
}

pub const WAREHOUSES: [&str; 3] = ["wh-east", "wh-west", "wh-central"];

/// Leaf categories with the nouns their products are named after.
pub const CATEGORIES: [(&str, &[&str]); 24] = [
    (
        "Electronics/Audio/Headphones",
        &["Headphones", "Earbuds", "Headset"],
    ),
    (
        "Electronics/Audio/Speakers",
        &["Speaker", "Soundbar", "Subwoofer"],
    ),
    (
        "Electronics/Computers/Laptops",
        &["Laptop", "Notebook", "Ultrabook"],
    ),
    (
        "Electronics/Computers/Accessories",
        &["Keyboard", "Mouse", "Webcam", "Monitor"],
    ),
    ("Electronics/Phones/Smartphones", &["Smartphone", "Phone"]),
    (
        "Electronics/Phones/Accessories",
        &["Charger", "Cable", "Case", "Powerbank"],
    ),
    ("Electronics/Cameras/Digital", &["Camera", "Lens", "Tripod"]),
    (
        "Electronics/Wearables/Watches",
        &["Smartwatch", "Tracker", "Watch"],
    ),
    (
        "Home/Kitchen/Cookware",
        &["Skillet", "Saucepan", "Wok", "Dutch Oven"],
    ),
    (
        "Home/Kitchen/Appliances",
        &["Blender", "Toaster", "Kettle", "Mixer"],
    ),
    (
        "Home/Furniture/Living",
        &["Sofa", "Armchair", "Coffee Table", "Bookshelf"],
    ),
    ("Home/Furniture/Office", &["Desk", "Office Chair", "Lamp"]),
    ("Home/Bedding/Sheets", &["Sheet Set", "Duvet", "Pillow"]),
    ("Home/Garden/Tools", &["Shovel", "Pruner", "Hose", "Rake"]),
    (
        "Sports/Outdoor/Camping",
        &["Tent", "Sleeping Bag", "Backpack", "Lantern"],
    ),
    (
        "Sports/Outdoor/Cycling",
        &["Bicycle", "Helmet", "Bike Light"],
    ),
    (
        "Sports/Fitness/Equipment",
        &["Dumbbell", "Yoga Mat", "Kettlebell"],
    ),
    (
        "Sports/Team/Football",
        &["Football", "Goalkeeper Gloves", "Shin Guards"],
    ),
    (
        "Fashion/Shoes/Sneakers",
        &["Sneakers", "Running Shoes", "Trainers"],
    ),
    (
        "Fashion/Shoes/Boots",
        &["Boots", "Hiking Boots", "Chelsea Boots"],
    ),
    ("Fashion/Clothing/Jackets", &["Jacket", "Parka", "Raincoat"]),
    ("Fashion/Clothing/Shirts", &["Shirt", "T-Shirt", "Polo"]),
    ("Toys/Games/Board", &["Board Game", "Puzzle", "Card Game"]),
    ("Books/Fiction/Novels", &["Novel", "Anthology", "Paperback"]),
];

const BRANDS: [&str; 32] = [
    "Acme",
    "Northwind",
    "Sonora",
    "Vertex",
    "Lumina",
    "Kestrel",
    "Orion",
    "Pinnacle",
    "Halcyon",
    "Brightline",
    "Cobalt",
    "Evergreen",
    "Fjord",
    "Granite",
    "Harbor",
    "Ironwood",
    "Juniper",
    "Keystone",
    "Lakeside",
    "Meridian",
    "Nimbus",
    "Oakridge",
    "Polaris",
    "Quantum",
    "Redwood",
    "Summit",
    "Tidewater",
    "Umbra",
    "Valiant",
    "Willow",
    "Zephyr",
    "Aurora",
];

const ADJECTIVES: [&str; 32] = [
    "Wireless",
    "Portable",
    "Compact",
    "Premium",
    "Classic",
    "Ultralight",
    "Waterproof",
    "Smart",
    "Ergonomic",
    "Foldable",
    "Rechargeable",
    "Vintage",
    "Professional",
    "Deluxe",
    "Essential",
    "Heavy-Duty",
    "Noise-Cancelling",
    "Insulated",
    "Adjustable",
    "Modular",
    "Bluetooth",
    "Organic",
    "Stainless",
    "Leather",
    "Bamboo",
    "Carbon",
    "Cordless",
    "Digital",
    "Outdoor",
    "Travel",
    "Studio",
    "Everyday",
];

const FEATURES: [&str; 24] = [
    "a long-lasting battery",
    "fast charging",
    "a lifetime warranty",
    "recycled materials",
    "a carrying case",
    "a two-year warranty",
    "reinforced stitching",
    "a matte finish",
    "quick setup",
    "low power draw",
    "a silent motor",
    "a non-slip base",
    "easy cleaning",
    "a detachable strap",
    "precision controls",
    "a compact footprint",
    "bright colours",
    "memory foam padding",
    "a scratch-resistant coating",
    "dual connectivity",
    "a magnetic lid",
    "breathable mesh",
    "a reflective trim",
    "an extended range",
];

const MATERIALS: [&str; 12] = [
    "Aluminium",
    "Steel",
    "Cotton",
    "Wool",
    "Oak",
    "Walnut",
    "Nylon",
    "Polycarbonate",
    "Ceramic",
    "Glass",
    "Rubber",
    "Linen",
];

const COLORS: [&str; 12] = [
    "black",
    "white",
    "graphite",
    "silver",
    "navy",
    "forest green",
    "crimson",
    "sand",
    "slate",
    "teal",
    "ivory",
    "charcoal",
];

const TAGS: [&str; 16] = [
    "bestseller",
    "new",
    "eco",
    "gift",
    "sale",
    "premium",
    "budget",
    "limited",
    "bundle",
    "outdoor",
    "travel",
    "kids",
    "pro",
    "classic",
    "smart",
    "handmade",
];

pub fn sku(i: u64) -> String {
    format!("SKU-{i:07}")
}

/// Product `i` of the generated catalog.
pub fn product(i: u64) -> Product {
    let mut rng = Rng::new(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x00C0_FFEE);
    let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
    let (category, nouns) = CATEGORIES[pick(&mut rng, CATEGORIES.len())];
    let noun = nouns[pick(&mut rng, nouns.len())];
    let brand = BRANDS[pick(&mut rng, BRANDS.len())];
    let adjective = ADJECTIVES[pick(&mut rng, ADJECTIVES.len())];
    let adjective2 = ADJECTIVES[pick(&mut rng, ADJECTIVES.len())];
    let model = format!(
        "{}{}",
        ["X", "Pro ", "S", "Max ", "Air ", "Neo "][pick(&mut rng, 6)],
        100 + rng.below(900)
    );
    let name = format!("{brand} {adjective} {noun} {model}");
    let description = format!(
        "A {} {} {} with {} and {}. {} build, {} finish. Made by {brand}.",
        adjective2.to_lowercase(),
        COLORS[pick(&mut rng, COLORS.len())],
        noun.to_lowercase(),
        FEATURES[pick(&mut rng, FEATURES.len())],
        FEATURES[pick(&mut rng, FEATURES.len())],
        MATERIALS[pick(&mut rng, MATERIALS.len())],
        COLORS[pick(&mut rng, COLORS.len())],
    );
    // 4.99 to 999.99, ending in 99 cents.
    let price_minor = (4 + rng.below(996) as i64) * 100 + 99;
    let mut tags = vec![TAGS[pick(&mut rng, TAGS.len())]];
    let second = TAGS[pick(&mut rng, TAGS.len())];
    if second != tags[0] {
        tags.push(second);
    }
    Product {
        sku: sku(i),
        name,
        description,
        category,
        price_minor,
        tags,
    }
}

impl Product {
    /// The `POST /v1/products` body.
    pub fn create_body(&self) -> String {
        serde_json::json!({
            "sku": self.sku,
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "price": {"amount": self.price_minor, "currency": "USD"},
            "tags": self.tags,
            "attributes": {"brand": self.name.split(' ').next().unwrap_or_default()},
        })
        .to_string()
    }
}

/// The price of product `i` without building the rest of it.
pub fn price_minor(i: u64) -> i64 {
    product(i).price_minor
}

/// A fixed query set for search: typos, prefixes, filters and facets, as (label, query string
/// for `GET /v1/search`, the PostgreSQL peer's parameters).
pub struct SearchQuery {
    pub label: &'static str,
    /// The words as the user typed them.
    pub text: &'static str,
    pub category: Option<&'static str>,
    pub min_price_minor: Option<i64>,
    pub max_price_minor: Option<i64>,
    pub in_stock: bool,
}

impl SearchQuery {
    pub fn path(&self) -> String {
        let mut q = form_encode(&[("q", self.text)]);
        if let Some(c) = self.category {
            q.push('&');
            q.push_str(&form_encode(&[("category", c)]));
        }
        if let Some(p) = self.min_price_minor {
            q.push_str(&format!("&min_price={p}"));
        }
        if let Some(p) = self.max_price_minor {
            q.push_str(&format!("&max_price={p}"));
        }
        if self.in_stock {
            q.push_str("&in_stock=true");
        }
        format!("/v1/search?{q}&limit=20")
    }
}

/// `k=v&k=v`, values percent-encoded (also used by the freshness trials).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    out
}

pub const SEARCH_QUERIES: [SearchQuery; 16] = [
    q(
        "exact two words",
        "wireless headphones",
        None,
        None,
        None,
        false,
    ),
    q("exact one word", "tent", None, None, None, false),
    q("typo 1", "wireles headphones", None, None, None, false),
    q("typo 2 words", "wireles headphnes", None, None, None, false),
    q(
        "typo long word",
        "noise-canceling earbud",
        None,
        None,
        None,
        false,
    ),
    q("prefix", "wireless head", None, None, None, false),
    q("prefix short", "sneak", None, None, None, false),
    q("brand prefix", "northw", None, None, None, false),
    q(
        "typo + category + price",
        "portble speker",
        Some("Electronics"),
        Some(2_000),
        Some(30_000),
        false,
    ),
    q(
        "category + in stock",
        "waterproof jacket",
        Some("Fashion/Clothing"),
        None,
        None,
        true,
    ),
    q(
        "price range",
        "stainless skillet",
        None,
        Some(5_000),
        Some(20_000),
        false,
    ),
    q(
        "description words",
        "recycled materials",
        None,
        None,
        None,
        false,
    ),
    q(
        "filters + facets",
        "smart watch",
        Some("Electronics/Wearables"),
        Some(1_000),
        Some(50_000),
        true,
    ),
    q("typo brand", "meridain blender", None, None, None, false),
    q(
        "three words",
        "ergonomic office chair",
        Some("Home"),
        None,
        None,
        false,
    ),
    q(
        "color + noun",
        "graphite laptop",
        None,
        None,
        Some(80_000),
        false,
    ),
];

const fn q(
    label: &'static str,
    text: &'static str,
    category: Option<&'static str>,
    min_price_minor: Option<i64>,
    max_price_minor: Option<i64>,
    in_stock: bool,
) -> SearchQuery {
    SearchQuery {
        label,
        text,
        category,
        min_price_minor,
        max_price_minor,
        in_stock,
    }
}
