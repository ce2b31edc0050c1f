//! Owns password hashing: argon2id with OWASP parameters (m = 19 MiB, t = 2, p = 1),
//! run on blocking threads behind a semaphore so a login flood cannot take more than
//! `hash_concurrency × 19 MiB` of memory.
//!
//! The 19 MiB working memory is allocated once per permit and reused while logins keep
//! coming. Allocating it per login (as argon2's PHC-string API does) made glibc keep freed
//! blocks in per-thread arenas: RSS grew by ~470 MB over 300 logins in the load benchmark.
//! After [`RELEASE_IDLE`] without a hash the buffers are freed, so one login an hour does
//! not keep 19 MiB per permit resident on a router.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

/// OWASP password storage cheat sheet, argon2id option 2.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

/// How long pooled working memory outlives the last hash.
const RELEASE_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but hashed with other parameters: store a fresh hash.
    YesRehash,
}

/// Argon2 working memory for the standard parameters, one buffer per hashing permit.
type MemoryPool = Arc<Mutex<Vec<Vec<Block>>>>;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    memory: MemoryPool,
    /// Counts finished hashes; a release timer frees the pool only if none finished since.
    uses: Arc<AtomicU64>,
    /// A hash of a random password, verified against when the user does not exist so
    /// that "no such user" takes as long as "wrong password". Made on first use, to
    /// keep start-up fast.
    dummy: Arc<OnceLock<String>>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("static argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Runs `f` with argon2 memory of `blocks` blocks: a pooled buffer when the size is the
/// standard one, a temporary one otherwise (old hashes with other parameters).
fn with_memory<T>(pool: &MemoryPool, blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    let standard = argon2().params().block_count();
    if blocks != standard {
        return f(&mut vec![Block::default(); blocks]);
    }
    let taken = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut buffer = taken.unwrap_or_else(|| vec![Block::default(); standard]);
    let result = f(&mut buffer);
    pool.lock().unwrap_or_else(|p| p.into_inner()).push(buffer);
    result
}

/// The hash of `password` with `salt` under `argon`, as the PHC-string API computes it.
fn compute(
    pool: &MemoryPool,
    argon: &Argon2,
    password: &str,
    salt: Salt,
    output_len: usize,
) -> Result<Output, HashError> {
    let err = |e: &dyn std::fmt::Display| HashError(e.to_string());
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| err(&e))?;
    with_memory(pool, argon.params().block_count(), |memory| {
        Output::init_with(output_len, |out| {
            argon
                .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, memory)
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
        .map_err(|e| err(&e))
    })
}

fn hash_blocking(pool: &MemoryPool, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = argon2();
    let output = compute(
        pool,
        &argon,
        password,
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
    )?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params()).map_err(|e| HashError(e.to_string()))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

fn verify_blocking(pool: &MemoryPool, password: &str, stored: &str) -> Verified {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verified::No;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Verified::No;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return Verified::No;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return Verified::No,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return Verified::No;
    };
    let argon = Argon2::new(algorithm, version, params);
    // `Output`'s equality is constant-time.
    match compute(pool, &argon, password, salt, expected.len()) {
        Ok(computed) if computed == expected => {}
        _ => return Verified::No,
    }
    let current = Params::try_from(&parsed).ok();
    let same = parsed.algorithm.as_str() == "argon2id"
        && current.is_some_and(|p| {
            p.m_cost() == MEMORY_KIB && p.t_cost() == ITERATIONS && p.p_cost() == PARALLELISM
        });
    if same {
        Verified::Yes
    } else {
        Verified::YesRehash
    }
}

impl Hasher {
    pub fn new(concurrency: usize) -> Hasher {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            memory: MemoryPool::default(),
            uses: Arc::default(),
            dummy: Arc::default(),
        }
    }

    /// Frees the pooled buffers after [`RELEASE_IDLE`] unless another hash finishes first
    /// (that one schedules its own release). A buffer checked out at that moment returns
    /// to the pool and is covered by its user's release.
    fn release_when_idle(&self) {
        let this_use = self.uses.fetch_add(1, Ordering::Relaxed) + 1;
        let uses = self.uses.clone();
        let pool = self.memory.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RELEASE_IDLE).await;
            if uses.load(Ordering::Relaxed) == this_use {
                pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
        });
    }

    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        let password = password.to_owned();
        let pool = self.memory.clone();
        let hashed = tokio::task::spawn_blocking(move || hash_blocking(&pool, &password)).await;
        self.release_when_idle();
        hashed.map_err(|e| HashError(e.to_string()))?
    }

    /// Checks `password` against `stored`, or against a dummy hash when `stored` is
    /// `None` (unknown user), which always answers [`Verified::No`] after the same work.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Verified {
        let Ok(_permit) = self.permits.acquire().await else {
            return Verified::No;
        };
        let stored = stored.map(str::to_owned);
        let dummy = self.dummy.clone();
        let password = password.to_owned();
        let pool = self.memory.clone();
        let verified = tokio::task::spawn_blocking(move || match stored {
            Some(stored) => verify_blocking(&pool, &password, &stored),
            None => {
                let dummy = dummy.get_or_init(|| {
                    let random: [u8; 16] = rand::random();
                    hash_blocking(&pool, &format!("{random:?}")).unwrap_or_default()
                });
                verify_blocking(&pool, &password, dummy);
                Verified::No
            }
        })
        .await;
        self.release_when_idle();
        verified.unwrap_or(Verified::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    #[test]
    fn hash_verify_and_rehash_detection() {
        let pool = MemoryPool::default();
        let h = hash_blocking(&pool, "correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify_blocking(&pool, "correct horse", &h), Verified::Yes);
        assert_eq!(verify_blocking(&pool, "wrong horse", &h), Verified::No);
        assert_eq!(verify_blocking(&pool, "x", "not a hash"), Verified::No);
        // The pooled buffer was reused, not multiplied.
        assert_eq!(pool.lock().unwrap().len(), 1);
        // Interchangeable with argon2's own PHC-string API, both ways.
        let theirs = argon2()
            .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert_eq!(
            verify_blocking(&pool, "correct horse", &theirs),
            Verified::Yes
        );
        let ours = PasswordHash::new(&h).unwrap();
        assert!(argon2().verify_password(b"correct horse", &ours).is_ok());
        // A hash made with weaker parameters verifies but asks for a rehash.
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert_eq!(
            verify_blocking(&pool, "correct horse", &weak),
            Verified::YesRehash
        );
        assert_eq!(verify_blocking(&pool, "wrong horse", &weak), Verified::No);
    }

    #[tokio::test(start_paused = true)]
    async fn pooled_memory_is_freed_when_no_hash_ran_for_a_while() {
        let pooled = |h: &Hasher| h.memory.lock().unwrap().len();
        let hasher = Hasher::new(2);
        let stored = hasher.hash("correct horse").await.unwrap();
        assert_eq!(pooled(&hasher), 1);
        tokio::time::sleep(RELEASE_IDLE / 2).await;
        assert_eq!(
            hasher.verify("correct horse", Some(&stored)).await,
            Verified::Yes
        );
        // Past the first hash's release time, but the verify renewed it.
        tokio::time::sleep(RELEASE_IDLE * 3 / 4).await;
        assert_eq!(pooled(&hasher), 1);
        tokio::time::sleep(RELEASE_IDLE / 2).await;
        assert_eq!(pooled(&hasher), 0);
        // The next login allocates afresh.
        assert_eq!(hasher.verify("wrong", Some(&stored)).await, Verified::No);
        assert_eq!(pooled(&hasher), 1);
    }
}
