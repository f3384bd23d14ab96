//! Relevance, filters, facets, sorts, cursors and suggestions of the product search index, on the
//! committed catalog fixture (`tests/fixtures/catalog.json`, made by `gen_catalog.py`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use emporium_projections::search::{
    ProductDoc, SearchError, SearchIndex, SearchRequest, SearchResponse, SortOrder,
};

fn catalog() -> Vec<ProductDoc> {
    serde_json::from_str(include_str!("../fixtures/catalog.json")).unwrap()
}

fn catalog_index() -> SearchIndex {
    let index = SearchIndex::open_in_ram().unwrap();
    index.upsert_all(&catalog()).unwrap();
    index.commit(1).unwrap();
    index
}

fn active_count() -> u64 {
    catalog().iter().filter(|p| p.active).count() as u64
}

fn search(index: &SearchIndex, req: SearchRequest) -> SearchResponse {
    index.search(&req).unwrap()
}

fn q(text: &str) -> SearchRequest {
    SearchRequest::query(text)
}

/// A page as text a reviewer can read: matched words in [brackets].
fn render(resp: &SearchResponse) -> String {
    let mut out = String::new();
    writeln!(out, "total: {}", resp.total).unwrap();
    for (i, hit) in resp.hits.iter().enumerate() {
        let score = hit
            .score
            .map(|s| format!("  score {s:.2}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{:>2}. {}  {}  {}.{:02} {}  avail {}{}",
            i + 1,
            hit.sku,
            hit.highlights.name.marked("[", "]"),
            hit.price_minor / 100,
            hit.price_minor % 100,
            hit.currency,
            hit.available,
            score
        )
        .unwrap();
        let desc = hit.highlights.description.marked("[", "]");
        if desc.contains('[') {
            writeln!(out, "      {desc}").unwrap();
        }
    }
    writeln!(out, "next_cursor: {}", resp.next_cursor.is_some()).unwrap();
    out
}

fn render_facets(resp: &SearchResponse) -> String {
    let mut out = String::new();
    writeln!(out, "total: {}", resp.total).unwrap();
    writeln!(out, "categories:").unwrap();
    for c in &resp.facets.categories {
        writeln!(out, "  {} = {}", c.path, c.count).unwrap();
    }
    writeln!(out, "prices:").unwrap();
    for b in &resp.facets.price_buckets {
        let max = b.max.map_or("inf".to_string(), |m| (m / 100).to_string());
        writeln!(out, "  {}..{} = {}", b.min / 100, max, b.count).unwrap();
    }
    writeln!(
        out,
        "stock: in {} / out {}",
        resp.facets.stock.in_stock, resp.facets.stock.out_of_stock
    )
    .unwrap();
    out
}

fn skus(resp: &SearchResponse) -> Vec<&str> {
    resp.hits.iter().map(|h| h.sku.as_str()).collect()
}

// ------------------------------------------------------------------------------------------------
// Relevance

#[test]
fn typos_find_wireless_headphones_first() {
    let index = catalog_index();
    let resp = search(&index, q("wireles headphnes"));
    assert!(resp.hits[0].name.contains("Wireless"), "{}", render(&resp));
    assert!(
        resp.hits[0].name.contains("Headphones"),
        "{}",
        render(&resp)
    );
    insta::assert_snapshot!(render(&resp));
}

#[test]
fn exact_matches_rank_above_one_typo_above_two_typos() {
    let index = catalog_index();
    // Trailing space: "earphones" is a finished word (no prefix matching), 9 letters: 2 typos.
    let resp = search(
        &index,
        SearchRequest {
            limit: 100,
            ..q("earphones ")
        },
    );
    let all = catalog();
    // The fewest typos between "earphones" and any word of the product.
    let tier = |sku: &str| {
        let p = all.iter().find(|p| p.sku == sku).unwrap();
        let text = format!(
            "{} {} {} {}",
            p.name,
            p.description,
            p.category,
            p.tags.join(" ")
        )
        .to_lowercase();
        let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).collect();
        if words.contains(&"earphones") {
            0
        } else if words.contains(&"earphone") {
            1
        } else {
            assert!(words.contains(&"headphones"), "{sku}");
            2
        }
    };
    let tiers: Vec<u8> = resp.hits.iter().map(|h| tier(&h.sku)).collect();
    let mut sorted = tiers.clone();
    sorted.sort();
    assert_eq!(tiers, sorted, "{}", render(&resp));
    assert_eq!(BTreeSet::from_iter(tiers), BTreeSet::from([0, 1, 2]));
    insta::assert_snapshot!(render(&SearchResponse {
        hits: resp.hits.into_iter().step_by(4).collect(),
        ..resp
    }));
}

#[test]
fn the_last_word_matches_as_a_prefix() {
    let index = catalog_index();
    let resp = search(&index, q("wireless head"));
    assert!(!resp.hits.is_empty());
    let all = catalog();
    for hit in &resp.hits {
        let p = all.iter().find(|p| p.sku == hit.sku).unwrap();
        let text = format!("{} {} {}", p.name, p.description, p.tags.join(" ")).to_lowercase();
        assert!(text.contains("wireless") && text.contains("head"), "{text}");
    }
    assert!(resp.hits[0].name.contains("Wireless") && resp.hits[0].name.contains("Headphones"));
    insta::assert_snapshot!(render(&resp));
    // A finished word is not a prefix: nothing is called just "head".
    assert_eq!(search(&index, q("wireless head ")).total, 0);
}

#[test]
fn a_name_match_ranks_above_a_description_only_match() {
    let index = catalog_index();
    let all = catalog();
    let resp = search(
        &index,
        SearchRequest {
            limit: 100,
            ..q("case ")
        },
    );
    let words = |text: &str| -> Vec<String> {
        text.to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .map(String::from)
            .collect()
    };
    let where_: Vec<&str> = resp
        .hits
        .iter()
        .map(|h| {
            let doc = all.iter().find(|p| p.sku == h.sku).unwrap();
            if words(&doc.name).contains(&"case".to_string()) {
                "name"
            } else {
                assert!(words(&doc.description).contains(&"case".to_string()));
                "description"
            }
        })
        .collect();
    let first_description = where_.iter().position(|w| *w == "description").unwrap();
    assert!(first_description > 0);
    assert!(
        where_[first_description..]
            .iter()
            .all(|w| *w == "description"),
        "{where_:?}"
    );
    insta::assert_snapshot!(render(&SearchResponse {
        hits: resp.hits.into_iter().step_by(3).collect(),
        ..resp
    }));
}

#[test]
fn short_words_get_no_typos() {
    let index = catalog_index();
    // 4 letters: no typo allowed, so "tnet" is not "tent".
    assert_eq!(search(&index, q("tnet ")).total, 0);
    assert_eq!(search(&index, q("mose ")).total, 0);
    // 5 letters: one typo allowed.
    let resp = search(&index, q("tennt "));
    assert!(resp.total > 0);
    assert!(resp.hits.iter().all(|h| h.name.contains("Tent")));
    insta::assert_snapshot!(render(&resp));
}

#[test]
fn numbers_and_model_numbers_get_no_typos() {
    let index = catalog_index();
    let xm4 = search(&index, q("1000xm4 "));
    assert!(xm4.total > 0);
    assert!(
        xm4.hits.iter().all(|h| h.name.contains("1000XM4")),
        "{}",
        render(&xm4)
    );
    assert_eq!(search(&index, q("wh-1000xm6 ")).total, 0);
    assert_eq!(search(&index, q("pegasus 41 ")).total, 0);
    let resp = search(&index, q("pegasus 40 "));
    assert!(resp.total > 0);
    insta::assert_snapshot!(render(&xm4));
}

#[test]
fn a_sku_is_searchable() {
    let index = catalog_index();
    let sku = &catalog()[150].sku;
    let resp = search(&index, q(sku));
    assert_eq!(skus(&resp), vec![sku.as_str()]);
    let resp = search(&index, q(&sku.to_lowercase()));
    assert_eq!(skus(&resp), vec![sku.as_str()]);
}

#[test]
fn discontinued_products_are_not_found() {
    let index = catalog_index();
    assert_eq!(search(&index, q("MDR-7506")).total, 0);
    assert_eq!(search(&index, q("discontinued")).total, 0);
    assert!(index.get("HP-9999").unwrap().is_none());
}

#[test]
fn highlights_mark_corrected_and_completed_words() {
    let index = catalog_index();
    let resp = search(&index, q("noise canceling earb"));
    let hit = &resp.hits[0];
    let name = hit.highlights.name.marked("<", ">");
    assert!(name.contains("<Earbuds>"), "{name}");
    insta::assert_snapshot!(render(&resp));
}

// ------------------------------------------------------------------------------------------------
// Filters

#[test]
fn category_filter_matches_the_whole_subtree() {
    let index = catalog_index();
    let all = catalog();
    let electronics = all
        .iter()
        .filter(|p| p.active && p.category.starts_with("Electronics/"))
        .count() as u64;
    let resp = search(
        &index,
        SearchRequest {
            category: Some("Electronics".into()),
            ..q("")
        },
    );
    assert_eq!(resp.total, electronics);
    insta::assert_snapshot!("category_electronics_facets", render_facets(&resp));

    let resp = search(
        &index,
        SearchRequest {
            category: Some("Electronics/Audio".into()),
            ..q("wireless")
        },
    );
    assert!(
        resp.hits
            .iter()
            .all(|h| h.category.starts_with("Electronics/Audio/"))
    );
    insta::assert_snapshot!(
        "category_audio_wireless",
        render(&resp) + &render_facets(&resp)
    );
    // A path segment is matched whole: "Electro" is no category.
    let resp = search(
        &index,
        SearchRequest {
            category: Some("Electro".into()),
            ..q("")
        },
    );
    assert_eq!(resp.total, 0);
}

#[test]
fn price_range_and_stock_filters() {
    let index = catalog_index();
    let resp = search(
        &index,
        SearchRequest {
            min_price: Some(10_000),
            max_price: Some(20_000),
            in_stock_only: true,
            sort: SortOrder::PriceAsc,
            limit: 100,
            ..q("wireless")
        },
    );
    assert!(resp.total > 0);
    for hit in &resp.hits {
        assert!((10_000..=20_000).contains(&hit.price_minor), "{}", hit.sku);
        assert!(hit.available > 0);
    }
    assert_eq!(resp.facets.stock.out_of_stock, 0);
    insta::assert_snapshot!(render(&resp) + &render_facets(&resp));
    // Bounds are inclusive.
    let p = catalog()[0].price_minor;
    let resp = search(
        &index,
        SearchRequest {
            min_price: Some(p),
            max_price: Some(p),
            ..q("")
        },
    );
    assert!(resp.hits.iter().any(|h| h.sku == catalog()[0].sku));
    assert!(resp.hits.iter().all(|h| h.price_minor == p));
}

// ------------------------------------------------------------------------------------------------
// Facets

/// The facets a request should get, computed by brute force over the given products.
fn brute_force_facets(products: &[&ProductDoc], category: Option<&str>) -> String {
    let depth = category.map_or(0, |c| c.split('/').count());
    let mut cats: BTreeMap<String, u64> = BTreeMap::new();
    let edges = [
        0,
        1_000,
        2_500,
        5_000,
        10_000,
        25_000,
        50_000,
        100_000,
        i64::MAX,
    ];
    let mut buckets = [0u64; 8];
    let (mut in_stock, mut out) = (0, 0);
    for p in products {
        let segments: Vec<&str> = p.category.split('/').collect();
        if segments.len() > depth {
            *cats.entry(segments[..=depth].join("/")).or_default() += 1;
        }
        let b = edges
            .windows(2)
            .position(|w| w[0] <= p.price_minor && p.price_minor < w[1]);
        buckets[b.unwrap()] += 1;
        if p.available > 0 {
            in_stock += 1;
        } else {
            out += 1;
        }
    }
    let mut cats: Vec<(String, u64)> = cats.into_iter().collect();
    cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    format!("{cats:?} {buckets:?} {in_stock} {out}")
}

fn facets_of(resp: &SearchResponse) -> String {
    let cats: Vec<(String, u64)> = resp
        .facets
        .categories
        .iter()
        .map(|c| (c.path.clone(), c.count))
        .collect();
    let buckets: Vec<u64> = resp.facets.price_buckets.iter().map(|b| b.count).collect();
    format!(
        "{cats:?} {buckets:?} {} {}",
        resp.facets.stock.in_stock, resp.facets.stock.out_of_stock
    )
}

/// Every hit of a request, walking the cursor.
fn all_hits(index: &SearchIndex, req: &SearchRequest) -> Vec<String> {
    let mut out = Vec::new();
    let mut req = req.clone();
    loop {
        let resp = index.search(&req).unwrap();
        out.extend(resp.hits.iter().map(|h| h.sku.clone()));
        match resp.next_cursor {
            Some(c) => req.cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn facet_counts_equal_brute_force_counts() {
    let index = catalog_index();
    let all = catalog();
    let active: Vec<&ProductDoc> = all.iter().filter(|p| p.active).collect();
    // (category, min price, max price, in stock only)
    type Filters = (Option<&'static str>, Option<i64>, Option<i64>, bool);
    let filters: Vec<Filters> = vec![
        (None, None, None, false),
        (Some("Electronics"), None, None, false),
        (Some("Electronics/Audio"), Some(5_000), None, false),
        (Some("Home & Kitchen"), None, Some(40_000), true),
        (Some("Sports & Outdoors/Camping/Tents"), None, None, false),
        (None, Some(2_500), Some(25_000), true),
    ];
    for (category, min, max, in_stock_only) in filters {
        // Browsing (empty query): the expected set is the fixture filtered by hand.
        let req = SearchRequest {
            category: category.map(String::from),
            min_price: min,
            max_price: max,
            in_stock_only,
            limit: 50,
            ..q("")
        };
        let expected: Vec<&ProductDoc> = active
            .iter()
            .copied()
            .filter(|p| {
                category.is_none_or(|c| p.category == c || p.category.starts_with(&format!("{c}/")))
                    && min.is_none_or(|m| p.price_minor >= m)
                    && max.is_none_or(|m| p.price_minor <= m)
                    && (!in_stock_only || p.available > 0)
            })
            .collect();
        let resp = index.search(&req).unwrap();
        assert_eq!(resp.total, expected.len() as u64, "{req:?}");
        assert_eq!(
            facets_of(&resp),
            brute_force_facets(&expected, category),
            "{req:?}"
        );

        // With text: the expected set is every hit, fetched page by page.
        for text in ["wireless", "coffee", "blutooth speakr", "case"] {
            let req = SearchRequest {
                q: text.into(),
                ..req.clone()
            };
            let resp = index.search(&req).unwrap();
            let hit_skus: BTreeSet<String> = all_hits(&index, &req).into_iter().collect();
            let matched: Vec<&ProductDoc> = active
                .iter()
                .copied()
                .filter(|p| hit_skus.contains(&p.sku))
                .collect();
            assert_eq!(resp.total, matched.len() as u64);
            assert_eq!(
                facets_of(&resp),
                brute_force_facets(&matched, category),
                "{req:?}"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Sorts and cursors

#[test]
fn every_sort() {
    let index = catalog_index();
    let mut out = String::new();
    for sort in [
        SortOrder::Relevance,
        SortOrder::PriceAsc,
        SortOrder::PriceDesc,
        SortOrder::Newest,
    ] {
        let resp = search(
            &index,
            SearchRequest {
                sort,
                limit: 8,
                category: Some("Electronics/Computers".into()),
                ..q("wireless")
            },
        );
        writeln!(out, "== {}", sort.as_str()).unwrap();
        out.push_str(&render(&resp));
        let prices: Vec<i64> = resp.hits.iter().map(|h| h.price_minor).collect();
        match sort {
            SortOrder::PriceAsc => assert!(prices.is_sorted()),
            SortOrder::PriceDesc => assert!(prices.iter().rev().is_sorted()),
            SortOrder::Newest => {
                let all = catalog();
                let created: Vec<i64> = resp
                    .hits
                    .iter()
                    .map(|h| {
                        all.iter()
                            .find(|p| p.sku == h.sku)
                            .unwrap()
                            .created_at_micros
                    })
                    .collect();
                assert!(created.iter().rev().is_sorted());
            }
            SortOrder::Relevance => {
                let scores: Vec<f32> = resp.hits.iter().map(|h| h.score.unwrap()).collect();
                assert!(scores.iter().rev().is_sorted_by(|a, b| a <= b));
            }
        }
    }
    insta::assert_snapshot!(out);
}

#[test]
fn walking_the_cursor_returns_every_hit_once_in_order() {
    let index = catalog_index();
    for sort in [
        SortOrder::Relevance,
        SortOrder::PriceAsc,
        SortOrder::PriceDesc,
        SortOrder::Newest,
    ] {
        for text in ["", "wireless", "case", "headphnes", "b"] {
            let big = SearchRequest {
                sort,
                limit: 100,
                ..q(text)
            };
            let one_page = search(&index, big.clone());
            for page_size in [1, 7, 30] {
                let req = SearchRequest {
                    limit: page_size,
                    ..big.clone()
                };
                let walked = all_hits(&index, &req);
                if one_page.total <= 100 {
                    assert_eq!(walked, skus(&one_page), "{sort:?} {text:?} {page_size}");
                } else {
                    assert_eq!(walked[..100], skus(&one_page)[..], "{sort:?} {text:?}");
                }
                let unique: BTreeSet<&String> = walked.iter().collect();
                assert_eq!(unique.len(), walked.len());
                assert_eq!(walked.len() as u64, one_page.total);
            }
        }
    }
}

#[test]
fn a_cursor_only_fits_its_own_request() {
    let index = catalog_index();
    let req = SearchRequest {
        limit: 5,
        ..q("wireless")
    };
    let cursor = search(&index, req.clone()).next_cursor.unwrap();
    let with = |r: SearchRequest| {
        index.search(&SearchRequest {
            cursor: Some(cursor.clone()),
            ..r
        })
    };
    assert!(
        with(SearchRequest {
            limit: 9,
            ..req.clone()
        })
        .is_ok()
    );
    for other in [
        SearchRequest {
            sort: SortOrder::PriceAsc,
            ..req.clone()
        },
        SearchRequest {
            q: "wired".into(),
            ..req.clone()
        },
        SearchRequest {
            in_stock_only: true,
            ..req.clone()
        },
    ] {
        assert!(matches!(
            with(other),
            Err(SearchError::InvalidCursor { .. })
        ));
    }
}

// ------------------------------------------------------------------------------------------------
// Suggestions

#[test]
fn suggestions_are_ranked_by_result_count() {
    let index = catalog_index();
    let mut out = String::new();
    for prefix in [
        "wireless he",
        "esp",
        "blu",
        "cast ir",
        "noise canceling he",
        "b",
        "zzz",
    ] {
        let suggestions = index.suggest(prefix, 5).unwrap();
        let counts: Vec<u64> = suggestions.iter().map(|s| s.count).collect();
        assert!(counts.iter().rev().is_sorted(), "{prefix}");
        for s in &suggestions {
            // The count is what a search for the suggestion finds (all words, exact).
            let found = search(&index, q(&format!("{} ", s.text))).total;
            assert!(found >= s.count, "{prefix}: {s:?} vs {found}");
        }
        writeln!(out, "{prefix:?}").unwrap();
        for s in suggestions {
            writeln!(out, "  {} ({})", s.text, s.count).unwrap();
        }
    }
    insta::assert_snapshot!(out);
}

// ------------------------------------------------------------------------------------------------
// Input validation

#[test]
fn bad_input_gets_typed_errors() {
    let index = catalog_index();
    let cursor = search(
        &index,
        SearchRequest {
            limit: 1,
            ..q("case")
        },
    )
    .next_cursor
    .unwrap();
    let cases: Vec<(&str, SearchRequest)> = vec![
        ("limit 0", SearchRequest { limit: 0, ..q("a") }),
        (
            "limit 101",
            SearchRequest {
                limit: 101,
                ..q("a")
            },
        ),
        ("long query", q(&"x".repeat(201))),
        ("many words", q("a b c d e f g h i j k")),
        (
            "negative price",
            SearchRequest {
                min_price: Some(-1),
                ..q("")
            },
        ),
        (
            "min above max",
            SearchRequest {
                min_price: Some(500),
                max_price: Some(100),
                ..q("")
            },
        ),
        (
            "empty category",
            SearchRequest {
                category: Some(String::new()),
                ..q("")
            },
        ),
        (
            "empty segment",
            SearchRequest {
                category: Some("Electronics//Audio".into()),
                ..q("")
            },
        ),
        (
            "control char",
            SearchRequest {
                category: Some("Elec\u{7}".into()),
                ..q("")
            },
        ),
        (
            "garbage cursor",
            SearchRequest {
                cursor: Some("not-hex!".into()),
                ..q("case")
            },
        ),
        (
            "truncated cursor",
            SearchRequest {
                cursor: Some(cursor[..20].into()),
                ..q("case")
            },
        ),
        (
            "tampered cursor",
            SearchRequest {
                cursor: Some(format!("{}ff", &cursor[..cursor.len() - 2])),
                ..q("case")
            },
        ),
        (
            "cursor of another query",
            SearchRequest {
                cursor: Some(cursor.clone()),
                ..q("cases")
            },
        ),
    ];
    let mut out = String::new();
    for (name, req) in cases {
        let err = index.search(&req).unwrap_err();
        assert!(err.is_client_error());
        writeln!(out, "{name}: [{}] {err}", err.field().unwrap()).unwrap();
    }
    for (name, result) in [
        ("suggest limit 0", index.suggest("a", 0)),
        ("suggest limit 21", index.suggest("a", 21)),
        ("suggest long", index.suggest(&"y".repeat(300), 5)),
    ] {
        let err = result.unwrap_err();
        writeln!(out, "{name}: [{}] {err}", err.field().unwrap()).unwrap();
    }
    assert!(matches!(
        SortOrder::parse("price"),
        Err(SearchError::InvalidSort { .. })
    ));
    writeln!(out, "sort: {}", SortOrder::parse("name; drop").unwrap_err()).unwrap();
    let mut bad = catalog()[0].clone();
    for (name, change) in [
        (
            "bad sku",
            Box::new(|p: &mut ProductDoc| p.sku = "a b".into()) as Box<dyn Fn(&mut ProductDoc)>,
        ),
        (
            "empty name",
            Box::new(|p: &mut ProductDoc| p.name = " ".into()),
        ),
        (
            "negative price",
            Box::new(|p: &mut ProductDoc| p.price_minor = -5),
        ),
        (
            "bad currency",
            Box::new(|p: &mut ProductDoc| p.currency = "usd".into()),
        ),
        (
            "bad category",
            Box::new(|p: &mut ProductDoc| p.category = "A//B".into()),
        ),
        (
            "negative stock",
            Box::new(|p: &mut ProductDoc| p.available = -1),
        ),
    ] {
        let mut doc = bad.clone();
        change(&mut doc);
        let err = index.upsert(&doc).unwrap_err();
        writeln!(out, "{name}: [{}] {err}", err.field().unwrap()).unwrap();
    }
    bad.available = -3;
    assert!(index.set_available(&bad.sku, -3).is_err());
    // Nothing bad was written.
    index.commit(2).unwrap();
    assert_eq!(index.get(&bad.sku).unwrap().unwrap(), catalog()[0]);
    insta::assert_snapshot!(out);
}

// ------------------------------------------------------------------------------------------------
// Updates, commits, checkpoints

#[test]
fn stock_and_price_changes_are_visible_after_commit() {
    let index = catalog_index();
    let sku = "HP-0001";
    let in_stock = |index: &SearchIndex| {
        let req = SearchRequest {
            in_stock_only: true,
            limit: 100,
            ..q("1000xm5 ")
        };
        skus(&search(index, req)).contains(&sku)
    };
    assert!(in_stock(&index));
    assert!(index.set_available(sku, 0).unwrap());
    assert!(in_stock(&index), "not visible before commit");
    index.commit(2).unwrap();
    assert!(!in_stock(&index));

    // Price and stock in one batch: the second change sees the first.
    assert!(index.set_price(sku, 12_345, "USD").unwrap());
    assert!(index.set_available(sku, 7).unwrap());
    index.commit(3).unwrap();
    let doc = index.get(sku).unwrap().unwrap();
    assert_eq!((doc.price_minor, doc.available), (12_345, 7));
    let resp = search(
        &index,
        SearchRequest {
            min_price: Some(12_345),
            max_price: Some(12_345),
            ..q("")
        },
    );
    assert_eq!(skus(&resp), vec![sku]);
    assert_eq!(index.num_docs(), active_count());

    // Unknown SKUs are reported, not invented.
    assert!(!index.set_available("NOPE-1", 3).unwrap());
    assert!(!index.set_price("NOPE-1", 3, "USD").unwrap());

    // Discontinuing removes it.
    let mut doc = doc;
    doc.active = false;
    index.upsert(&doc).unwrap();
    assert!(!index.set_available(sku, 9).unwrap());
    index.commit(4).unwrap();
    assert!(index.get(sku).unwrap().is_none());
    assert_eq!(index.num_docs(), active_count() - 1);
    index.remove("HP-0002").unwrap();
    index.commit(5).unwrap();
    assert_eq!(index.num_docs(), active_count() - 2);
}

#[test]
fn the_checkpoint_survives_a_reopen_and_uncommitted_writes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(index.checkpoint(), None);
        index.upsert_all(&catalog()[..10]).unwrap();
        index.commit(41).unwrap();
        index.upsert_all(&catalog()[10..20]).unwrap();
        // Dropped without a commit: as if the process died.
    }
    let index = SearchIndex::open(dir.path()).unwrap();
    assert_eq!(index.checkpoint(), Some(41));
    assert_eq!(index.num_docs(), 10);
    index.upsert_all(&catalog()[10..20]).unwrap();
    index.commit(42).unwrap();
    assert_eq!(index.num_docs(), 20);
    assert_eq!(index.checkpoint(), Some(42));
}

#[test]
fn upserting_the_same_product_twice_keeps_one_copy() {
    let index = catalog_index();
    let mut doc = catalog()[5].clone();
    doc.name = "Sony WH-1000XM4 Wireless Headphones Renamed".into();
    index.upsert(&doc).unwrap();
    index.upsert(&doc).unwrap();
    index.commit(2).unwrap();
    assert_eq!(index.num_docs(), active_count());
    let resp = search(&index, q("renamed"));
    assert_eq!(skus(&resp), vec![doc.sku.as_str()]);
}
