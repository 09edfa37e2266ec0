//! Who the client is to GitHub. A token (a user's or a fine-grained one,
//! read from an environment variable at start-up) is used as is. A GitHub
//! App signs a JWT (RS256, from its private key file) to find the
//! installation on a repository (`GET /repos/{o}/{r}/installation`, cached)
//! and to get that installation's token (`POST /app/installations/{id}/
//! access_tokens`), cached per installation and replaced when less than ten
//! minutes remain, or at once when GitHub refuses it (`invalidate`). Tokens
//! only ever live in [`Secret`]s; nothing here logs one.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::client::{Api, escape};
use crate::core::codehost::{HostError, RepoName, Secret};

/// An installation token is replaced when less than this remains.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(10 * 60);

/// How the client authenticates.
#[derive(Clone)]
pub enum Credentials {
    Token(Secret),
    App { app_id: u64, key: AppKey },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::App { app_id, .. } => write!(f, "App {{ app_id: {app_id}, key: *** }}"),
        }
    }
}

/// A GitHub App's private key, ready to sign.
#[derive(Clone)]
pub struct AppKey(jsonwebtoken::EncodingKey);

impl AppKey {
    /// The PEM GitHub hands out (PKCS#1 `RSA PRIVATE KEY`; PKCS#8 too).
    pub fn from_pem(pem: &[u8]) -> Result<AppKey, String> {
        jsonwebtoken::EncodingKey::from_rsa_pem(pem)
            .map(AppKey)
            .map_err(|e| format!("not an RSA private key in PEM: {e}"))
    }
}

/// An installation token and when it expires.
struct Cached {
    token: Secret,
    expires_at: SystemTime,
}

/// The credentials with the App's caches.
pub struct Auth {
    credentials: Credentials,
    /// Repository (`owner/name`, lower case) → installation id.
    installations: Mutex<HashMap<String, u64>>,
    /// Installation id → its token. One lock: one refresh at a time.
    tokens: Mutex<HashMap<u64, Cached>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct InstallationJson {
    id: u64,
}

#[derive(Deserialize)]
struct TokenJson {
    token: String,
    expires_at: String,
}

impl Auth {
    pub fn new(credentials: Credentials) -> Auth {
        Auth {
            credentials,
            installations: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_app(&self) -> bool {
        matches!(self.credentials, Credentials::App { .. })
    }

    /// A JWT for the App itself (`GET /app`, installations, tokens): valid
    /// ten minutes from a minute ago (GitHub's limit, with clock drift).
    pub fn app_jwt(&self) -> Result<Secret, HostError> {
        let Credentials::App { app_id, key } = &self.credentials else {
            return Err(HostError::Unauthorized("not a GitHub App".into()));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims =
            serde_json::json!({"iat": now - 60, "exp": now + 540, "iss": app_id.to_string()});
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        jsonwebtoken::encode(&header, &claims, &key.0)
            .map(Secret::new)
            .map_err(|e| HostError::Unauthorized(format!("cannot sign the App's JWT: {e}")))
    }

    /// The bearer for calls on `repo`: the token, or the App's installation
    /// token for that repository.
    pub async fn bearer(&self, api: &Api, repo: &RepoName) -> Result<Secret, HostError> {
        match &self.credentials {
            Credentials::Token(token) => Ok(token.clone()),
            Credentials::App { .. } => {
                let installation = self.installation(api, repo).await?;
                match self.installation_token(api, installation).await {
                    // Uninstalled since (and maybe installed again): find
                    // the installation anew, once.
                    Err(HostError::NotFound(_)) => {
                        self.installations
                            .lock()
                            .await
                            .remove(&repo.to_string().to_lowercase());
                        let installation = self.installation(api, repo).await?;
                        self.installation_token(api, installation).await
                    }
                    other => other,
                }
            }
        }
    }

    /// The App's installation on `repo`, found once.
    pub async fn installation(&self, api: &Api, repo: &RepoName) -> Result<u64, HostError> {
        let key = repo.to_string().to_lowercase();
        if let Some(id) = self.installations.lock().await.get(&key) {
            return Ok(*id);
        }
        let path = format!(
            "/repos/{}/{}/installation",
            escape(&repo.owner, false),
            escape(&repo.name, false)
        );
        let reply = api.send(Method::GET, &path, &self.app_jwt()?, None).await?;
        if reply.status == 404 {
            return Err(HostError::NotFound(format!(
                "the GitHub App is not installed on {repo}: install it there"
            )));
        }
        if !reply.ok() {
            return Err(reply.error(&format!("finding the App's installation on {repo}")));
        }
        let found: InstallationJson = serde_json::from_value(reply.body)
            .map_err(|e| HostError::Unavailable(format!("an installation GitHub sent: {e}")))?;
        self.installations.lock().await.insert(key, found.id);
        Ok(found.id)
    }

    /// The installation's token, new when the cached one has less than ten
    /// minutes left.
    async fn installation_token(&self, api: &Api, installation: u64) -> Result<Secret, HostError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(cached) = tokens.get(&installation)
            && cached.expires_at > SystemTime::now() + REFRESH_BEFORE
        {
            return Ok(cached.token.clone());
        }
        let path = format!("/app/installations/{installation}/access_tokens");
        let reply = api
            .send(Method::POST, &path, &self.app_jwt()?, None)
            .await?;
        if !reply.ok() {
            return Err(reply.error(&format!("a token for installation {installation}")));
        }
        let json: TokenJson = serde_json::from_value(reply.body)
            .map_err(|e| HostError::Unavailable(format!("a token GitHub sent: {e}")))?;
        let expires_at = humantime::parse_rfc3339(&json.expires_at).map_err(|e| {
            HostError::Unavailable(format!(
                "a token's expiry GitHub sent ({}): {e}",
                json.expires_at
            ))
        })?;
        let token = Secret::new(json.token);
        tracing::info!(installation, expires_at = %json.expires_at, "new GitHub App installation token");
        tokens.insert(
            installation,
            Cached {
                token: token.clone(),
                expires_at,
            },
        );
        Ok(token)
    }

    /// GitHub refused `repo`'s installation token (401): forget it, so the
    /// next [`Auth::bearer`] gets a new one. Returns whether there was one
    /// to forget (a token's 401 is final).
    pub async fn invalidate(&self, repo: &RepoName) -> bool {
        if !self.is_app() {
            return false;
        }
        let key = repo.to_string().to_lowercase();
        let Some(installation) = self.installations.lock().await.get(&key).copied() else {
            return false;
        };
        self.tokens.lock().await.remove(&installation).is_some()
    }
}
