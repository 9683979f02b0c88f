//! A small W3C WebDriver client over reqwest, for the console's browser tests.
//!
//! Written here rather than taken from a crate: the tests need a dozen commands, and the
//! WebDriver crates bring their own HTTP and TLS stacks beside the ones rollcall already has.

use std::time::Duration;

use rollcall_harness::ChromeDriver;
use serde_json::{Value, json};

/// The key W3C WebDriver names an element reference under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session, headless.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts Chromium through `driver`.
    pub async fn open(driver: &ChromeDriver) -> Browser {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let profile = tempfile::tempdir().expect("profile");
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": driver.chromium().display().to_string(),
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--no-first-run", "--disable-quic", "--disable-extensions",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }},
        });
        let answer: Value = http
            .post(format!("{}/session", driver.url()))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Browser {
            http,
            session: format!("{}/session/{id}", driver.url()),
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("{path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The address the browser shows now (after any redirects).
    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page as the browser holds it now.
    pub async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The elements matching `css`, in document order.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
            .collect()
    }

    /// The one element matching `css`; panics with the page when there is none. A click that
    /// submits a form returns before the next page is in, so the element is looked for until
    /// it appears or 15 s have passed (a wait for the page, not a measure of its speed).
    pub async fn find(&self, css: &str) -> Element {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "no `{css}` on {}:\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The page's address once it contains `part`: a click that submits a form or follows a
    /// link returns before the next page is in. Panics with the address after 15 s.
    pub async fn until_url_contains(&self, part: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return url;
            }
            if std::time::Instant::now() > deadline {
                panic!("the browser never reached an address containing `{part}`: at {url}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The page's source once it contains `text` (see `until_url_contains`).
    pub async fn until_source_contains(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            if std::time::Instant::now() > deadline {
                panic!("`{text}` never appeared on {}:\n{source}", self.url().await);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, e: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The rendered text of `e`.
    pub async fn text(&self, e: &Element) -> String {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/text", e.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The cookies the browser keeps for the current page.
    pub async fn cookies(&self) -> Vec<Value> {
        self.command(reqwest::Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Ends the session and closes the browser.
    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
