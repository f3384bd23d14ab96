//! The expirer: a background task that expires placed orders whose reservation ran out, so that
//! their stock comes back.
//!
//! Every `interval` it asks the orders read model for open orders with `expires_at <= now`
//! ([`QueryService::expired_unpaid`]) and sends each an `ExpireOrder` through the command
//! service, which decides against the order's real state: an order paid meanwhile (the read
//! model lags) is rejected by the domain and left alone. The command id `expire-{order}` makes
//! the append happen once even when several nodes' expirers race for the same order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use emporium_domain::{Command, ExpireOrder, OrderId};

use super::QueryService;
use crate::commands::{CommandContext, CommandError, CommandService};

/// How the expirer runs.
#[derive(Clone, Debug)]
pub struct ExpirerConfig {
    /// Time between two sweeps.
    pub interval: Duration,
    /// The most orders expired per sweep.
    pub batch_max: usize,
    /// An order whose expiry was sent is not sent again for this long (the read model needs a
    /// moment to see the expiry).
    pub retry_after: Duration,
}

impl Default for ExpirerConfig {
    fn default() -> Self {
        ExpirerConfig {
            interval: Duration::from_secs(1),
            batch_max: 256,
            retry_after: Duration::from_secs(30),
        }
    }
}

/// Starts the expirer; abort the handle to stop it.
pub fn spawn(
    queries: QueryService,
    commands: CommandService,
    config: ExpirerConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sent: HashMap<OrderId, Instant> = HashMap::new();
        loop {
            sweep(&queries, &commands, &config, &mut sent).await;
            tokio::time::sleep(config.interval).await;
        }
    })
}

/// One pass: expires what is due. Returns how many orders were expired.
pub async fn sweep(
    queries: &QueryService,
    commands: &CommandService,
    config: &ExpirerConfig,
    sent: &mut HashMap<OrderId, Instant>,
) -> usize {
    sent.retain(|_, at| at.elapsed() < config.retry_after);
    let now = commands.now().as_micros();
    let due = match queries.expired_unpaid(now, config.batch_max).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "expirer: cannot read the open orders");
            return 0;
        }
    };
    let mut expired = 0;
    for order in due {
        let order_id = OrderId::from_uuid(order.order_id);
        if sent.contains_key(&order_id) {
            continue;
        }
        sent.insert(order_id, Instant::now());
        let ctx = CommandContext {
            command_id: Some(format!("expire-{order_id}")),
            ..CommandContext::default()
        };
        match commands
            .execute(Command::ExpireOrder(ExpireOrder { order_id }), ctx)
            .await
        {
            Ok(_) => {
                expired += 1;
                metrics::counter!("emporium_orders_expired_total").increment(1);
            }
            // Paid, cancelled or expired meanwhile: the read model lagged. Nothing to do.
            Err(CommandError::Domain(error)) => {
                tracing::debug!(%order_id, %error, "expirer: order not expired");
            }
            Err(error) => tracing::warn!(%order_id, %error, "expirer: ExpireOrder failed"),
        }
    }
    expired
}
