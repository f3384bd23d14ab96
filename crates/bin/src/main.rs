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

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
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
