//! The `meteomesh` binary: parse the command line, load config, hand over to the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use meteomesh::app::{self, Listeners};
use meteomesh::cli::{Cli, Command};
use meteomesh::config::Config;
use tokio_util::sync::CancellationToken;

/// The static (musl) binaries allocate with mimalloc: under musl's own allocator
/// (mallocng) RSS climbed about 2 KiB per 1,000 HTTP requests and kept climbing, where
/// glibc's stayed flat (docs/BENCHMARKS.md, `scripts/bench-rss-http.py`).
#[cfg(target_env = "musl")]
mod allocator {
    use std::ffi::{c_int, c_long};

    #[global_allocator]
    static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

    // Positions in mimalloc.h's `mi_option_e` (v3, the version Cargo.lock pins).
    const ARENA_EAGER_COMMIT: c_int = 4;
    const PURGE_DELAY: c_int = 15;

    unsafe extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
    }

    /// mimalloc's defaults suit a server with memory to spare: arenas committed up
    /// front, and freed pages returned after a second, at the next collection, which
    /// an idle process may not reach for hours. Here that kept 16 MiB more resident
    /// under HTTP load than musl's allocator, and Argon2's freed 38 MiB while idle.
    /// Commit on demand and return freed pages at once instead (flat at 9.5 MiB over
    /// 500,000 requests); a `MIMALLOC_*` variable set by the operator still wins.
    pub fn tune_for_small_devices() {
        for (option, name, value) in [
            (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
            (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
        ] {
            if std::env::var_os(name).is_none() {
                // SAFETY: mi_option_set only stores an integer in mimalloc's option
                // table; both options are read when memory is next committed or purged.
                unsafe { mi_option_set(option, value) };
            }
        }
    }
}

/// Exit code for a configuration problem (sysexits' EX_USAGE is 64; 2 is what clap and
/// most daemons use for "bad invocation", so scripts see one code for both).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a database that cannot be used as it is (damaged, or written by a newer
/// release): sysexits' EX_DATAERR. The service units do not restart on it, because a
/// restart loop cannot fix the file and would only fill the log.
const EXIT_DATA: u8 = 65;

fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    allocator::tune_for_small_devices();
    let cli = Cli::parse();
    let loaded = match Config::load(cli.config.as_deref(), std::env::vars(), &cli.overrides()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meteomesh: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = loaded.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config, loaded.file),
        Command::CheckConfig => {
            match &loaded.file {
                Some(f) => println!("config ok ({})", f.display()),
                None => println!("config ok (defaults and environment; no file)"),
            }
            ExitCode::SUCCESS
        }
        Command::PrintConfig => {
            print!("{}", config.to_redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Healthcheck { timeout } => {
            match meteomesh::ops::healthcheck(&config, Duration::from_secs(timeout.max(1))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("meteomesh: unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Sla { remote, action } => report(meteomesh::sla_cli::run(&remote, action)),
        Command::Mesh { remote, action } => report(meteomesh::mesh_cli::mesh(&remote, action)),
        Command::Client(args) => match meteomesh::mesh_cli::client(args) {
            Ok(out) if out.is_empty() => ExitCode::SUCCESS,
            other => report(other),
        },
        Command::User { action } => report(meteomesh::users_cli::run(&config, action)),
        Command::Backup { file } => match meteomesh::ops::backup(&config, &file) {
            Ok(()) => {
                println!("backup written to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meteomesh: backup failed: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Prints a subcommand's output, or its error, and picks the exit code.
fn report<E: std::fmt::Display>(result: Result<String, E>) -> ExitCode {
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meteomesh: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    // rmqtt logs every client hiccup at info; keep its chatter at warn unless asked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("rmqtt=warn,rmqtt_net=warn,{level}")));
    // The HTTP client logs request URLs (and hex dumps of them) at debug and trace; those
    // URLs carry secrets (the Telegram bot token is in the path, the OpenWeatherMap key
    // in the query), so its chatter stops at info whatever the filter says.
    let no_secrets =
        filter_fn(|m| !(m.target().starts_with("ureq") && *m.level() > tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter)
        .with_filter(no_secrets);
    tracing_subscriber::registry().with(layer).init();
}

/// Raises the soft limit on open files to the hard one, as Go's runtime and most
/// servers do: every MQTT client, HTTP client and mesh link is a descriptor, and the
/// usual soft limit of 1,024 is reached by a few hundred clients plus a burst of silent
/// sockets. The service units set the hard limit (`LimitNOFILE`, procd `limits`).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn serve(config: Config, file: Option<std::path::PathBuf>) -> ExitCode {
    init_tracing(&config.log.level);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %file.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "defaults".into()),
        "meteomesh starting"
    );
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meteomesh: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        let listeners = Listeners::bind(&config).await?;
        app::run(config, listeners, shutdown).await
    });
    // Sessions the broker still holds are dropped with the runtime, and provider or
    // Telegram calls abandoned at stop sit on blocking threads until their own timeout:
    // wait on none of them (the stop's work is committed by now).
    runtime.shutdown_timeout(Duration::from_millis(300));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "meteomesh stopped with an error");
            eprintln!("meteomesh: {e}");
            use meteomesh::storage::StorageError;
            match e {
                app::AppError::Storage(
                    StorageError::Damaged { .. } | StorageError::TooNew { .. },
                ) => ExitCode::from(EXIT_DATA),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// SIGTERM and SIGINT both lead to the one shutdown path.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
