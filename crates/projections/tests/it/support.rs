//! Shared fixtures: a tiny command loop over the real deciders (so events are the ones the
//! command service would write), a realistic scenario, both event stores, and folding a log
//! into a read model without a runner.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use emporium_domain::{
    AdjustStock, CancelOrder, ChangePrice, Command, CreateProduct, DiscontinueProduct, ExpireOrder,
    LineInput, Loaded, MoneyInput, OrderId, PaymentOutcome, PlaceOrder, ReceiveStock,
    RecordPayment, RefundOrder, ShipOrder, StreamRef, Timestamp, TransferStock,
    UpdateProductDetails, decide,
};
use emporium_eventstore::{
    AppendOutcome, AppendRequest, EmbeddedConfig, EmbeddedStore, EventData, EventStore,
    ExpectedVersion, Metadata, PostgresStore, ReadFilter, StreamWrite,
};
use emporium_projections::{ModelConfig, ReadModel};
use futures::FutureExt;
use uuid::Uuid;

use crate::harness;

pub const T0: i64 = 1_800_000_000_000_000;
pub const MINUTE: i64 = 60_000_000;

/// Decides commands against in-memory states and appends the decisions, like the command
/// service (single writer: the states are always current).
pub struct World {
    pub store: Arc<dyn EventStore>,
    loaded: Loaded,
    versions: HashMap<StreamRef, u64>,
    pub now: i64,
    order_seq: u64,
}

impl World {
    pub fn new(store: Arc<dyn EventStore>) -> World {
        World {
            store,
            loaded: Loaded::new(),
            versions: HashMap::new(),
            now: T0,
            order_seq: 0,
        }
    }

    /// Decides and appends `command` at the world's clock (which then moves 1 s).
    pub async fn exec(&mut self, command: impl Into<Command>) -> AppendOutcome {
        let command = command.into();
        loop {
            let missing = command.missing_streams(&self.loaded);
            if missing.is_empty() {
                break;
            }
            for stream in missing {
                let state = stream.initial_state();
                self.loaded.insert(stream, state);
            }
        }
        let now = Timestamp::from_micros(self.now);
        self.now += 1_000_000;
        let decision = decide(&command, &self.loaded, now)
            .unwrap_or_else(|e| panic!("{} rejected: {e:?}", command.name()));
        let writes = decision
            .writes
            .iter()
            .map(|w| StreamWrite {
                stream: w.stream.to_string(),
                expected: match self.versions.get(&w.stream) {
                    Some(v) => ExpectedVersion::Exact(*v),
                    None => ExpectedVersion::NoStream,
                },
                events: w
                    .events
                    .iter()
                    .map(|e| EventData {
                        event_id: Uuid::now_v7(),
                        event_type: e.event_type().to_owned(),
                        payload: Bytes::from(e.encode().unwrap()),
                        metadata: Metadata {
                            recorded_at_micros: now.as_micros(),
                            ..Metadata::default()
                        },
                    })
                    .collect(),
            })
            .collect();
        let outcome = self
            .store
            .append(AppendRequest {
                writes,
                command_id: None,
            })
            .await
            .unwrap();
        for w in &decision.writes {
            let n = w.events.len() as u64;
            self.versions
                .entry(w.stream.clone())
                .and_modify(|v| *v += n)
                .or_insert(n - 1);
        }
        self.loaded.apply(&decision).unwrap();
        outcome
    }

    /// A deterministic UUID v7 (its time part is the world's clock).
    pub fn next_order_id(&mut self) -> OrderId {
        self.order_seq += 1;
        let millis = (self.now / 1000) as u64;
        let bytes =
            (u128::from(millis) << 80) | (0x7 << 76) | (2 << 62) | u128::from(self.order_seq);
        OrderId(Uuid::from_u128(bytes))
    }

    pub async fn create(
        &mut self,
        sku: &str,
        name: &str,
        category: &str,
        price: i64,
    ) -> AppendOutcome {
        self.exec(CreateProduct {
            sku: sku.into(),
            name: name.into(),
            description: format!("{name}: a product of {category}"),
            category: category.into(),
            price: MoneyInput::new(price, "EUR"),
            tags: vec!["fixture".into()],
            attributes: BTreeMap::from([("brand".into(), "Acme".into())]),
        })
        .await
    }

    pub async fn receive(&mut self, sku: &str, warehouse: &str, quantity: u64) -> AppendOutcome {
        self.exec(ReceiveStock {
            sku: sku.into(),
            warehouse: warehouse.into(),
            quantity,
            reference: None,
        })
        .await
    }

    /// Places an order expiring in 15 minutes.
    pub async fn place(
        &mut self,
        customer: &str,
        lines: &[(&str, u64)],
    ) -> (OrderId, AppendOutcome) {
        let order_id = self.next_order_id();
        let outcome = self
            .exec(PlaceOrder {
                order_id,
                customer_id: customer.into(),
                lines: lines
                    .iter()
                    .map(|(sku, quantity)| LineInput {
                        sku: (*sku).into(),
                        quantity: *quantity,
                    })
                    .collect(),
                expires_at: Timestamp::from_micros(self.now + 15 * MINUTE),
            })
            .await;
        (order_id, outcome)
    }

    /// Captures an order's whole total.
    pub async fn pay(&mut self, order_id: OrderId, amount: i64) -> AppendOutcome {
        self.exec(RecordPayment {
            order_id,
            payment_ref: format!("pay-{}", order_id.0.simple()),
            outcome: PaymentOutcome::Captured {
                amount: MoneyInput::new(amount, "EUR"),
            },
        })
        .await
    }
}

/// A realistic history: a small catalog in a category tree, stock in three warehouses, orders
/// that are paid and shipped, cancelled, expired, refunded, left open; price changes, a
/// discontinued product, a re-categorised one. Returns the order ids by what became of them.
pub async fn scenario(world: &mut World) -> BTreeMap<&'static str, OrderId> {
    world
        .create(
            "HP-100",
            "Wireless Headphones",
            "Electronics/Audio/Headphones",
            12_999,
        )
        .await;
    world
        .create(
            "HP-200",
            "Studio Headphones",
            "Electronics/Audio/Headphones",
            19_900,
        )
        .await;
    world
        .create(
            "SPK-1",
            "Bluetooth Speaker",
            "Electronics/Audio/Speakers",
            5_995,
        )
        .await;
    world
        .create("CAB-USB", "USB-C Cable", "Electronics/Accessories", 999)
        .await;
    world
        .create("MUG-1", "Coffee Mug", "Home/Kitchen", 1_250)
        .await;
    world
        .create("TEA-1", "Green Tea", "Home/Kitchen/Tea", 450)
        .await;

    world.receive("HP-100", "berlin", 20).await;
    world.receive("HP-100", "paris", 5).await;
    world.receive("HP-200", "berlin", 3).await;
    world.receive("SPK-1", "madrid", 10).await;
    world.receive("CAB-USB", "berlin", 100).await;
    world.receive("MUG-1", "paris", 12).await;
    world
        .exec(TransferStock {
            sku: "CAB-USB".into(),
            from: "berlin".into(),
            to: "madrid".into(),
            quantity: 40,
        })
        .await;
    world
        .exec(AdjustStock {
            sku: "MUG-1".into(),
            warehouse: "paris".into(),
            counted: 10,
            reason: "two broken in the yearly count".into(),
        })
        .await;

    let mut orders = BTreeMap::new();
    let (shipped, _) = world.place("alice", &[("HP-100", 2), ("CAB-USB", 3)]).await;
    world.pay(shipped, 2 * 12_999 + 3 * 999).await;
    world
        .exec(ShipOrder {
            order_id: shipped,
            carrier: "DHL".into(),
            tracking: "JD014600006281".into(),
        })
        .await;
    orders.insert("shipped", shipped);

    let (cancelled, _) = world.place("alice", &[("SPK-1", 1)]).await;
    world
        .exec(CancelOrder {
            order_id: cancelled,
            reason: "changed my mind".into(),
        })
        .await;
    orders.insert("cancelled", cancelled);

    let (refunded, _) = world.place("bob", &[("HP-200", 1)]).await;
    world.pay(refunded, 19_900).await;
    world
        .exec(RefundOrder {
            order_id: refunded,
            amount: MoneyInput::new(5_000, "EUR"),
            reason: "scratched on arrival".into(),
        })
        .await;
    orders.insert("refunded", refunded);

    let (failed_then_open, _) = world.place("carol", &[("MUG-1", 2)]).await;
    world
        .exec(RecordPayment {
            order_id: failed_then_open,
            payment_ref: "card-declined-1".into(),
            outcome: PaymentOutcome::Failed {
                reason: "card declined".into(),
            },
        })
        .await;
    orders.insert("open", failed_then_open);

    let (expired, _) = world.place("bob", &[("HP-100", 1), ("MUG-1", 1)]).await;
    orders.insert("expired", expired);

    world
        .exec(ChangePrice {
            sku: "HP-100".into(),
            price: MoneyInput::new(9_999, "EUR"),
        })
        .await;
    world
        .exec(UpdateProductDetails {
            sku: "TEA-1".into(),
            name: Some("Sencha Green Tea".into()),
            category: Some("Home/Pantry/Tea".into()),
            ..UpdateProductDetails::default()
        })
        .await;
    world
        .exec(DiscontinueProduct {
            sku: "SPK-1".into(),
        })
        .await;

    // Time passes: the unpaid orders' reservations expire; one of them is expired.
    world.now += 20 * MINUTE;
    world.exec(ExpireOrder { order_id: expired }).await;
    orders
}

/// Folds the whole log of `store` into a fresh model in `dir`, batch by batch, without a runner.
pub async fn fold_all<M: ReadModel>(store: &dyn EventStore, dir: &Path, batch: usize) -> M {
    let model = M::open(dir, &ModelConfig::small()).unwrap();
    fold_on(store, &model, batch).await;
    model
}

/// Folds the log into `model` from its checkpoint to the head, `batch` events a time.
pub async fn fold_on<M: ReadModel>(store: &dyn EventStore, model: &M, batch: usize) {
    let mut after = model.checkpoint().unwrap();
    loop {
        let events = store
            .read_all(after, &ReadFilter::default(), batch)
            .await
            .unwrap();
        let Some(last) = events.last() else { break };
        after = last.position;
        model.apply(&events).unwrap();
    }
}

/// Runs `test` on a fresh embedded store.
pub async fn with_embedded<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn EventStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(EmbeddedConfig::new(dir.path())).unwrap();
    let result = AssertUnwindSafe(test(Arc::new(store.clone())))
        .catch_unwind()
        .await;
    store.close().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `test` on a fresh PostgreSQL store in a fresh database (the event store's test
/// harness: unreachable server = FAIL under `CI=true`, loud SKIPPED otherwise).
pub async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn EventStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = harness::TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect_with(harness::pg_config(&db.url))
        .await
        .unwrap();
    let result = AssertUnwindSafe(test(Arc::new(store.clone())))
        .catch_unwind()
        .await;
    store.close().await;
    db.drop().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
