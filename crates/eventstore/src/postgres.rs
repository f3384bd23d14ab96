//! The PostgreSQL backend (written next).

/// How to connect a [`PostgresStore`].
#[derive(Clone, Debug)]
pub struct PostgresConfig {}

/// The PostgreSQL event store.
#[derive(Clone, Debug)]
pub struct PostgresStore {}
