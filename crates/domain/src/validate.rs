//! Field validation shared by every command: [`Check`] collects the violations of one command so
//! that every offending field is reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use crate::error::{DomainError, Violation, ViolationKind};
use crate::limits::{
    ATTRIBUTE_NAME_LEN_MAX, ATTRIBUTE_VALUE_LEN_MAX, MONEY_AMOUNT_MAX, PAYMENT_REF_LEN_MAX,
    PRODUCT_ATTRIBUTES_MAX, PRODUCT_TAGS_MAX, REASON_LEN_MAX, TAG_LEN_MAX,
};
use crate::values::{Currency, Money, MoneyInput, check_plain_text};

#[derive(Debug, Default)]
pub(crate) struct Check {
    violations: Vec<Violation>,
}

impl Check {
    pub(crate) fn push(&mut self, field: impl Into<String>, kind: ViolationKind) {
        self.violations.push(Violation::new(field, kind));
    }

    /// Records the error of `result` against `field`; the value if it is valid.
    pub(crate) fn field<T>(&mut self, field: &str, result: Result<T, ViolationKind>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(kind) => {
                self.push(field, kind);
                None
            }
        }
    }

    /// Parses an identifier (`Sku`, `WarehouseId`, ...), recording a violation on `field`.
    pub(crate) fn parse<T: FromStr<Err = ViolationKind>>(
        &mut self,
        field: &str,
        value: &str,
    ) -> Option<T> {
        self.field(field, value.parse())
    }

    /// `Ok(value)` when nothing was violated. Every `None` passed here comes from a check that
    /// recorded a violation, so `None` without violations does not happen.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, DomainError> {
        match value {
            Some(value) if self.violations.is_empty() => Ok(value),
            _ => Err(DomainError::Validation(self.violations)),
        }
    }

    /// A single-line text of 1 to `max` characters.
    pub(crate) fn line(&mut self, field: &str, value: &str, max: usize) {
        if value.is_empty() {
            self.push(field, ViolationKind::Empty);
        } else if value.chars().count() > max {
            self.push(field, ViolationKind::TooLong { max });
        } else if let Err(kind) = check_plain_text(value) {
            self.push(field, kind);
        }
    }

    /// A free text of 0 to `max` characters; line breaks and tabs allowed, other control
    /// characters not.
    pub(crate) fn paragraphs(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.push(field, ViolationKind::TooLong { max });
        } else if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            self.push(field, ViolationKind::InvalidText);
        }
    }

    /// A reason (adjustment, cancellation, refund, payment failure).
    pub(crate) fn reason(&mut self, field: &str, value: &str) {
        self.line(field, value, REASON_LEN_MAX);
    }

    pub(crate) fn payment_ref(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.push(field, ViolationKind::Empty);
        } else if value.len() > PAYMENT_REF_LEN_MAX {
            self.push(
                field,
                ViolationKind::TooLong {
                    max: PAYMENT_REF_LEN_MAX,
                },
            );
        } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
            self.push(field, ViolationKind::InvalidPaymentRef);
        }
    }

    /// A quantity in `1..=max`.
    pub(crate) fn quantity(&mut self, field: &str, value: u64, max: u64) {
        self.range(field, value, 1, max);
    }

    /// A count in `min..=max`.
    pub(crate) fn range(&mut self, field: &str, value: u64, min: u64, max: u64) {
        if !(min..=max).contains(&value) {
            self.push(field, out_of_range(min, max));
        }
    }

    /// An amount in `min..=MONEY_AMOUNT_MAX` in a valid currency.
    pub(crate) fn money(&mut self, field: &str, input: &MoneyInput, min: i64) -> Option<Money> {
        let currency: Option<Currency> = self.parse(&format!("{field}.currency"), &input.currency);
        if !(min..=MONEY_AMOUNT_MAX).contains(&input.amount_minor) {
            self.push(
                format!("{field}.amount_minor"),
                ViolationKind::OutOfRange {
                    min,
                    max: MONEY_AMOUNT_MAX,
                },
            );
            return None;
        }
        currency.map(|currency| Money::new(input.amount_minor, currency))
    }

    /// Tags: at most [`PRODUCT_TAGS_MAX`], each a single line of at most [`TAG_LEN_MAX`], no
    /// duplicates.
    pub(crate) fn tags(&mut self, field: &str, tags: &[String]) {
        if tags.len() > PRODUCT_TAGS_MAX {
            self.push(
                field,
                ViolationKind::TooMany {
                    max: PRODUCT_TAGS_MAX,
                },
            );
            return;
        }
        let mut seen = BTreeSet::new();
        for (i, tag) in tags.iter().enumerate() {
            let field = format!("{field}[{i}]");
            self.line(&field, tag, TAG_LEN_MAX);
            if !seen.insert(tag) {
                self.push(field, ViolationKind::Duplicate);
            }
        }
    }

    /// Attributes: at most [`PRODUCT_ATTRIBUTES_MAX`]; names `[A-Za-z0-9._-]{1,64}`, values a
    /// single line of 1 to [`ATTRIBUTE_VALUE_LEN_MAX`].
    pub(crate) fn attributes(&mut self, field: &str, attributes: &BTreeMap<String, String>) {
        if attributes.len() > PRODUCT_ATTRIBUTES_MAX {
            self.push(
                field,
                ViolationKind::TooMany {
                    max: PRODUCT_ATTRIBUTES_MAX,
                },
            );
            return;
        }
        for (name, value) in attributes {
            let name_ok = (1..=ATTRIBUTE_NAME_LEN_MAX).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if name_ok {
                self.line(&format!("{field}.{name}"), value, ATTRIBUTE_VALUE_LEN_MAX);
            } else {
                self.push(field, ViolationKind::InvalidAttributeName);
            }
        }
    }
}

pub(crate) fn out_of_range(min: u64, max: u64) -> ViolationKind {
    ViolationKind::OutOfRange {
        min: i64::try_from(min).unwrap_or(i64::MAX),
        max: i64::try_from(max).unwrap_or(i64::MAX),
    }
}
