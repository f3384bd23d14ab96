//! The tantivy schema of the product index and its analyzer.

use tantivy::Index;
use tantivy::schema::{
    FAST, FacetOptions, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};

/// The analyzer of every full-text field: split on non-alphanumerics, lower-case, fold accents,
/// drop absurdly long tokens. No stemming: prefix matching of the last word and typo tolerance
/// cover plurals well enough, and stems would break both (a prefix of a stem is no prefix of the
/// word the user typed).
pub(crate) const TEXT_ANALYZER: &str = "emporium_text";
/// Tokens longer than this are not indexed (and not searched).
pub(crate) const TOKEN_LEN_MAX: usize = 40;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    /// Raw SKU: deletes and look-ups by term; fast for the pagination tie-break.
    pub sku: Field,
    pub name: Field,
    pub description: Field,
    pub tags: Field,
    /// The category path's words, so `headphones` finds the Headphones category.
    pub category_text: Field,
    /// Every searchable word of the product (name, description, tags, category, SKU parts), docs
    /// only: term expansion (typos, prefixes) and the typo tiers run on its dictionary.
    pub all: Field,
    /// The category path as a facet: filter by any ancestor, count children.
    pub category: Field,
    pub price: Field,
    pub available: Field,
    pub created: Field,
    /// The whole [`super::ProductDoc`], postcard-encoded: hits and cheap stock/price updates.
    pub doc: Field,
}

pub(crate) fn build_schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let scored = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let all = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_ANALYZER)
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    let fields = Fields {
        sku: builder.add_text_field("sku", STRING | FAST),
        name: builder.add_text_field("name", scored.clone()),
        description: builder.add_text_field("description", scored.clone()),
        tags: builder.add_text_field("tags", scored.clone()),
        category_text: builder.add_text_field("category_text", scored),
        all: builder.add_text_field("all", all),
        category: builder.add_facet_field("category", FacetOptions::default()),
        price: builder.add_i64_field("price", FAST | INDEXED),
        available: builder.add_i64_field("available", FAST | INDEXED),
        created: builder.add_i64_field("created", FAST),
        doc: builder.add_bytes_field("doc", STORED),
    };
    (builder.build(), fields)
}

pub(crate) fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(TOKEN_LEN_MAX + 1))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

pub(crate) fn register_analyzer(index: &Index) {
    index.tokenizers().register(TEXT_ANALYZER, text_analyzer());
}

/// The words of `text` as the index sees them.
pub(crate) fn analyze(text: &str) -> Vec<String> {
    let mut analyzer = text_analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}
