//! The console: the page an ops engineer keeps open beside `rollcall serve`.
//!
//! Without it, what the service is doing lives in logs, `/metrics` and the CLI on the service's
//! own machine. The console shows, under `/console` of the same service: each client's seats
//! and money now and over time, the runs with their reports, the jobs (a failed one with its
//! error and a button to queue it again), the OAuth connections waiting for a person's consent,
//! and the service's health.
//!
//! It is server-rendered HTML from handlebars templates shipped in `templates/console/`, with
//! charts drawn here as inline SVG: no script, no build step, nothing fetched from elsewhere
//! (the Content-Security-Policy forbids it). Everything but the login page needs sign-in
//! ([`auth`]: the shared token, or single sign-on through the staff's identity provider,
//! [`oidc`]); every form is checked for its CSRF token and origin before its handler runs.
//! Pages read the store, queue and pipelines the service already holds; the only writes are the
//! buttons' (a job queued again, an approval approved or rejected), each through the same
//! function the CLI calls.

pub mod approvals;
pub mod auth;
pub mod chart;
pub mod oidc;
pub mod views;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Form, OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{error, info, warn};

use approvals::Deciding;
pub use auth::Settings;
use auth::{Auth, SignedIn};

use crate::web::Service;

/// Largest form accepted: the console's forms are a token and a few fields.
const FORM_LIMIT: usize = 16 * 1024;

/// The pages, each a handlebars template rendered inside `layout`.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "layout",
        include_str!("../../../templates/console/layout.hbs"),
    ),
    (
        "login",
        include_str!("../../../templates/console/login.hbs"),
    ),
    (
        "clients",
        include_str!("../../../templates/console/clients.hbs"),
    ),
    (
        "client",
        include_str!("../../../templates/console/client.hbs"),
    ),
    ("runs", include_str!("../../../templates/console/runs.hbs")),
    ("jobs", include_str!("../../../templates/console/jobs.hbs")),
    (
        "connections",
        include_str!("../../../templates/console/connections.hbs"),
    ),
    (
        "health",
        include_str!("../../../templates/console/health.hbs"),
    ),
    (
        "message",
        include_str!("../../../templates/console/message.hbs"),
    ),
    (
        "approvals",
        include_str!("../../../templates/console/approvals.hbs"),
    ),
    (
        "approval",
        include_str!("../../../templates/console/approval.hbs"),
    ),
    (
        "decided",
        include_str!("../../../templates/console/decided.hbs"),
    ),
    (
        "signed_on",
        include_str!("../../../templates/console/signed_on.hbs"),
    ),
];

/// What every console handler shares.
pub struct Console {
    service: Arc<Service>,
    auth: Auth,
    pages: handlebars::Handlebars<'static>,
    deciding: Deciding,
    /// Single sign-on, when it is set up.
    oidc: Option<oidc::Oidc>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// The console's routes, to nest under `/console`, with its token from the environment.
pub fn router<S: Clone + Send + Sync + 'static>(service: Arc<Service>) -> Router<S> {
    router_with(service, &Settings::from_env())
}

/// The console's routes with `settings`.
pub fn router_with<S: Clone + Send + Sync + 'static>(
    service: Arc<Service>,
    settings: &Settings,
) -> Router<S> {
    let console = Arc::new(Console {
        service,
        auth: Auth::new(settings),
        pages: pages(),
        deciding: Deciding::default(),
        oidc: match &settings.oidc {
            Some(Ok(s)) => {
                info!(issuer = %s.issuer, "Single sign-on to the console is on.");
                Some(oidc::Oidc::new(s.clone()))
            }
            Some(Err(why)) => {
                warn!(
                    why,
                    "Single sign-on to the console is off: its settings are incomplete."
                );
                None
            }
            None => None,
        },
    });
    match console.auth.off_because() {
        Some(why) => info!(why, "The console at /console is off."),
        None => info!("The console is on at /console."),
    }
    let signed_in = Router::new()
        .route("/", get(clients))
        .route("/clients/{pipeline}/{client}", get(client))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run_report))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}/retry", post(retry))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", get(approvals::show))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/reject", post(approvals::reject))
        .route("/connections", get(connections))
        .route("/health", get(health))
        .route("/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            require_sign_in,
        ));
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/sso", get(oidc::start))
        .route("/sso/callback", get(oidc::callback))
        .merge(signed_in)
        .layer(middleware::map_response(security_headers))
        .with_state(console)
}

fn pages() -> handlebars::Handlebars<'static> {
    let mut hb = handlebars::Handlebars::new();
    hb.set_strict_mode(true);
    for (name, text) in TEMPLATES {
        // Shipped templates, checked by the console's tests: a broken one is a bug in rollcall.
        hb.register_template_string(name, *text)
            .unwrap_or_else(|e| panic!("templates/console/{name}.hbs: {e}"));
    }
    hb
}

/// No script, nothing from elsewhere, no framing; nothing cached (pages show money).
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Lets a signed-in request through (with who signed it in, for the handlers); checks every
/// POST's origin and CSRF token first. Anyone else gets 401, or, from a browser, the login page.
async fn require_sign_in(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = chrono::Utc::now().timestamp();
    let Some(who) = console.auth.signed_in(request.headers(), now) else {
        return refuse(&request);
    };
    if request.method() == Method::POST {
        if auth::cross_site(request.headers()) {
            warn!("Refused a console form sent from another site.");
            return console.message(
                StatusCode::FORBIDDEN,
                "Refused",
                "This form was sent from another site. Open the console and use its own buttons.",
                Some(&who),
            );
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        if !console
            .auth
            .csrf_ok(&who, form_field(&bytes, auth::CSRF_FIELD))
        {
            warn!("Refused a console form without its session's CSRF token.");
            return console.message(
                StatusCode::FORBIDDEN,
                "Refused",
                "This form's security token is missing or out of date (the page was opened before you signed in again). Reload the page and try again.",
                Some(&who),
            );
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(who);
    next.run(request).await
}

/// The raw value of `name` in a URL-encoded form (the CSRF token is hex: nothing to decode).
fn form_field<'b>(body: &'b Bytes, name: &str) -> Option<&'b str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// 401 for scripts (and anyone who sent a wrong bearer token), the login page for browsers.
fn refuse(request: &Request) -> Response {
    let headers = request.headers();
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser && !headers.contains_key(header::AUTHORIZATION) && request.method() == Method::GET {
        let here = request
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| request.uri().to_string(), |u| u.0.to_string());
        return Redirect::to(&format!(
            "/console/login?next={}",
            auth::encode_component(&here)
        ))
        .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"rollcall console\"",
        )],
        "sign in: send `Authorization: Bearer <ROLLCALL_CONSOLE_TOKEN>`, or open /console/login in a browser\n",
    )
        .into_response()
}

impl Console {
    /// Renders `template` inside the layout; `page` is what the template reads as `page.*`.
    fn render(
        &self,
        template: &str,
        nav: &str,
        who: Option<&SignedIn>,
        page: impl Serialize,
    ) -> Response {
        self.render_status(StatusCode::OK, template, nav, who, page)
    }

    fn render_status(
        &self,
        status: StatusCode,
        template: &str,
        nav: &str,
        who: Option<&SignedIn>,
        page: impl Serialize,
    ) -> Response {
        let context = json!({
            "nav": nav,
            "signed_in": who.is_some(),
            "csrf": who.map(|w| self.auth.csrf(w)).unwrap_or_default(),
            "page": page,
        });
        // Directory and vendor text: no control or bidi characters reach the page.
        let rendered = crate::report::clean_json_value(&context)
            .map_err(|e| e.to_string())
            .and_then(|c| self.pages.render(template, &c).map_err(|e| e.to_string()));
        match rendered {
            Ok(html) => (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
            Err(e) => {
                error!(template, error = %e, "A console page could not be rendered.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered; the service's log says why\n",
                )
                    .into_response()
            }
        }
    }

    fn message(
        &self,
        status: StatusCode,
        title: &str,
        text: &str,
        who: Option<&SignedIn>,
    ) -> Response {
        self.render_status(
            status,
            "message",
            "",
            who,
            json!({ "title": title, "text": text }),
        )
    }

    /// An internal failure: logged once here; the person sees what failed, not the details.
    fn failed(&self, what: &str, e: &dyn std::fmt::Display, who: &SignedIn) -> Response {
        error!(error = %e, "The console could not read {what}.");
        self.message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something failed",
            &format!("The console could not read {what}; the service's log says why."),
            Some(who),
        )
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    #[serde(default)]
    signed_out: Option<String>,
}

async fn login_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = auth::safe_next(q.next.as_deref());
    if console
        .auth
        .signed_in(&headers, chrono::Utc::now().timestamp())
        .is_some()
    {
        return Redirect::to(&next).into_response();
    }
    console.render(
        "login",
        "",
        None,
        json!({
            "next": next,
            "off": console.auth.off_because(),
            "error": null,
            "signed_out": q.signed_out.is_some(),
            "sso": console.oidc.is_some(),
            "next_query": auth::encode_component(&next),
        }),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = auth::safe_next(form.next.as_deref());
    if auth::cross_site(&headers) {
        warn!("Refused a console sign-in sent from another site.");
        return console.message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This sign-in was sent from another site. Open the console's own login page.",
            None,
        );
    }
    let now = chrono::Utc::now().timestamp();
    match console
        .auth
        .is_token(&form.token)
        .then(|| console.auth.new_session(now))
        .flatten()
    {
        Some(session) => {
            info!("Signed in to the console.");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, auth::session_cookie(&session, &headers)),
                    (header::LOCATION, next),
                ],
            )
                .into_response()
        }
        None => {
            warn!("Refused a console sign-in with a wrong token.");
            // Slows a guesser down; the token's length is what keeps it out.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            console.render_status(
                StatusCode::UNAUTHORIZED,
                "login",
                "",
                None,
                json!({
                        "next": next,
                        "off": console.auth.off_because(),
                        "error": "That is not the console's token.",
                        "signed_out": false,
                        "sso": console.oidc.is_some(),
                        "next_query": auth::encode_component(&next),
                "next_query": auth::encode_component(&next),
                    }),
            )
        }
    }
}

async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    console
        .auth
        .sign_out(&headers, chrono::Utc::now().timestamp());
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, auth::cleared_cookie(&headers)),
            (header::LOCATION, "/console/login?signed_out=1".to_owned()),
        ],
    )
        .into_response()
}

async fn clients(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
) -> Response {
    match views::clients(&console.service).await {
        Ok(mut rows) => {
            let pending = pending_approvals(&console).await;
            for row in &mut rows {
                row.approval = pending
                    .get(&(row.pipeline.clone(), row.client.clone()))
                    .cloned();
            }
            console.render("clients", "clients", Some(&who), json!({ "clients": rows }))
        }
        Err(e) => console.failed("the clients", &e, &who),
    }
}

async fn client(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
    Path((pipeline, client)): Path<(String, String)>,
) -> Response {
    let Some(found) = views::find(&console.service, &pipeline, &client) else {
        return console.message(
            StatusCode::NOT_FOUND,
            "No such client",
            &format!("No pipeline `{pipeline}` serves a client `{client}` here."),
            Some(&who),
        );
    };
    match views::client_page(&console.service, found, &client).await {
        Ok(mut page) => {
            page.approval = pending_approvals(&console)
                .await
                .remove(&(page.pipeline.clone(), page.client.clone()));
            console.render("client", "clients", Some(&who), page)
        }
        Err(e) => console.failed("the client's runs", &e, &who),
    }
}

/// Each client's pending approval; a store that cannot say leaves the pages without links.
async fn pending_approvals(
    console: &Console,
) -> std::collections::HashMap<(String, String), views::PendingLink> {
    match approvals::pending_of(console).await {
        Ok(pending) => pending
            .into_iter()
            .map(|(k, id)| {
                let href = approvals::href(&id);
                (k, views::PendingLink { id, href })
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "The console could not read the pending approvals.");
            Default::default()
        }
    }
}

async fn runs(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
) -> Response {
    match crate::runs::recent(&console.service.store, 100).await {
        Ok(runs) => console.render("runs", "runs", Some(&who), json!({ "runs": runs })),
        Err(e) => console.failed("the runs", &e, &who),
    }
}

/// A run's report: the page the run wrote beside the store, or made again from the record.
async fn run_report(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
    Path(id): Path<String>,
) -> Response {
    let store = &console.service.store;
    // Run ids name a file beside the store: nothing that could leave its directory.
    let plausible = !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    let recorded = if plausible {
        match store.has_run(&id).await {
            Ok(known) => known,
            Err(e) => return console.failed("the run", &e, &who),
        }
    } else {
        false
    };
    if !recorded {
        return console.message(
            StatusCode::NOT_FOUND,
            "No such run",
            &format!("No run `{id}` is recorded in this store."),
            Some(&who),
        );
    }
    let page = match tokio::fs::read_to_string(store.report_path(&id)).await {
        Ok(html) => Ok(html),
        Err(_) => match crate::engine::recorded_report(store, &id).await {
            Ok(Some(report)) => {
                crate::report::run_report::html(&report, crate::report::run_report::TEMPLATE)
            }
            Ok(None) => Err("the run kept no report".to_owned()),
            Err(e) => Err(e.to_string()),
        },
    };
    match page {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => console.message(
            StatusCode::NOT_FOUND,
            "No report",
            &format!("Run {id} has no report to show: {e}."),
            Some(&who),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    #[serde(default)]
    failed: Option<String>,
    #[serde(default)]
    retried: Option<String>,
}

async fn jobs(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
    Query(q): Query<JobsQuery>,
) -> Response {
    let failed_only = q.failed.is_some();
    match views::jobs(&console.service, failed_only).await {
        Ok(jobs) => console.render(
            "jobs",
            "jobs",
            Some(&who),
            json!({ "jobs": jobs, "failed_only": failed_only, "retried": q.retried }),
        ),
        Err(e) => console.failed("the queue", &e, &who),
    }
}

async fn retry(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
    Path(id): Path<String>,
) -> Response {
    use crate::queue::QueueError;
    match console.service.queue.retry(&id).await {
        Ok(job) => {
            info!(job = %id, client = %job.client, "Queued a failed job again from the console.");
            Redirect::to(&format!(
                "/console/jobs?retried={}",
                auth::encode_component(&id)
            ))
            .into_response()
        }
        Err(e @ (QueueError::NotFailed { .. } | QueueError::NoSuchJob(_))) => console.message(
            StatusCode::CONFLICT,
            "Not retried",
            &e.to_string(),
            Some(&who),
        ),
        Err(e) => console.failed("the queue", &e, &who),
    }
}

async fn connections(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
) -> Response {
    let connections = views::connections(&console.service).await;
    console.render(
        "connections",
        "connections",
        Some(&who),
        json!({ "connections": connections }),
    )
}

async fn health(
    State(console): State<Arc<Console>>,
    Extension(who): Extension<SignedIn>,
) -> Response {
    let health = views::health(&console.service).await;
    console.render("health", "health", Some(&who), health)
}

#[cfg(test)]
mod tests;
