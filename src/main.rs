//! The `meteomesh` binary: allocator tuning, then the command line (`cli::run`).

use std::process::ExitCode;

use clap::Parser;
use meteomesh::cli::{self, Cli};

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

fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    allocator::tune_for_small_devices();
    cli::run(Cli::parse())
}
