//! From the analyzed words of a query to a tantivy query with typo-tier ranking.
//!
//! Each word is expanded against the term dictionary of the `all` field (every segment) into the
//! indexed terms it may stand for: itself, completions if it is the last word being typed, and
//! spelling variants within its typo budget. Each expansion carries its edit distance. The word
//! then becomes one clause:
//!
//! ```text
//! word := Bool( Must DisMax( Const(terms at distance 0 in `all`, 3·T),
//!                            Const(terms at distance 1 in `all`, 2·T),
//!                            Const(terms at distance 2 in `all`, 1·T) ),
//!               Should Boost(Term(name, t), 2·f(t)), Should Boost(Term(description, t), f(t)),
//!               Should Boost(Term(tags, t), f(t)),  Should Boost(Term(category_text, t), f(t))
//!               for each expansion t )
//! ```
//!
//! The dis-max gives the word the tier of its best match; `T` is far above any BM25 sum, so a
//! document's score orders first by its typo count over all words (exact beats one typo beats two,
//! the way Meilisearch's `typo` rule does), then by BM25 with name matches weighted twice and
//! corrected or completed terms discounted by `f`. All words are required (AND) except stop words.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, DisjunctionMaxQuery, EmptyQuery,
    FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{Facet, Field, IndexRecordOption};
use tantivy::{Searcher, Term};

use super::error::SearchError;
use super::schema::Fields;
use super::validate::{ParsedQuery, ValidRequest};

/// The score of one word matched exactly; one typo is `2/3` of it, two typos `1/3`.
const TIER_SCALE: f32 = 1_000.0;
/// Expansions kept per word besides the exact term (by edit distance, then document frequency).
const EXPANSIONS_MAX: usize = 12;
/// Terms read per segment while expanding one word: bounds the cost of a one-letter prefix.
const SCAN_PER_SEGMENT_MAX: usize = 4_096;
const NAME_BOOST: f32 = 2.0;
/// Words that never restrict the results (they still score) unless nothing else is asked.
const STOP_WORDS: [&str; 14] = [
    "a", "an", "and", "at", "by", "for", "in", "of", "on", "or", "the", "to", "with", "without",
];

/// How an indexed term relates to the word the user typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum MatchKind {
    Exact,
    /// A completion of the word being typed (no typo).
    Prefix,
    /// A spelling variant at this edit distance (for the last word: of a prefix).
    Typo(u8),
}

impl MatchKind {
    pub(crate) fn distance(self) -> u8 {
        match self {
            Self::Exact | Self::Prefix => 0,
            Self::Typo(d) => d,
        }
    }

    /// The BM25 factor of a term matched this way.
    fn factor(self) -> f32 {
        match self {
            Self::Exact => 1.0,
            Self::Prefix => 0.7,
            Self::Typo(1) => 0.5,
            Self::Typo(_) => 0.3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expansion {
    pub term: String,
    pub kind: MatchKind,
    pub doc_freq: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct WordPlan {
    pub expansions: Vec<Expansion>,
    pub optional: bool,
}

/// Typos allowed in a word: none up to 4 characters, one up to 8, two beyond; none at all for a
/// word with a digit (numbers, model numbers, SKU parts), where a typo is another product.
pub(crate) fn typo_budget(word: &str) -> u8 {
    if word.chars().any(char::is_numeric) {
        return 0;
    }
    match word.chars().count() {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// Optimal string alignment distance (adjacent transpositions cost one), as the Levenshtein
/// automata with `transposition_cost_one` count it. With `prefix`, the distance from `word` to the
/// closest prefix of `candidate`.
pub(crate) fn edit_distance(word: &str, candidate: &str, prefix: bool) -> usize {
    let a: Vec<char> = word.chars().collect();
    let b: Vec<char> = candidate.chars().collect();
    let (n, m) = (a.len(), b.len());
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    if prefix {
        d[n].iter().copied().min().unwrap_or(n)
    } else {
        d[n][m]
    }
}

/// Expands `word` against the `all` field's dictionaries.
pub(crate) fn expand_word(
    searcher: &Searcher,
    all: Field,
    word: &str,
    prefix: bool,
) -> Result<Vec<Expansion>, SearchError> {
    let budget = typo_budget(word);
    let term = Term::from_field_text(all, word);
    let mut found: HashMap<String, u64> = HashMap::new();
    if budget == 0 && !prefix {
        let doc_freq = searcher.doc_freq(&term)?;
        if doc_freq > 0 {
            found.insert(word.to_string(), doc_freq);
        }
    } else {
        let query = if prefix {
            FuzzyTermQuery::new_prefix(term, budget, true)
        } else {
            FuzzyTermQuery::new(term, budget, true)
        };
        let automaton = query.automaton()?;
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(all)?;
            let mut stream = inverted.terms().search(&automaton).into_stream()?;
            let mut scanned = 0;
            while scanned < SCAN_PER_SEGMENT_MAX && stream.advance() {
                scanned += 1;
                if let Ok(text) = std::str::from_utf8(stream.key()) {
                    let doc_freq = u64::from(stream.value().doc_freq);
                    match found.get_mut(text) {
                        Some(sum) => *sum += doc_freq,
                        None => {
                            found.insert(text.to_string(), doc_freq);
                        }
                    }
                }
            }
        }
    }
    let mut expansions: Vec<Expansion> = found
        .into_iter()
        .filter_map(|(text, doc_freq)| {
            let kind = if text == word {
                MatchKind::Exact
            } else {
                let distance = edit_distance(word, &text, prefix);
                match distance {
                    0 if prefix => MatchKind::Prefix,
                    1 | 2 if distance <= usize::from(budget) => {
                        MatchKind::Typo(u8::try_from(distance).ok()?)
                    }
                    _ => return None,
                }
            };
            Some(Expansion {
                term: text,
                kind,
                doc_freq,
            })
        })
        .collect();
    expansions.sort_by(|a, b| {
        (
            a.kind.distance(),
            a.kind != MatchKind::Exact,
            std::cmp::Reverse(a.doc_freq),
            &a.term,
        )
            .cmp(&(
                b.kind.distance(),
                b.kind != MatchKind::Exact,
                std::cmp::Reverse(b.doc_freq),
                &b.term,
            ))
    });
    let exact = usize::from(
        expansions
            .first()
            .is_some_and(|e| e.kind == MatchKind::Exact),
    );
    expansions.truncate(exact + EXPANSIONS_MAX);
    Ok(expansions)
}

/// Expands every word of the query.
pub(crate) fn plan_words(
    searcher: &Searcher,
    fields: &Fields,
    query: &ParsedQuery,
) -> Result<Vec<WordPlan>, SearchError> {
    let last = query.words.len().saturating_sub(1);
    let mut plans = Vec::with_capacity(query.words.len());
    for (i, word) in query.words.iter().enumerate() {
        let prefix = i == last && query.last_is_prefix;
        let expansions = expand_word(searcher, fields.all, word, prefix)?;
        plans.push(WordPlan {
            expansions,
            optional: !prefix && STOP_WORDS.contains(&word.as_str()),
        });
    }
    if plans.iter().all(|p| p.optional) {
        for plan in &mut plans {
            plan.optional = false;
        }
    }
    Ok(plans)
}

fn word_query(fields: &Fields, plan: &WordPlan) -> Box<dyn Query> {
    if plan.expansions.is_empty() {
        return Box::new(EmptyQuery);
    }
    let mut tiers: Vec<Box<dyn Query>> = Vec::with_capacity(3);
    for (distance, tier) in [(0u8, 3.0f32), (1, 2.0), (2, 1.0)] {
        let terms: Vec<(Occur, Box<dyn Query>)> = plan
            .expansions
            .iter()
            .filter(|e| e.kind.distance() == distance)
            .map(|e| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(fields.all, &e.term),
                    IndexRecordOption::Basic,
                ));
                (Occur::Should, q)
            })
            .collect();
        if !terms.is_empty() {
            tiers.push(Box::new(ConstScoreQuery::new(
                Box::new(BooleanQuery::new(terms)),
                tier * TIER_SCALE,
            )));
        }
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> =
        Vec::with_capacity(1 + plan.expansions.len() * 4);
    // The `all` field holds every word of the other fields, so the tiers alone decide whether
    // a document matches the word: they are required, and the per-field BM25 clauses below only
    // add to the score of documents that already match. As optional clauses beside a required
    // one, tantivy seeks them to each match instead of unioning every posting of every
    // expansion in every field (most of a search's CPU when the words are common).
    clauses.push((Occur::Must, Box::new(DisjunctionMaxQuery::new(tiers))));
    for e in &plan.expansions {
        let f = e.kind.factor();
        for (field, boost) in [
            (fields.name, NAME_BOOST * f),
            (fields.description, f),
            (fields.tags, f),
            (fields.category_text, f),
        ] {
            let term = TermQuery::new(
                Term::from_field_text(field, &e.term),
                IndexRecordOption::WithFreqs,
            );
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(term), boost)),
            ));
        }
    }
    Box::new(BooleanQuery::new(clauses))
}

fn filter(query: impl Query) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(Box::new(query), 0.0))
}

/// The text clauses and the filters as one query.
pub(crate) fn build_query(
    fields: &Fields,
    plans: &[WordPlan],
    req: &ValidRequest,
) -> Box<dyn Query> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if plans.is_empty() {
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    for plan in plans {
        let occur = if plan.optional {
            Occur::Should
        } else {
            Occur::Must
        };
        clauses.push((occur, word_query(fields, plan)));
    }
    if let Some(category) = &req.category {
        clauses.push((Occur::Must, category_filter(fields, category)));
    }
    if req.min_price.is_some() || req.max_price.is_some() {
        let bound = |v: Option<i64>| match v {
            Some(v) => Bound::Included(Term::from_field_i64(fields.price, v)),
            None => Bound::Unbounded,
        };
        clauses.push((
            Occur::Must,
            filter(RangeQuery::new(bound(req.min_price), bound(req.max_price))),
        ));
    }
    if req.in_stock_only {
        clauses.push((
            Occur::Must,
            filter(RangeQuery::new(
                Bound::Included(Term::from_field_i64(fields.available, 1)),
                Bound::Unbounded,
            )),
        ));
    }
    Box::new(BooleanQuery::new(clauses))
}

pub(crate) fn category_filter(fields: &Fields, category: &Facet) -> Box<dyn Query> {
    filter(TermQuery::new(
        Term::from_facet(fields.category, category),
        IndexRecordOption::Basic,
    ))
}

/// The terms to highlight, weighted like their scores.
pub(crate) fn highlight_terms(plans: &[WordPlan]) -> BTreeMap<String, f32> {
    let mut terms = BTreeMap::new();
    for e in plans.iter().flat_map(|p| &p.expansions) {
        let w = terms.entry(e.term.clone()).or_insert(0.0f32);
        *w = w.max(e.kind.factor());
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_budget_depends_on_length_and_digits() {
        assert_eq!(typo_budget("usb"), 0);
        assert_eq!(typo_budget("case"), 0);
        assert_eq!(typo_budget("cable"), 1);
        assert_eq!(typo_budget("wireless"), 1);
        assert_eq!(typo_budget("headphone"), 2);
        assert_eq!(typo_budget("1000xm5"), 0);
        assert_eq!(typo_budget("abcdefgh1"), 0);
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("wireles", "wireless", false), 1);
        assert_eq!(edit_distance("headphnes", "headphones", false), 1);
        assert_eq!(edit_distance("earphones", "headphones", false), 2);
        assert_eq!(edit_distance("wirelses", "wireless", false), 1);
        assert_eq!(edit_distance("head", "headphones", true), 0);
        assert_eq!(edit_distance("haed", "headphones", true), 1);
        assert_eq!(edit_distance("", "x", true), 0);
    }
}
