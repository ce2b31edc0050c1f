//! Who a token belongs to across the mesh: tokens of other nodes accepted on their
//! signature, and a username held by one account mesh-wide.

use super::*;

/// Who a request or session is across the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshIdentity {
    /// The account on this node; `None` when the user's home is another node.
    pub user_id: Option<i64>,
    pub username: String,
    pub claims_jti: String,
    pub expires_at: i64,
}

impl AuthService {
    /// Who a token belongs to across the mesh: a token of this node is checked fully
    /// ([`AuthService::authenticate`]); with a mesh-wide secret, a token issued by
    /// another node is accepted on its signature and expiry (its account lives there).
    pub async fn identify(&self, token: &str) -> Result<MeshIdentity, AuthError> {
        if let Some(claims) = self.foreign_claims(token).await? {
            if !claims.scope.is_empty() {
                return Err(AuthError::Unauthenticated);
            }
            return Ok(MeshIdentity {
                user_id: None,
                username: claims.name,
                claims_jti: claims.jti,
                expires_at: claims.exp,
            });
        }
        let auth = self.authenticate(token).await?;
        self.ensure_name_held(&auth.user.username).await?;
        Ok(MeshIdentity {
            user_id: Some(auth.user.id),
            username: auth.user.username,
            claims_jti: auth.claims.jti,
            expires_at: auth.claims.exp,
        })
    }

    /// The claims of a token issued by another node of the mesh: `None` for a token of
    /// this node (or without a mesh-wide secret); an error when it is invalid or its home
    /// node revoked it.
    pub(super) async fn foreign_claims(&self, token: &str) -> Result<Option<Claims>, AuthError> {
        if !self.inner.mesh_wide {
            return Ok(None);
        }
        let Some(claims) = self.inner.keys.verify(token) else {
            return Ok(None);
        };
        if claims.home.is_empty() || claims.home == self.inner.node_id || claims.name.is_empty() {
            return Ok(None);
        }
        let (name, jti, iat) = (claims.name.clone(), claims.jti.clone(), claims.iat);
        let own = self.inner.node_id.clone();
        let (revoked, holder) = self
            .inner
            .db
            .mesh()
            .revocation_and_holder(&name, &jti, iat, &own)
            .await?;
        // One name, one person: a name held by an account of this node or of a third
        // node never speaks for the token's node here. A name no account known here
        // holds is accepted (the claim may still be on its way).
        if revoked || holder.is_some_and(|h| h != claims.home) {
            return Err(AuthError::Unauthenticated);
        }
        Ok(Some(claims))
    }

    /// Refuses an account of this node whose name an earlier account of another mesh
    /// node holds: the name, and every message to it, is that account's.
    pub(super) async fn ensure_name_held(&self, username: &str) -> Result<(), AuthError> {
        let (name, own) = (username.to_owned(), self.inner.node_id.clone());
        let holder = self.inner.db.mesh().name_holder(&name, &own).await?;
        match holder {
            Some(node) if node != self.inner.node_id => Err(AuthError::NameHeldElsewhere {
                name: username.to_owned(),
                node,
            }),
            _ => Ok(()),
        }
    }
}
