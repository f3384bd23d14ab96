//! Every limit the domain enforces, in one place. Lengths of text are counted in Unicode scalar
//! values (`str::chars`), so a limit of 200 is at most 800 bytes.

/// The longest SKU, in characters (`[A-Za-z0-9._-]{1,64}`).
pub const SKU_LEN_MAX: usize = 64;
/// The longest warehouse id (`[A-Za-z0-9][A-Za-z0-9_-]{0,31}`).
pub const WAREHOUSE_ID_LEN_MAX: usize = 32;
/// The longest customer id (`[A-Za-z0-9._:@-]{1,128}`).
pub const CUSTOMER_ID_LEN_MAX: usize = 128;
/// The most segments of a category path (`Electronics/Audio/Headphones` has 3).
pub const CATEGORY_DEPTH_MAX: usize = 6;
/// The longest segment of a category path.
pub const CATEGORY_SEGMENT_LEN_MAX: usize = 64;

/// The longest product name.
pub const PRODUCT_NAME_LEN_MAX: usize = 200;
/// The longest product description.
pub const PRODUCT_DESCRIPTION_LEN_MAX: usize = 5_000;
/// The most tags on one product.
pub const PRODUCT_TAGS_MAX: usize = 20;
/// The longest tag.
pub const TAG_LEN_MAX: usize = 32;
/// The most attributes on one product.
pub const PRODUCT_ATTRIBUTES_MAX: usize = 50;
/// The longest attribute name (`[A-Za-z0-9._-]{1,64}`).
pub const ATTRIBUTE_NAME_LEN_MAX: usize = 64;
/// The longest attribute value.
pub const ATTRIBUTE_VALUE_LEN_MAX: usize = 256;

/// The longest free-text reason (stock adjustment, cancellation, refund, payment failure).
pub const REASON_LEN_MAX: usize = 500;
/// The longest payment provider reference (printable ASCII, no spaces).
pub const PAYMENT_REF_LEN_MAX: usize = 128;
/// The longest carrier name of a shipment.
pub const CARRIER_LEN_MAX: usize = 64;
/// The longest tracking number of a shipment, or supplier reference of a stock receipt.
pub const TRACKING_LEN_MAX: usize = 128;

/// The largest quantity one stock command moves (receive, transfer, reserve).
pub const STOCK_QUANTITY_MAX: u64 = 1_000_000;
/// The most units one warehouse may hold of one SKU.
pub const ON_HAND_MAX: u64 = 1_000_000_000;
/// The most lines of one order.
pub const ORDER_LINES_MAX: usize = 100;
/// The largest quantity of one order line.
pub const ORDER_LINE_QUANTITY_MAX: u64 = 10_000;

/// The largest amount of money, in minor units (10^12 cents is ten billion in major units): far
/// below `i64::MAX`, so that a line total (`price * quantity`) is checked, not wrapped.
pub const MONEY_AMOUNT_MAX: i64 = 1_000_000_000_000;

/// The longest a reservation may be held, in microseconds (7 days).
pub const RESERVATION_TTL_MAX_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
