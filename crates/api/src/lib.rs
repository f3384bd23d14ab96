//! The application: command service, query service, and the HTTP layer over both.
