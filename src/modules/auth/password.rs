//! Owns password hashing: argon2id with OWASP parameters (m = 19 MiB, t = 2, p = 1),
//! run on blocking threads behind a semaphore so a login flood cannot take more than
//! `hash_concurrency × 19 MiB` of memory.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// OWASP password storage cheat sheet, argon2id option 2.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

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

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
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

fn hash_blocking(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

fn verify_blocking(password: &str, stored: &str) -> Verified {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verified::No;
    };
    // Constant-time comparison happens inside verify_password.
    if argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_err()
    {
        return Verified::No;
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
            dummy: Arc::default(),
        }
    }

    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|e| HashError(e.to_string()))?
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
        tokio::task::spawn_blocking(move || match stored {
            Some(stored) => verify_blocking(&password, &stored),
            None => {
                let dummy = dummy.get_or_init(|| {
                    let random: [u8; 16] = rand::random();
                    hash_blocking(&format!("{random:?}")).unwrap_or_default()
                });
                verify_blocking(&password, dummy);
                Verified::No
            }
        })
        .await
        .unwrap_or(Verified::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_rehash_detection() {
        let h = hash_blocking("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify_blocking("correct horse", &h), Verified::Yes);
        assert_eq!(verify_blocking("wrong horse", &h), Verified::No);
        assert_eq!(verify_blocking("x", "not a hash"), Verified::No);
        // A hash made with weaker parameters verifies but asks for a rehash.
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert_eq!(verify_blocking("correct horse", &weak), Verified::YesRehash);
    }
}
