//! The `shirabe` binary: parse arguments, run, map the outcome to an exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// A model's forward pass allocates and frees the same large activation
/// buffers hundreds of times (an embedding batch's are 50 MB each). glibc
/// hands anything past 32 MB to `mmap` and back on free, so every one came
/// back as fresh pages, faulted in and zeroed again: a fifth of the time of
/// a batch of eight passages. Kept in the heap instead, they are reused.
///
/// The rayon workers allocate from arenas of their own, which glibc
/// shrinks (or deletes whole) on free unless their top keeps `M_TOP_PAD`
/// spare: with the default 128 KB pad, every pass of an embedding batch
/// faulted in about 140 MB again (36,000 page faults per 512-token
/// passage; none with a 64 MB pad, the size of an arena's heap).
///
/// That pad was not enough for work on threads that are not rayon's (the
/// server's blocking pool, the TUI's workers): `/v1/embeddings` on 64
/// passages spent 28 s of 41 in the kernel, twice `shirabe embed`'s time.
/// With one arena for all threads (the main one, which the thresholds above
/// keep whole) it takes `embed`'s time; generation is no slower.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_allocations() {
    // SAFETY: mallopt only changes allocator thresholds, before any thread
    // starts.
    unsafe {
        // Some glibc versions cap the threshold at 32 MB; setting it at all
        // fixes it (no dynamic adjustment), so fall back rather than leave
        // the 128 KB default frozen by the trim setting below.
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20) == 1
            || libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
        {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    // A PDF worker of an ingest (see `shirabe::ingest::isolate`).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == shirabe::ingest::isolate::WORKER_ARG)
    {
        return ExitCode::from(shirabe::ingest::isolate::serve_worker() as u8);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    keep_large_allocations();
    let mut args = cli::Cli::parse();
    if args.command.is_none() {
        // `shirabe` alone: the TUI in a terminal, the help elsewhere.
        use std::io::IsTerminal;
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            args =
                cli::Cli::parse_from(std::env::args_os().chain([std::ffi::OsString::from("tui")]));
        } else {
            let _ = <cli::Cli as clap::CommandFactory>::command().print_help();
            return ExitCode::from(2);
        }
    }
    // lopdf logs its own recoveries; shirabe reports per-file problems itself.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHIRABE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lopdf=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args) {
        Ok(cli::Status::Success) => ExitCode::from(0),
        Ok(cli::Status::Partial) => ExitCode::from(1),
        Ok(cli::Status::Interrupted) => ExitCode::from(130),
        Err(err) => {
            // `shirabe search ... | head` closes the pipe early: not an error.
            let broken_pipe = err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::from(0);
            }
            eprintln!("error: {}", shirabe::error::chain_text(err.as_ref()));
            ExitCode::from(2)
        }
    }
}
