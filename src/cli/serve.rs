//! Owns `meteomesh serve`: the runtime, the signal handlers, the open-files limit, and
//! the exit code of a stop. The app itself lives in [`crate::app`].

use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{self, Listeners};
use crate::config::Config;

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

pub fn serve(config: Config, file: Option<std::path::PathBuf>) -> ExitCode {
    app::logging::init(&config.log.level);
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
            use crate::storage::StorageError;
            match e {
                app::AppError::Storage(
                    StorageError::Damaged { .. } | StorageError::TooNew { .. },
                ) => ExitCode::from(super::EXIT_DATA),
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
