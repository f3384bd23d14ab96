//! The `emporium` binary: parses the command line and hands over to the libraries.

mod cli;
mod commands;
mod serve;

use clap::Parser;

/// mimalloc instead of the system allocator: the command path allocates many small, short-lived
/// values per request (request bodies, events, states, answers) across the runtime's worker
/// threads and the event store's writer thread, and glibc's malloc spent a large share of the
/// server's CPU on them (arena locking, frees of memory allocated on another thread). mimalloc's
/// per-thread free lists make those cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (its `mi_option_e` enum; libmimalloc-sys names this
/// constant only for v2). `keep_freed_memory` checks the index against the option's documented
/// default before changing it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT_MS: std::os::raw::c_long = 1000;

/// Keeps memory freed by the process for reuse instead of handing it back to the OS.
///
/// A rebuild or a busy server frees and re-allocates large buffers (event batches, redb pages,
/// tantivy segments) all the time; with purging on, mimalloc returns those pages to the kernel
/// and the next allocation faults them in again, zeroed: `clear_page_erms` took about a third of
/// `projections rebuild --all`'s CPU, and purging off cut the rebuild's system time from 4.5 s to
/// 1.8 s. The cost is that RSS stays at its high-water mark until the tool exits.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)] // the only unsafe in the crate: two FFI calls into the allocator's options.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain option getters/setters of the allocator, called before any other thread runs.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT_MS {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // Batch tools (rebuild, export, seed, verify) run for minutes and exit; the server runs for
    // months and should give back what a burst took (measured: no throughput difference for
    // `serve` under PlaceOrder load, and ~30 MiB more RSS with purging off).
    if !matches!(cli.command, cli::Command::Serve(_)) {
        keep_freed_memory();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("emporium: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::serve(&cli.store, &args).await,
            // Every other subcommand: crates/bin/src/commands/.
            command => commands::run(&cli.store, command).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::cli::Cli::command().debug_assert();
    }
}
