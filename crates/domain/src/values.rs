//! Validated value types: identifiers, money, time. A value of these types is valid by
//! construction (also when deserialized: decoding checks the same rules).

use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ViolationKind;
use crate::limits::{
    CATEGORY_DEPTH_MAX, CATEGORY_SEGMENT_LEN_MAX, CUSTOMER_ID_LEN_MAX, MONEY_AMOUNT_MAX,
    SKU_LEN_MAX, WAREHOUSE_ID_LEN_MAX,
};

/// A point in time: microseconds since the Unix epoch (UTC). The domain never reads a clock; the
/// caller passes `now`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// `self + micros`, `None` on overflow.
    pub fn checked_add_micros(self, micros: i64) -> Option<Timestamp> {
        self.0.checked_add(micros).map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}us", self.0)
    }
}

/// An order id: a UUID v7 chosen by the caller (so that a retried command names the same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    pub const fn from_uuid(uuid: Uuid) -> Self {
        OrderId(uuid)
    }

    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The id if it is a UUID version 7 (the only kind `PlaceOrder` accepts).
    pub fn check_v7(self) -> Result<OrderId, ViolationKind> {
        if self.0.get_version_num() == 7 {
            Ok(self)
        } else {
            Err(ViolationKind::InvalidOrderId)
        }
    }
}

impl fmt::Display for OrderId {
    /// Lower-case hyphenated, the form used in stream names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for OrderId {
    type Err = ViolationKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(OrderId)
            .map_err(|_| ViolationKind::InvalidOrderId)
    }
}

/// A string newtype that checks its syntax on construction and on deserialization.
///
/// The text is a [`CompactString`]: up to 24 bytes are held inline (every SKU, warehouse and
/// customer id of a typical shop), so cloning one (the command path copies SKUs into stream
/// names, states, events and answers) allocates nothing, and comparing or hashing one (the
/// state cache and lock table are keyed by them) does not chase a pointer. It serializes as a
/// plain string, so the stored events and the JSON are the same as with a `String`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(CompactString);

        impl $name {
            /// The value if `s` is valid.
            pub fn parse(s: &str) -> Result<Self, ViolationKind> {
                $check(s)?;
                Ok($name(CompactString::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ViolationKind;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                $check(&s)?;
                Ok($name(CompactString::from(s)))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.into_string()
            }
        }

        impl FromStr for $name {
            type Err = ViolationKind;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(CheckedVisitor($name::parse))
            }
        }
    };
}

/// Deserializes a [`checked_string!`] type from any string form (borrowed, transient or owned)
/// without an intermediate `String`; a value that fails the check is a custom error with the
/// check's message, as `#[serde(try_from = "String")]` would give.
struct CheckedVisitor<T>(fn(&str) -> Result<T, ViolationKind>);

impl<T> serde::de::Visitor<'_> for CheckedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        (self.0)(s).map_err(E::custom)
    }
}

checked_string!(
    /// A stock-keeping unit: `[A-Za-z0-9._-]{1,64}`.
    Sku,
    check_sku
);
checked_string!(
    /// A warehouse id: `[A-Za-z0-9][A-Za-z0-9_-]{0,31}`.
    WarehouseId,
    check_warehouse_id
);
checked_string!(
    /// A customer id (the integrator's): `[A-Za-z0-9._:@-]{1,128}`.
    CustomerId,
    check_customer_id
);
checked_string!(
    /// A category path, `Electronics/Audio/Headphones`: 1 to [`CATEGORY_DEPTH_MAX`] segments
    /// separated by `/`, each 1 to [`CATEGORY_SEGMENT_LEN_MAX`] characters, without control
    /// characters or surrounding spaces.
    CategoryPath,
    check_category_path
);
checked_string!(
    /// An ISO 4217 currency code: three upper-case ASCII letters.
    ///
    /// The shape is checked, not membership in the ISO list: the list changes (codes are added and
    /// withdrawn), and a frozen copy in the event format would make old events undecodable or new
    /// currencies unusable. Amounts are already minor units, so the domain never needs a
    /// currency's exponent. The API may narrow this to the currencies a shop accepts.
    Currency,
    check_currency
);

impl CategoryPath {
    /// The segments, from the root: `["Electronics", "Audio", "Headphones"]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn check_sku(s: &str) -> Result<(), ViolationKind> {
    let ok = (1..=SKU_LEN_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ViolationKind::InvalidSku)
    }
}

fn check_warehouse_id(s: &str) -> Result<(), ViolationKind> {
    let ok = (1..=WAREHOUSE_ID_LEN_MAX).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ViolationKind::InvalidWarehouseId)
    }
}

fn check_customer_id(s: &str) -> Result<(), ViolationKind> {
    let ok = (1..=CUSTOMER_ID_LEN_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ViolationKind::InvalidCustomerId)
    }
}

fn check_category_path(s: &str) -> Result<(), ViolationKind> {
    let segments: Vec<&str> = s.split('/').collect();
    let ok = segments.len() <= CATEGORY_DEPTH_MAX
        && segments.iter().all(|segment| {
            let len = segment.chars().count();
            (1..=CATEGORY_SEGMENT_LEN_MAX).contains(&len) && check_plain_text(segment).is_ok()
        });
    if ok {
        Ok(())
    } else {
        Err(ViolationKind::InvalidCategoryPath)
    }
}

fn check_currency(s: &str) -> Result<(), ViolationKind> {
    if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ViolationKind::InvalidCurrency)
    }
}

/// Single-line text: no control characters and no leading or trailing whitespace.
pub(crate) fn check_plain_text(s: &str) -> Result<(), ViolationKind> {
    if s.chars().any(char::is_control) || s.trim() != s {
        Err(ViolationKind::InvalidText)
    } else {
        Ok(())
    }
}

/// An amount of money: integer minor units (cents for EUR, yen for JPY) and a currency. Never a
/// float. Amounts are bounded by [`MONEY_AMOUNT_MAX`] in absolute value, and arithmetic is
/// checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Money {
            amount_minor,
            currency,
        }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Money::new(0, currency)
    }

    /// `self * quantity`, `None` beyond [`MONEY_AMOUNT_MAX`].
    pub fn checked_mul(&self, quantity: u64) -> Option<Money> {
        let quantity = i64::try_from(quantity).ok()?;
        let amount = self.amount_minor.checked_mul(quantity)?;
        within_limit(amount).then(|| Money::new(amount, self.currency.clone()))
    }

    /// `self + other`, `None` for another currency or beyond [`MONEY_AMOUNT_MAX`].
    pub fn checked_add(&self, other: &Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        let amount = self.amount_minor.checked_add(other.amount_minor)?;
        within_limit(amount).then(|| Money::new(amount, self.currency.clone()))
    }
}

fn within_limit(amount: i64) -> bool {
    (-MONEY_AMOUNT_MAX..=MONEY_AMOUNT_MAX).contains(&amount)
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.amount_minor, self.currency)
    }
}

/// Money as a client sends it: not yet validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MoneyInput {
    pub amount_minor: i64,
    pub currency: String,
}

impl MoneyInput {
    pub fn new(amount_minor: i64, currency: impl Into<String>) -> Self {
        MoneyInput {
            amount_minor,
            currency: currency.into(),
        }
    }
}

impl From<Money> for MoneyInput {
    fn from(money: Money) -> Self {
        MoneyInput::new(money.amount_minor, money.currency)
    }
}
