use std::collections::BTreeMap;

use emporium_domain::limits::{PRODUCT_NAME_LEN_MAX, PRODUCT_TAGS_MAX};
use emporium_domain::product::{
    PriceChanged, ProductCreated, ProductDetailsUpdated, ProductDiscontinued,
};
use emporium_domain::{
    ChangePrice, CreateProduct, DiscontinueProduct, MoneyInput, ProductEvent, ProductStatus, State,
    StreamRef, UpdateProductDetails,
};

use crate::support::*;

fn create(s: &str) -> CreateProduct {
    CreateProduct {
        sku: s.into(),
        name: "Studio Headphones".into(),
        description: "Closed-back.\nFolding.".into(),
        category: "Electronics/Audio/Headphones".into(),
        price: MoneyInput::new(19_999, "EUR"),
        tags: vec!["audio".into(), "wired".into()],
        attributes: BTreeMap::from([("color".into(), "black".into())]),
    }
}

fn discontinued(s: &str) -> emporium_domain::Event {
    ProductEvent::Discontinued(ProductDiscontinued {
        sku: sku(s),
        at: at(NOW - 1),
    })
    .into()
}

#[test]
fn it_should_create_a_product() {
    given_nothing()
        .when(create("HP-1"))
        .then([ProductEvent::Created(ProductCreated {
            sku: sku("HP-1"),
            name: "Studio Headphones".into(),
            description: "Closed-back.\nFolding.".into(),
            category: "Electronics/Audio/Headphones".parse().unwrap(),
            price: eur(19_999),
            tags: vec!["audio".into(), "wired".into()],
            attributes: BTreeMap::from([("color".into(), "black".into())]),
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_not_create_a_product_twice() {
    given([product_created("HP-1", 100)])
        .when(create("HP-1"))
        .then_err("product-already-exists");
}

#[test]
fn it_should_list_every_invalid_field_of_a_product() {
    let cmd = CreateProduct {
        sku: "bad sku".into(),
        name: " padded".into(),
        description: "bell\u{7}".into(),
        category: "Electronics//Audio".into(),
        price: MoneyInput::new(-1, "eur"),
        tags: vec!["a".into(), "a".into()],
        attributes: BTreeMap::from([
            ("bad name".into(), "x".into()),
            ("ok".into(), String::new()),
        ]),
    };
    given_nothing().when(cmd).then_invalid(&[
        ("sku", "invalid-sku"),
        ("name", "invalid-text"),
        ("description", "invalid-text"),
        ("category", "invalid-category-path"),
        ("price.currency", "invalid-currency"),
        ("price.amount_minor", "out-of-range"),
        ("tags[1]", "duplicate"),
        ("attributes", "invalid-attribute-name"),
        ("attributes.ok", "empty"),
    ]);
}

#[test]
fn it_should_enforce_the_text_and_count_limits() {
    let mut cmd = create("HP-1");
    cmd.name = "x".repeat(PRODUCT_NAME_LEN_MAX + 1);
    cmd.tags = (0..=PRODUCT_TAGS_MAX).map(|i| format!("t{i}")).collect();
    cmd.category = "A/B/C/D/E/F/G".into();
    given_nothing().when(cmd).then_invalid(&[
        ("name", "too-long"),
        ("category", "invalid-category-path"),
        ("tags", "too-many"),
    ]);
}

#[test]
fn it_should_accept_a_name_at_the_limit_in_multibyte_characters() {
    let mut cmd = create("HP-1");
    cmd.name = "é".repeat(PRODUCT_NAME_LEN_MAX);
    given_nothing().when(cmd).then_ok();
}

#[test]
fn it_should_update_only_the_given_details() {
    given([product_created("HP-1", 100)])
        .when(UpdateProductDetails {
            sku: "HP-1".into(),
            name: Some("New name".into()),
            tags: Some(vec!["sale".into()]),
            ..Default::default()
        })
        .then([ProductEvent::DetailsUpdated(ProductDetailsUpdated {
            sku: sku("HP-1"),
            name: "New name".into(),
            description: String::new(),
            category: "Electronics/Audio".parse().unwrap(),
            tags: vec!["sale".into()],
            attributes: BTreeMap::new(),
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_update_the_details_of_a_discontinued_product() {
    given([product_created("HP-1", 100), discontinued("HP-1")])
        .when(UpdateProductDetails {
            sku: "HP-1".into(),
            description: Some("No longer sold.".into()),
            ..Default::default()
        })
        .then_ok();
}

#[test]
fn it_should_not_update_a_product_that_does_not_exist() {
    given_nothing()
        .when(UpdateProductDetails {
            sku: "HP-1".into(),
            ..Default::default()
        })
        .then_err("product-not-found");
}

#[test]
fn it_should_reject_invalid_details() {
    given([product_created("HP-1", 100)])
        .when(UpdateProductDetails {
            sku: "HP-1".into(),
            name: Some(String::new()),
            category: Some("/".into()),
            ..Default::default()
        })
        .then_invalid(&[("name", "empty"), ("category", "invalid-category-path")]);
}

#[test]
fn it_should_change_the_price() {
    given([product_created("HP-1", 100)])
        .when(ChangePrice {
            sku: "HP-1".into(),
            price: MoneyInput::new(150, "EUR"),
        })
        .then([ProductEvent::PriceChanged(PriceChanged {
            sku: sku("HP-1"),
            previous: eur(100),
            price: eur(150),
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_not_change_the_price_of_a_discontinued_product() {
    given([product_created("HP-1", 100), discontinued("HP-1")])
        .when(ChangePrice {
            sku: "HP-1".into(),
            price: MoneyInput::new(150, "EUR"),
        })
        .then_err("product-discontinued");
}

#[test]
fn it_should_not_change_the_price_of_a_product_that_does_not_exist() {
    given_nothing()
        .when(ChangePrice {
            sku: "HP-1".into(),
            price: MoneyInput::new(150, "EUR"),
        })
        .then_err("product-not-found");
}

#[test]
fn it_should_reject_a_price_above_the_money_limit() {
    given([product_created("HP-1", 100)])
        .when(ChangePrice {
            sku: "HP-1".into(),
            price: MoneyInput::new(i64::MAX, "EUR"),
        })
        .then_invalid(&[("price.amount_minor", "out-of-range")]);
}

#[test]
fn it_should_discontinue_a_product() {
    given([product_created("HP-1", 100)])
        .when(DiscontinueProduct { sku: "HP-1".into() })
        .then([discontinued_now("HP-1")]);
}

fn discontinued_now(s: &str) -> emporium_domain::Event {
    ProductEvent::Discontinued(ProductDiscontinued {
        sku: sku(s),
        at: at(NOW),
    })
    .into()
}

#[test]
fn it_should_not_discontinue_a_product_twice() {
    given([product_created("HP-1", 100), discontinued("HP-1")])
        .when(DiscontinueProduct { sku: "HP-1".into() })
        .then_err("product-discontinued");
}

#[test]
fn it_should_not_discontinue_a_product_that_does_not_exist() {
    given_nothing()
        .when(DiscontinueProduct { sku: "HP-1".into() })
        .then_err("product-not-found");
}

#[test]
fn a_discontinued_product_is_not_orderable() {
    let stream = StreamRef::Product(sku("HP-1"));
    let events = [product_created("HP-1", 100), discontinued("HP-1")];
    let State::Product(state) = State::replay(&stream, &events).unwrap() else {
        panic!("not a product state");
    };
    assert_eq!(
        state.product.as_ref().unwrap().status,
        ProductStatus::Discontinued
    );
    assert!(state.orderable().is_none());
}
