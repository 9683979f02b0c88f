//! Single sign-on for the console: MSP staff sign in with their own account at the identity
//! provider (Microsoft's, Okta, Keycloak, Google: any OpenID Connect provider) instead of typing
//! the shared token, so an approval records who approved it.
//!
//! The authorization code flow with PKCE, for a confidential client: the browser is sent to
//! the provider with a random `state`, `nonce` and code challenge, which are kept in a short,
//! signed cookie; the provider sends the browser back with a code, which the service exchanges
//! at the provider's token endpoint (with its client secret and the code verifier) for an ID
//! token. That token comes straight from the provider over TLS, to a client that authenticated
//! itself, so its issuer is the one the service called (OpenID Connect Core 3.1.3.7 lets TLS
//! stand in for the token's signature in this flow); its issuer, audience, expiry and nonce
//! are checked, and its email (or username) must be on the allow list. Then the console's own
//! session cookie is set, naming the person.
//!
//! The shared token still signs in scripts (bearer) and is the way in when the provider is
//! down; the session keys are derived from it, so single sign-on needs it set too.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rollcall_core::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;
use tracing::{info, warn};

use super::Console;
use super::auth::{self, encode_component};

/// The cookie that carries a sign-on under way (state, nonce, code verifier, where to go).
const FLOW_COOKIE: &str = "rollcall_console_sso";
/// How long a person has at the provider before the sign-on must start again.
const FLOW_SECONDS: i64 = 600;

/// Single sign-on's settings, from `ROLLCALL_CONSOLE_OIDC_*`.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The provider's issuer URL (`https://login.microsoftonline.com/TENANT/v2.0`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Where the provider sends the browser back: `https://HOST/console/sso/callback`,
    /// registered at the provider as the application's redirect URI.
    pub redirect_url: String,
    /// Who may sign in: email addresses, or `@domain` for everyone of a domain.
    pub allow: Vec<String>,
}

impl OidcSettings {
    /// From the environment: `None` when `ROLLCALL_CONSOLE_OIDC_ISSUER` is not set; an error
    /// naming what is missing or wrong when it is set but incomplete.
    pub fn from_env() -> Option<Result<OidcSettings, String>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let issuer = var("ROLLCALL_CONSOLE_OIDC_ISSUER")?;
        let need = |name: &str| var(name).ok_or_else(|| format!("{name} is not set"));
        Some((|| {
            let settings = OidcSettings {
                issuer: issuer.trim().trim_end_matches('/').to_owned(),
                client_id: need("ROLLCALL_CONSOLE_OIDC_CLIENT_ID")?,
                client_secret: Secret::new(need("ROLLCALL_CONSOLE_OIDC_CLIENT_SECRET")?),
                redirect_url: need("ROLLCALL_CONSOLE_OIDC_REDIRECT_URL")?,
                allow: need("ROLLCALL_CONSOLE_OIDC_ALLOW")?
                    .split(',')
                    .map(|a| a.trim().to_lowercase())
                    .filter(|a| !a.is_empty())
                    .collect(),
            };
            settings.check()?;
            Ok(settings)
        })())
    }

    fn check(&self) -> Result<(), String> {
        for (name, url) in [
            ("ROLLCALL_CONSOLE_OIDC_ISSUER", &self.issuer),
            ("ROLLCALL_CONSOLE_OIDC_REDIRECT_URL", &self.redirect_url),
        ] {
            // Plain http only on this machine (a lab provider); anywhere else the code and the
            // token would cross the network readable.
            let host = url
                .strip_prefix("http://")
                .map(|rest| rest.split('/').next().unwrap_or_default());
            let ok = url.starts_with("https://")
                || host.is_some_and(|h| {
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        header::HOST,
                        h.parse()
                            .unwrap_or(axum::http::HeaderValue::from_static("")),
                    );
                    auth::loopback_http(&headers)
                });
            if !ok {
                return Err(format!(
                    "{name} `{url}` must be an https address (http only on localhost)"
                ));
            }
        }
        if !self.redirect_url.ends_with("/console/sso/callback") {
            return Err(format!(
                "ROLLCALL_CONSOLE_OIDC_REDIRECT_URL `{}` must end in /console/sso/callback",
                self.redirect_url
            ));
        }
        if self.allow.is_empty() {
            return Err("ROLLCALL_CONSOLE_OIDC_ALLOW names nobody".into());
        }
        Ok(())
    }

    /// Whether `who` (an email or username the provider vouched for) may sign in.
    pub fn allows(&self, who: &str) -> bool {
        let who = who.trim().to_lowercase();
        !who.is_empty()
            && self.allow.iter().any(|a| {
                if a.starts_with('@') {
                    who.ends_with(a.as_str())
                } else {
                    *a == who
                }
            })
    }
}

/// Where the provider's endpoints are, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
struct Provider {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// Single sign-on as the console runs it.
pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    /// Discovered once; a failed discovery is tried again at the next sign-in.
    provider: tokio::sync::Mutex<Option<Provider>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Oidc {
        Oidc {
            settings,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            provider: tokio::sync::Mutex::new(None),
        }
    }

    async fn provider(&self) -> Result<Provider, String> {
        let mut cached = self.provider.lock().await;
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
        let found: Provider = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("the identity provider's discovery document ({url}): {e}"))?
            .json()
            .await
            .map_err(|e| format!("the identity provider's discovery document ({url}): {e}"))?;
        if found.issuer.trim_end_matches('/') != self.settings.issuer {
            return Err(format!(
                "the identity provider at {url} calls itself `{}`, not `{}`",
                found.issuer, self.settings.issuer
            ));
        }
        *cached = Some(found.clone());
        Ok(found)
    }
}

fn random() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The sign-on cookie's `Set-Cookie`: `Lax`, since the provider sends the browser back with a
/// top-level GET from its own site, which a `Strict` cookie would not go with.
fn flow_cookie(value: &str, max_age: i64, headers: &HeaderMap) -> String {
    let secure = if auth::loopback_http(headers) {
        ""
    } else {
        "; Secure"
    };
    format!(
        "{FLOW_COOKIE}={value}; Path=/console/sso; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    )
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `/console/sso`: off to the identity provider.
pub async fn start(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some(oidc) = &console.oidc else {
        return console.message(
            StatusCode::NOT_FOUND,
            "Single sign-on is off",
            "Single sign-on is not set up for this console (ROLLCALL_CONSOLE_OIDC_ISSUER and the rest); sign in with the console token.",
            None,
        );
    };
    let provider = match oidc.provider().await {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "Cannot reach the identity provider for a console sign-in.");
            return console.message(
                StatusCode::BAD_GATEWAY,
                "Cannot reach the identity provider",
                "The identity provider did not answer as expected (the service's log says why). Try again, or sign in with the console token.",
                None,
            );
        }
    };
    let (state, nonce, verifier) = (random(), random(), random());
    let next = auth::safe_next(q.next.as_deref());
    let now = chrono::Utc::now().timestamp();
    let Some(sealed) = console.auth.seal(
        "sso",
        &format!("{}|{state}|{nonce}|{verifier}|{next}", now + FLOW_SECONDS),
    ) else {
        return console.message(
            StatusCode::UNAUTHORIZED,
            "The console is off",
            "Single sign-on needs the console on: set ROLLCALL_CONSOLE_TOKEN too.",
            None,
        );
    };
    let challenge = b64url(&sha2::Sha256::digest(verifier.as_bytes()));
    let s = &oidc.settings;
    let to = format!(
        "{}{}response_type=code&client_id={}&redirect_uri={}&scope=openid%20email%20profile&state={state}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
        provider.authorization_endpoint,
        if provider.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        },
        encode_component(&s.client_id),
        encode_component(&s.redirect_url).replace('/', "%2F"),
    );
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                flow_cookie(&sealed, FLOW_SECONDS, &headers),
            ),
            (header::LOCATION, to),
        ],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Why a sign-on was refused: the person sees `shown`; the log gets `why`.
struct Refused {
    shown: &'static str,
    why: String,
}

fn refused(shown: &'static str, why: impl Into<String>) -> Refused {
    Refused {
        shown,
        why: why.into(),
    }
}

/// `/console/sso/callback`: the provider sends the browser back here with a code.
pub async fn callback(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = &console.oidc else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let now = chrono::Utc::now().timestamp();
    match signed_on(&console, oidc, &headers, &q, now).await {
        Ok((user, next)) => {
            let Some(session) = console.auth.new_session_as(now, &user) else {
                return StatusCode::UNAUTHORIZED.into_response();
            };
            info!(user = %user, "Signed in to the console through single sign-on.");
            // A page with a link, not a redirect: the browser came from the provider's site,
            // and a `SameSite=Strict` cookie set on a redirect chain that began there would not
            // go with the next request. Following the link is a navigation from the console.
            let mut response = console.render(
                "signed_on",
                "",
                None,
                json!({ "title": "Signed in", "user": user, "next": next }),
            );
            let h = response.headers_mut();
            for cookie in [
                auth::session_cookie(&session, &headers),
                flow_cookie("", 0, &headers),
            ] {
                if let Ok(v) = cookie.parse() {
                    h.append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Err(r) => {
            warn!(why = %r.why, "Refused a console sign-in through single sign-on.");
            let mut response =
                console.message(StatusCode::FORBIDDEN, "Not signed in", r.shown, None);
            if let Ok(v) = flow_cookie("", 0, &headers).parse() {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
    }
}

async fn signed_on(
    console: &Console,
    oidc: &Oidc,
    headers: &HeaderMap,
    q: &CallbackQuery,
    now: i64,
) -> Result<(String, String), Refused> {
    const AGAIN: &str =
        "The sign-in did not complete. Open the console's login page and sign in again.";
    if let Some(e) = &q.error {
        return Err(refused(
            "The identity provider did not sign you in. Open the console's login page and try again, or ask your administrator to assign you the application.",
            format!(
                "the provider answered {e}: {}",
                q.error_description.as_deref().unwrap_or_default()
            ),
        ));
    }
    let flow = auth::cookie(headers, FLOW_COOKIE)
        .and_then(|c| console.auth.unseal("sso", c))
        .ok_or_else(|| {
            refused(
                AGAIN,
                "no intact sign-on cookie (expired, or another browser)",
            )
        })?;
    let mut parts = flow.splitn(5, '|');
    let (Some(until), Some(state), Some(nonce), Some(verifier), Some(next)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(refused(AGAIN, "a sign-on cookie of another form"));
    };
    if until.parse::<i64>().ok().is_none_or(|u| u < now) {
        return Err(refused(AGAIN, "the sign-on took longer than ten minutes"));
    }
    if !q
        .state
        .as_deref()
        .is_some_and(|s| crate::web::signature::same_secret(s, state))
    {
        return Err(refused(AGAIN, "the state sent back is not this browser's"));
    }
    let code = q
        .code
        .as_deref()
        .ok_or_else(|| refused(AGAIN, "no code sent back"))?;
    let provider = oidc
        .provider()
        .await
        .map_err(|e| refused("The identity provider cannot be reached. Try again, or sign in with the console token.", e))?;
    let s = &oidc.settings;
    let answer = oidc
        .http
        .post(&provider.token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", s.redirect_url.as_str()),
            ("code_verifier", verifier),
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.client_secret.expose()),
        ])
        .send()
        .await
        .map_err(|e| refused("The identity provider cannot be reached. Try again, or sign in with the console token.", format!("token endpoint: {e}")))?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(refused(
            AGAIN,
            format!(
                "the token endpoint answered {status}: {}",
                body["error"].as_str().unwrap_or_default()
            ),
        ));
    }
    let claims = body["id_token"]
        .as_str()
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or_else(|| refused(AGAIN, "the token endpoint sent no readable ID token"))?;
    if claims["iss"].as_str().map(|i| i.trim_end_matches('/')) != Some(s.issuer.as_str()) {
        return Err(refused(
            AGAIN,
            format!("the ID token's issuer is {}", claims["iss"]),
        ));
    }
    let audience_ok = match &claims["aud"] {
        Value::String(a) => *a == s.client_id,
        Value::Array(list) => list.iter().any(|a| a.as_str() == Some(&s.client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err(refused(
            AGAIN,
            format!("the ID token is for {}", claims["aud"]),
        ));
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp < now) {
        return Err(refused(AGAIN, "the ID token has expired"));
    }
    if claims["nonce"].as_str() != Some(nonce) {
        return Err(refused(AGAIN, "the ID token's nonce is not this sign-on's"));
    }
    let user = ["email", "preferred_username", "upn"]
        .iter()
        .find_map(|k| claims[*k].as_str().filter(|v| !v.trim().is_empty()))
        .map(|u| u.trim().to_owned())
        .ok_or_else(|| refused("The identity provider did not say who you are (no email or username). Ask your administrator to add the email claim.", "no email, preferred_username or upn in the ID token"))?;
    if !s.allows(&user) {
        return Err(refused(
            "Your account may not use this console. Ask the console's administrator to add it to ROLLCALL_CONSOLE_OIDC_ALLOW.",
            format!("{user} is not on the allow list"),
        ));
    }
    Ok((user, next.to_owned()))
}
