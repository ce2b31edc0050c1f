//! Owns login tokens: HS256 JWTs with `sub` (user id), `iat`, `exp` and a random `jti`
//! that logout puts on the denylist.
//!
//! jsonwebtoken is built without a crypto backend feature; [`install_provider`] gives it
//! an HS256-only one (RustCrypto's hmac + sha2), so no RSA or elliptic-curve code ends
//! up in a binary that never uses them. Any other algorithm is refused.

use std::time::Duration;

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

struct Hs256(Hmac<Sha256>);

impl Hs256 {
    fn new(alg: &Algorithm, key: &[u8]) -> jsonwebtoken::errors::Result<Hs256> {
        if *alg != Algorithm::HS256 {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        Hmac::new_from_slice(key)
            .map(Hs256)
            .map_err(|_| ErrorKind::InvalidKeyFormat.into())
    }
}

impl signature::Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(msg);
        // Constant-time comparison.
        mac.verify_slice(sig).map_err(signature::Error::from_source)
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

static HS256_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: |alg, key| Ok(Box::new(Hs256::new(alg, key.as_bytes())?)),
    verifier_factory: |alg, key| Ok(Box::new(Hs256::new(alg, key.try_get_as_bytes()?)?)),
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes jsonwebtoken use the HS256-only provider. Idempotent; call before any token
/// is signed or verified (the auth service does so when it starts).
pub fn install_provider() {
    // Err means it is already installed, which is what we want.
    let _ = HS256_ONLY.install_default();
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string per RFC 7519.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The account's token generation at issue time (see `users.token_generation`).
    #[serde(default)]
    pub generation: i64,
    /// The username, the identity across a mesh.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The node that issued the token (the account's home).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub home: String,
    /// The account's random key (`users.account_key`): the token is valid only for the
    /// account that has it, never for a later account that got the same id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Empty for a login token; [`BOARD_SCOPE`] for the whiteboard page's credential,
    /// which only reaches the board topics on the broker and nothing over HTTP.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// The scope of the whiteboard page's short-lived broker credential.
pub const BOARD_SCOPE: &str = "board";

impl Claims {
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], lifetime: Duration) -> TokenKeys {
        install_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is exact: an operator who sets a 1 h lifetime expects 1 h.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            lifetime,
        }
    }

    /// A token limited to `scope`, valid for `lifetime` (at most the login lifetime).
    pub fn issue_scoped(
        &self,
        user_id: i64,
        generation: i64,
        (name, home, key): (&str, &str, &str),
        (scope, lifetime): (&str, Duration),
        now: i64,
    ) -> (String, Claims) {
        let lifetime = lifetime.min(self.lifetime);
        let claims = Claims {
            generation,
            name: name.to_owned(),
            home: home.to_owned(),
            key: key.to_owned(),
            scope: scope.to_owned(),
            sub: user_id.to_string(),
            iat: now,
            exp: now + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2),
            jti: crate::domain::ids::hex(16),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail");
        (token, claims)
    }

    /// Signature, algorithm and expiry check. Revocation is checked by the caller.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// Whether a password-field value looks like a JWT (MQTT clients may log in with one).
pub fn looks_like_jwt(s: &str) -> bool {
    s.len() > 20 && s.starts_with("eyJ") && s.matches('.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_tamper_expire() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let (token, claims) =
            keys.issue_scoped(42, 0, ("ann", "n1", "k1"), ("", Duration::MAX), now);
        assert!(looks_like_jwt(&token));
        assert_eq!(keys.verify(&token), Some(claims.clone()));
        assert_eq!(claims.user_id(), Some(42));
        // Another key does not accept it.
        let other = TokenKeys::new(
            b"another-key-another-key-another!!",
            Duration::from_secs(60),
        );
        assert_eq!(other.verify(&token), None);
        // A flipped character in the payload breaks the signature.
        let mut bad = token.clone().into_bytes();
        let i = token.find('.').unwrap() + 5;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.verify(&String::from_utf8(bad).unwrap()), None);
        // Expired.
        let (old, _) =
            keys.issue_scoped(42, 0, ("ann", "n1", "k1"), ("", Duration::MAX), now - 120);
        assert_eq!(keys.verify(&old), None);
        assert!(!looks_like_jwt("hunter22"));
        // Other algorithms are refused, whatever the key.
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        );
        assert!(hs512.is_err());
    }
}
