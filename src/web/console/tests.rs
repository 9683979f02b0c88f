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
    let settings = Settings {
        token: token.map(Secret::new),
    };
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
