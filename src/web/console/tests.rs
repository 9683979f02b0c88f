//! The console's sign-in and form checks, in process: every page refuses a stranger, and
//! every page renders (its template is strict: a field it names that the page lacks fails).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use rollcall_core::Secret;
use tower::ServiceExt as _;

use super::{Settings, router_with};
use crate::web::{Secrets, Service, ServiceParts};

const TOKEN: &str = "console-token-for-unit-tests";

struct Fixture {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

async fn fixture(token: Option<&str>) -> Fixture {
    fixture_with(Settings {
        token: token.map(Secret::new),
        oidc: None,
    })
    .await
}

async fn fixture_with(settings: Settings) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(&dir.path().join("state.db"))
        .await
        .expect("store");
    let queue = crate::queue::Queue::open(
        &crate::queue::QueueLocation::Sqlite(dir.path().join("queue.db")),
        crate::queue::Liveness::default(),
    )
    .await
    .expect("queue");
    let service = Service::new(ServiceParts {
        pipelines: Vec::new(),
        store,
        queue,
        secrets: Secrets::default(),
        debounce: std::time::Duration::from_secs(1),
        metrics: Arc::default(),
        public_url: None,
    });
    Fixture {
        app: axum::Router::new().nest("/console", router_with(service, &settings)),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Fixture {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut r = Request::get(path).header(header::HOST, "127.0.0.1:8080");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r.body(Body::empty()).expect("request")).await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], form: &str) -> Answer {
        let mut r = Request::post(path)
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r.body(Body::from(form.to_owned())).expect("request"))
            .await
    }

    /// Signs in through the login form; the session's `Cookie` header and its CSRF token.
    async fn sign_in(&self) -> (String, String) {
        let a = self
            .post(
                "/console/login",
                &[("origin", "http://127.0.0.1:8080")],
                &format!("token={TOKEN}&next=%2Fconsole%2Fjobs"),
            )
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(a.headers[header::LOCATION], "/console/jobs");
        let set = a.headers[header::SET_COOKIE].to_str().expect("cookie");
        let cookie = set.split(';').next().expect("pair").to_owned();
        let page = self.get("/console/jobs", &[("cookie", &cookie)]).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = page
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a csrf field")
            .to_owned();
        (cookie, csrf)
    }
}

const PAGES: &[&str] = &[
    "/console",
    "/console/runs",
    "/console/jobs",
    "/console/jobs?failed=1",
    "/console/connections",
    "/console/health",
    "/console/approvals",
    "/console/approvals?state=all",
    "/console/approvals?state=rejected",
];

#[tokio::test]
async fn without_sign_in_every_page_is_refused_401_or_sent_to_the_login_page() {
    let f = fixture(Some(TOKEN)).await;
    for page in PAGES {
        let api = f.get(page, &[]).await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{page}");
        assert!(api.headers.contains_key(header::WWW_AUTHENTICATE), "{page}");
        let wrong = f
            .get(page, &[("authorization", "Bearer not-the-token-at-all")])
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{page}");
        let browser = f.get(page, &[("accept", "text/html,*/*")]).await;
        assert_eq!(browser.status, StatusCode::SEE_OTHER, "{page}");
        let to = browser.headers[header::LOCATION]
            .to_str()
            .expect("location");
        assert!(to.starts_with("/console/login?next=/console"), "{to}");
        assert!(
            !browser.body.contains("Clients"),
            "nothing of the page leaks"
        );
    }
    // A forged or stale cookie is nobody.
    let forged = f
        .get(
            "/console",
            &[("cookie", "rollcall_console=v1.99999999999.abc.def")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    // The buttons too.
    let post = f.post("/console/jobs/x/retry", &[], "csrf=00").await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    // The login page itself is open, and the token is nowhere in it.
    let login = f.get("/console/login", &[]).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("name=\"token\""), "{}", login.body);
    assert!(!login.body.contains(TOKEN));
}

#[tokio::test]
async fn the_bearer_token_opens_every_page() {
    let f = fixture(Some(TOKEN)).await;
    let bearer = format!("Bearer {TOKEN}");
    for page in PAGES {
        let a = f.get(page, &[("authorization", &bearer)]).await;
        assert_eq!(a.status, StatusCode::OK, "{page}: {}", a.body);
        assert!(a.body.contains("<nav>"), "{page}");
        let csp = a.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    }
    let no_run = f
        .get(
            "/console/runs/does-not-exist",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(no_run.status, StatusCode::NOT_FOUND);
    let traversal = f
        .get(
            "/console/runs/..%2F..%2Fetc%2Fpasswd",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(traversal.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_login_form_sets_a_strict_http_only_cookie_and_refuses_a_wrong_token() {
    let f = fixture(Some(TOKEN)).await;
    let wrong = f
        .post("/console/login", &[], "token=guess-guess-guess-guess")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!wrong.headers.contains_key(header::SET_COOKIE));
    assert!(
        wrong.body.contains("not the console&#x27;s token"),
        "{}",
        wrong.body
    );
    let right = f
        .post(
            "/console/login",
            &[],
            &format!("token={TOKEN}&next=https%3A%2F%2Fevil.example"),
        )
        .await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(
        right.headers[header::LOCATION],
        "/console",
        "no open redirect"
    );
    let cookie = right.headers[header::SET_COOKIE].to_str().expect("cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "loopback http: {cookie}");
    assert!(!cookie.contains(TOKEN), "the cookie holds no token");
    // Reached by its public name (behind a TLS proxy): Secure.
    let public = f
        .send(
            Request::post("/console/login")
                .header(header::HOST, "rollcall.example.com")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={TOKEN}")))
                .expect("request"),
        )
        .await;
    let cookie = public.headers[header::SET_COOKIE].to_str().expect("cookie");
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    // A sign-in posted from another site is refused.
    let cross = f
        .post(
            "/console/login",
            &[("origin", "https://evil.example")],
            &format!("token={TOKEN}"),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(!cross.headers.contains_key(header::SET_COOKIE));
}

#[tokio::test]
async fn a_form_needs_its_sessions_csrf_token_and_a_same_site_origin() {
    let f = fixture(Some(TOKEN)).await;
    let (cookie, csrf) = f.sign_in().await;
    for (form, origin, why) in [
        (String::new(), "http://127.0.0.1:8080", "no token"),
        (
            "csrf=0000".to_owned(),
            "http://127.0.0.1:8080",
            "a wrong token",
        ),
        (
            format!("csrf={csrf}"),
            "https://evil.example",
            "another site",
        ),
    ] {
        let a = f
            .post(
                "/console/jobs/no-such-job/retry",
                &[("cookie", &cookie), ("origin", origin)],
                &form,
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{why}: {}", a.body);
    }
    // With both, the handler runs: there is no such job to retry.
    let a = f
        .post(
            "/console/jobs/no-such-job/retry",
            &[("cookie", &cookie), ("origin", "http://127.0.0.1:8080")],
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("no job no-such-job"), "{}", a.body);
    // Signing out ends the session, though the cookie is replayed.
    let out = f
        .post(
            "/console/logout",
            &[("cookie", &cookie)],
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .expect("cookie")
            .contains("Max-Age=0")
    );
    let after = f.get("/console", &[("cookie", &cookie)]).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_token_set_the_console_is_off_and_opens_for_nobody() {
    for token in [None, Some("too-short")] {
        let f = fixture(token).await;
        let login = f.get("/console/login", &[]).await;
        assert!(login.body.contains("The console is off"), "{}", login.body);
        let a = f.post("/console/login", &[], "token=too-short").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        let a = f.get("/console", &[("authorization", "Bearer ")]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn the_approval_pages_and_buttons_refuse_a_stranger_and_a_form_without_its_csrf_token() {
    let f = fixture(Some(TOKEN)).await;
    for page in ["/console/approvals/0123456789ab", "/console/approvals"] {
        assert_eq!(
            f.get(page, &[]).await.status,
            StatusCode::UNAUTHORIZED,
            "{page}"
        );
        let browser = f.get(page, &[("accept", "text/html")]).await;
        assert_eq!(browser.status, StatusCode::SEE_OTHER, "{page}");
    }
    for button in ["approve", "reject"] {
        let path = format!("/console/approvals/0123456789ab/{button}");
        let a = f.post(&path, &[], "csrf=00&reason=no").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{button}");
        let wrong = f
            .post(
                &path,
                &[("authorization", "Bearer not-the-token-at-all")],
                "reason=no",
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{button}");
    }
    let (cookie, csrf) = f.sign_in().await;
    for button in ["approve", "reject"] {
        let path = format!("/console/approvals/0123456789ab/{button}");
        for (form, origin, why) in [
            ("reason=no".to_owned(), "http://127.0.0.1:8080", "no token"),
            (
                "csrf=0000&reason=no".to_owned(),
                "http://127.0.0.1:8080",
                "a wrong token",
            ),
            (
                format!("csrf={csrf}&reason=no"),
                "https://evil.example",
                "another site",
            ),
        ] {
            let a = f
                .post(&path, &[("cookie", &cookie), ("origin", origin)], &form)
                .await;
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{button}, {why}: {}",
                a.body
            );
        }
        // With both, the handler runs and says what is wrong: there is no such approval.
        let a = f
            .post(
                &path,
                &[("cookie", &cookie), ("origin", "http://127.0.0.1:8080")],
                &format!("csrf={csrf}&reason=no"),
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{button}: {}", a.body);
        assert!(a.body.contains("data-outcome=\"not_found\""), "{}", a.body);
        assert!(a.body.contains("Approvals page lists them"), "{}", a.body);
    }
    // A rejection needs a reason; an effective day must be a day.
    let bearer = format!("Bearer {TOKEN}");
    let a = f
        .post(
            "/console/approvals/0123456789ab/reject",
            &[("authorization", &bearer)],
            "reason=%20%20",
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("needs a reason"), "{}", a.body);
    let a = f
        .post(
            "/console/approvals/0123456789ab/approve",
            &[("authorization", &bearer)],
            "effective=next+tuesday",
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("YYYY-MM-DD"), "{}", a.body);
    let a = f
        .get(
            "/console/approvals?state=maybe",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let none = f
        .get(
            "/console/approvals/0123456789ab",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.body);
}

#[tokio::test]
async fn a_notifications_approval_link_is_a_console_page() {
    // What src/notify links to must be a route here: a moved page would break every message
    // already sent.
    let event = crate::notify::Event {
        kind: crate::config::notify::EventKind::Refused,
        pipeline: "p".into(),
        client: "Acme".into(),
        title: "t".into(),
        detail: "d".into(),
        approval: Some("0123456789ab".into()),
        account: None,
        billed_as: None,
    };
    let message = crate::notify::Message::new(event, Some("https://rollcall.example.net"));
    let link = message.link.clone().expect("a link");
    let path = link
        .strip_prefix("https://rollcall.example.net")
        .expect("under the console's address");
    assert_eq!(path, super::approvals::href("0123456789ab"));
    // The console's own address, copied from a browser, links to the same page.
    let copied = crate::notify::Message::new(
        crate::notify::Event {
            approval: Some("0123456789ab".into()),
            ..message.event.clone()
        },
        Some("https://rollcall.example.net/console/"),
    );
    assert_eq!(copied.link.as_deref(), Some(link.as_str()));
    let f = fixture(Some(TOKEN)).await;
    let a = f
        .get(path, &[("authorization", &format!("Bearer {TOKEN}"))])
        .await;
    // The route answers (no approval of that id in this empty store), not the router's 404.
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.contains("No such approval"), "{}", a.body);
}

/// A stand-in identity provider on loopback: discovery, and a token endpoint that answers each
/// code the test registered with an ID token of the claims registered for it, once the PKCE
/// verifier matches the challenge the console sent.
struct Provider {
    url: String,
    /// code → (code challenge, claims)
    codes: Arc<std::sync::Mutex<std::collections::HashMap<String, (String, serde_json::Value)>>>,
}

async fn provider() -> Provider {
    use axum::response::IntoResponse as _;
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let codes: Arc<
        std::sync::Mutex<std::collections::HashMap<String, (String, serde_json::Value)>>,
    > = Arc::default();
    let discovery = serde_json::json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/authorize"),
        "token_endpoint": format!("{url}/token"),
    });
    let known = codes.clone();
    let app =
        axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/token",
                post(
                    move |axum::Form(form): axum::Form<
                        std::collections::HashMap<String, String>,
                    >| async move {
                        use base64::Engine as _;
                        use sha2::Digest as _;
                        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                        let found = known
                            .lock()
                            .expect("codes")
                            .remove(form.get("code").map(String::as_str).unwrap_or_default());
                        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                        match found {
                            Some((challenge, claims))
                                if b64.encode(sha2::Sha256::digest(verifier.as_bytes()))
                                    == challenge
                                    && form.get("client_secret").map(String::as_str)
                                        == Some("sso-client-secret") =>
                            {
                                let token = format!(
                                    "{}.{}.sig",
                                    b64.encode(br#"{"alg":"RS256"}"#),
                                    b64.encode(claims.to_string())
                                );
                                axum::Json(serde_json::json!({ "id_token": token })).into_response()
                            }
                            _ => (
                                StatusCode::BAD_REQUEST,
                                axum::Json(serde_json::json!({ "error": "invalid_grant" })),
                            )
                                .into_response(),
                        }
                    },
                ),
            );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Provider { url, codes }
}

fn query_value(url: &str, name: &str) -> String {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_lets_an_allowed_person_in_by_name_and_refuses_everything_else() {
    let p = provider().await;
    let f = fixture_with(Settings {
        token: Some(Secret::new(TOKEN)),
        oidc: Some(Ok(super::oidc::OidcSettings {
            issuer: p.url.clone(),
            client_id: "console-app".into(),
            client_secret: Secret::new("sso-client-secret"),
            redirect_url: "http://127.0.0.1:8080/console/sso/callback".into(),
            allow: vec!["alice@msp.example".into(), "@ops.msp.example".into()],
        })),
    })
    .await;
    let login = f.get("/console/login?next=/console/approvals", &[]).await;
    assert!(
        login
            .body
            .contains("href=\"/console/sso?next=/console/approvals\""),
        "{}",
        login.body
    );

    // Starts a sign-on; registers what the provider will say for its code.
    let start = |claims: serde_json::Value, code: &'static str| {
        let f = &f;
        let p = &p;
        async move {
            let a = f.get("/console/sso?next=%2Fconsole%2Fapprovals", &[]).await;
            assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
            let to = a.headers[header::LOCATION]
                .to_str()
                .expect("location")
                .to_owned();
            assert!(
                to.starts_with(&format!("{}/authorize?response_type=code", p.url)),
                "{to}"
            );
            assert!(to.contains("code_challenge_method=S256"), "{to}");
            let set = a.headers[header::SET_COOKIE].to_str().expect("cookie");
            assert!(
                set.contains("SameSite=Lax") && set.contains("HttpOnly"),
                "{set}"
            );
            let cookie = set.split(';').next().expect("pair").to_owned();
            let (state, nonce) = (query_value(&to, "state"), query_value(&to, "nonce"));
            let mut claims = claims;
            if claims["nonce"].is_null() {
                claims["nonce"] = nonce.clone().into();
            }
            p.codes.lock().expect("codes").insert(
                code.to_owned(),
                (query_value(&to, "code_challenge"), claims),
            );
            (cookie, state)
        }
    };
    let now = chrono::Utc::now().timestamp();
    let claims = |email: &str| serde_json::json!({ "iss": p.url, "aud": "console-app", "exp": now + 300, "email": email });

    let (cookie, state) = start(claims("Alice@msp.example"), "code-alice").await;
    let back = f
        .get(
            &format!("/console/sso/callback?code=code-alice&state={state}"),
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert!(back.body.contains("Alice@msp.example"), "{}", back.body);
    assert!(
        back.body.contains("href=\"/console/approvals\""),
        "{}",
        back.body
    );
    let session = back
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("rollcall_console="))
        .expect("a session cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let page = f.get("/console/approvals", &[("cookie", &session)]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The same code again (a replayed callback) is refused by the provider and by the console.
    let replay = f
        .get(
            &format!("/console/sso/callback?code=code-alice&state={state}"),
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(replay.status, StatusCode::FORBIDDEN);

    // Someone the allow list does not name; a domain it does.
    let (cookie, state) = start(claims("mallory@elsewhere.example"), "code-mallory").await;
    let a = f
        .get(
            &format!("/console/sso/callback?code=code-mallory&state={state}"),
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(a.body.contains("may not use this console"), "{}", a.body);
    assert!(!a.headers.get_all(header::SET_COOKIE).iter().any(|c| {
        c.to_str()
            .unwrap_or_default()
            .starts_with("rollcall_console=v")
    }));
    let (cookie, state) = start(claims("bob@ops.msp.example"), "code-bob").await;
    let a = f
        .get(
            &format!("/console/sso/callback?code=code-bob&state={state}"),
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // A token for another application, another sign-on's nonce, an expired one; another
    // browser's state; no sign-on cookie at all.
    let mut other_app = claims("alice@msp.example");
    other_app["aud"] = "another-app".into();
    let mut other_nonce = claims("alice@msp.example");
    other_nonce["nonce"] = "not-this-sign-ons".into();
    let mut expired = claims("alice@msp.example");
    expired["exp"] = (now - 10).into();
    for (claims, code, why) in [
        (other_app, "code-aud", "audience"),
        (other_nonce, "code-nonce", "nonce"),
        (expired, "code-exp", "expiry"),
    ] {
        let (cookie, state) = start(claims, code).await;
        let a = f
            .get(
                &format!("/console/sso/callback?code={code}&state={state}"),
                &[("cookie", &cookie)],
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{why}: {}", a.body);
    }
    let (cookie, _) = start(claims("alice@msp.example"), "code-state").await;
    let a = f
        .get(
            "/console/sso/callback?code=code-state&state=forged",
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let (_, state) = start(claims("alice@msp.example"), "code-cookie").await;
    let a = f
        .get(
            &format!("/console/sso/callback?code=code-cookie&state={state}"),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
}
