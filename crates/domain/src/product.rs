//! The Product aggregate (`product-{sku}`): catalog data, price and status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::limits::{PRODUCT_DESCRIPTION_LEN_MAX, PRODUCT_NAME_LEN_MAX};
use crate::validate::Check;
use crate::values::{CategoryPath, Money, MoneyInput, Sku, Timestamp};

// ---------------------------------------------------------------------------------------------
// Commands (untrusted input: plain strings, checked by `decide`)

/// Creates a product. Rejected if the product exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    /// `Electronics/Audio/Headphones`.
    pub category: String,
    /// At least 0 (free products are allowed).
    pub price: MoneyInput,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

/// Replaces the details that are `Some`; the event carries the full new details.
/// Allowed on a discontinued product (catalog clean-up).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateProductDetails {
    pub sku: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Option<Vec<String>>,
    pub attributes: Option<BTreeMap<String, String>>,
}

/// Sets the price (any currency; orders check that their lines agree). Rejected when discontinued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePrice {
    pub sku: String,
    pub price: MoneyInput,
}

/// Discontinues a product: it can no longer be ordered. Rejected when already discontinued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscontinueProduct {
    pub sku: String,
}

// ---------------------------------------------------------------------------------------------
// Events (released formats: frozen; see `codec`)

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub category: CategoryPath,
    pub price: Money,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub at: Timestamp,
}

/// The full details after the update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDetailsUpdated {
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub category: CategoryPath,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceChanged {
    pub sku: Sku,
    pub previous: Money,
    pub price: Money,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDiscontinued {
    pub sku: Sku,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductEvent {
    Created(ProductCreated),
    DetailsUpdated(ProductDetailsUpdated),
    PriceChanged(PriceChanged),
    Discontinued(ProductDiscontinued),
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductStatus {
    Active,
    Discontinued,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub category: CategoryPath,
    pub price: Money,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub status: ProductStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The state of a `product-{sku}` stream; `product` is `None` before `ProductCreated`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductState {
    pub product: Option<Product>,
}

impl ProductState {
    /// The product if it exists and can be ordered.
    pub fn orderable(&self) -> Option<&Product> {
        self.product
            .as_ref()
            .filter(|p| p.status == ProductStatus::Active)
    }
}

/// Folds one event into the state. Total: never fails, never panics.
pub fn evolve(mut state: ProductState, event: &ProductEvent) -> ProductState {
    match event {
        ProductEvent::Created(e) => {
            state.product = Some(Product {
                sku: e.sku.clone(),
                name: e.name.clone(),
                description: e.description.clone(),
                category: e.category.clone(),
                price: e.price.clone(),
                tags: e.tags.clone(),
                attributes: e.attributes.clone(),
                status: ProductStatus::Active,
                created_at: e.at,
                updated_at: e.at,
            });
        }
        ProductEvent::DetailsUpdated(e) => {
            if let Some(p) = state.product.as_mut() {
                p.name.clone_from(&e.name);
                p.description.clone_from(&e.description);
                p.category = e.category.clone();
                p.tags.clone_from(&e.tags);
                p.attributes.clone_from(&e.attributes);
                p.updated_at = e.at;
            }
        }
        ProductEvent::PriceChanged(e) => {
            if let Some(p) = state.product.as_mut() {
                p.price = e.price.clone();
                p.updated_at = e.at;
            }
        }
        ProductEvent::Discontinued(e) => {
            if let Some(p) = state.product.as_mut() {
                p.status = ProductStatus::Discontinued;
                p.updated_at = e.at;
            }
        }
    }
    state
}

// ---------------------------------------------------------------------------------------------
// Decisions

pub(crate) fn create(
    state: &ProductState,
    cmd: &CreateProduct,
    now: Timestamp,
) -> Result<ProductEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    c.line("name", &cmd.name, PRODUCT_NAME_LEN_MAX);
    c.paragraphs("description", &cmd.description, PRODUCT_DESCRIPTION_LEN_MAX);
    let category = c.parse::<CategoryPath>("category", &cmd.category);
    let price = c.money("price", &cmd.price, 0);
    c.tags("tags", &cmd.tags);
    c.attributes("attributes", &cmd.attributes);
    let (sku, category, price) = c.finish((|| Some((sku?, category?, price?)))())?;

    if state.product.is_some() {
        return Err(DomainError::ProductAlreadyExists { sku });
    }
    Ok(ProductEvent::Created(ProductCreated {
        sku,
        name: cmd.name.clone(),
        description: cmd.description.clone(),
        category,
        price,
        tags: cmd.tags.clone(),
        attributes: cmd.attributes.clone(),
        at: now,
    }))
}

pub(crate) fn update_details(
    state: &ProductState,
    cmd: &UpdateProductDetails,
    now: Timestamp,
) -> Result<ProductEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    if let Some(name) = &cmd.name {
        c.line("name", name, PRODUCT_NAME_LEN_MAX);
    }
    if let Some(description) = &cmd.description {
        c.paragraphs("description", description, PRODUCT_DESCRIPTION_LEN_MAX);
    }
    let category = match &cmd.category {
        Some(category) => c.parse::<CategoryPath>("category", category).map(Some),
        None => Some(None),
    };
    if let Some(tags) = &cmd.tags {
        c.tags("tags", tags);
    }
    if let Some(attributes) = &cmd.attributes {
        c.attributes("attributes", attributes);
    }
    let (sku, category) = c.finish((|| Some((sku?, category?)))())?;

    let product = existing(state, &sku)?;
    Ok(ProductEvent::DetailsUpdated(ProductDetailsUpdated {
        name: cmd.name.clone().unwrap_or_else(|| product.name.clone()),
        description: cmd
            .description
            .clone()
            .unwrap_or_else(|| product.description.clone()),
        category: category.unwrap_or_else(|| product.category.clone()),
        tags: cmd.tags.clone().unwrap_or_else(|| product.tags.clone()),
        attributes: cmd
            .attributes
            .clone()
            .unwrap_or_else(|| product.attributes.clone()),
        sku,
        at: now,
    }))
}

pub(crate) fn change_price(
    state: &ProductState,
    cmd: &ChangePrice,
    now: Timestamp,
) -> Result<ProductEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    let price = c.money("price", &cmd.price, 0);
    let (sku, price) = c.finish((|| Some((sku?, price?)))())?;

    let product = active(state, &sku)?;
    Ok(ProductEvent::PriceChanged(PriceChanged {
        previous: product.price.clone(),
        sku,
        price,
        at: now,
    }))
}

pub(crate) fn discontinue(
    state: &ProductState,
    cmd: &DiscontinueProduct,
    now: Timestamp,
) -> Result<ProductEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    let sku = c.finish(sku)?;

    active(state, &sku)?;
    Ok(ProductEvent::Discontinued(ProductDiscontinued {
        sku,
        at: now,
    }))
}

fn existing<'s>(state: &'s ProductState, sku: &Sku) -> Result<&'s Product, DomainError> {
    state
        .product
        .as_ref()
        .ok_or_else(|| DomainError::ProductNotFound { sku: sku.clone() })
}

/// The product if it exists and is active: the precondition of pricing and ordering.
pub(crate) fn active<'s>(state: &'s ProductState, sku: &Sku) -> Result<&'s Product, DomainError> {
    let product = existing(state, sku)?;
    match product.status {
        ProductStatus::Active => Ok(product),
        ProductStatus::Discontinued => Err(DomainError::ProductDiscontinued { sku: sku.clone() }),
    }
}
