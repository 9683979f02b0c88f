//! The README, followed literally. Its YAML blocks are validated by the real executable (a
//! fragment merged into the example pipeline its section names), and its shell blocks are run
//! line by line, in order, in a copy of `mappings/`, with the `rollcall` under test first on
//! PATH and the bundled sandboxes it starts itself — as a new user on a fresh clone would.
//!
//! What is changed from the letter, and why:
//! - the fixed ports (8421, 8431, 8423, 8424, 8080) become free ones, here and in the copied
//!   pipelines, so the test never collides with anything else on the machine; `connect` gets
//!   `--port 0` for the same reason;
//! - `RUN_ID` and `JOB_ID` are the placeholders the README tells the reader to fill from
//!   `rollcall runs` and `rollcall jobs`; the test fills them the same way;
//! - `&` lines are started and waited for until they print their first line (the sandboxes'
//!   address, `serve`'s and `worker`'s startup line), and stopped when the test ends.
//!
//! Not run, and why: the two set-up commands (`cargo run -- demo` is `the_demo_runs_end_to_end`,
//! `scripts/test` is this suite), `cargo install` (the binary under test is the one it would
//! install), and the Active Directory walk-through's shell block, which needs slapd on fixed
//! ports and a minute of rate-limited writes: `the_active_directory_example_bills_a_lab_directory_over_ldaps`
//! runs the same example against the same generated directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::rollcall_bin;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fenced block of a Markdown file.
#[derive(Debug)]
struct Block {
    lang: String,
    text: String,
    /// The line its fence opens on, for messages.
    line: usize,
    /// The `##` section it is in.
    section: String,
    /// The section's prose before the block.
    prose: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let (mut section, mut prose) = (String::new(), String::new());
    let mut open: Option<(String, usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match &mut open {
            Some((lang, at, text)) => {
                if line.starts_with("```") {
                    out.push(Block {
                        lang: std::mem::take(lang),
                        text: std::mem::take(text),
                        line: *at,
                        section: section.clone(),
                        prose: prose.clone(),
                    });
                    open = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            None => {
                if let Some(lang) = line.strip_prefix("```") {
                    open = Some((lang.trim().to_owned(), i + 1, String::new()));
                } else if let Some(title) = line.strip_prefix("## ") {
                    section = title.trim().to_owned();
                    prose.clear();
                } else {
                    prose.push_str(line);
                    prose.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed code fence");
    out
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md")
}

/// A pipeline's settings without its comments and blank lines: what a reader copies.
fn settings(yaml: &str) -> Vec<String> {
    yaml.lines()
        .map(|l| match l.find(" #") {
            Some(i) => &l[..i],
            None => l,
        })
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Top-level sections of a YAML document, in order, by key.
fn sections(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in yaml.lines() {
        let top = !line.starts_with([' ', '#', '-']) && !line.is_empty();
        match line.split_once(':') {
            Some((key, _)) if top => out.push((key.to_owned(), String::new())),
            _ => {}
        }
        if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// The example pipeline with the fragment's top-level sections in place of its own.
fn merge(base: &str, fragment: &str) -> String {
    let mut merged = sections(base);
    for (key, text) in sections(fragment) {
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = text,
            None => merged.push((key, text)),
        }
    }
    merged.into_iter().map(|(_, t)| t).collect()
}

/// The example file a section is about: the first `mappings/examples/….yaml` its prose names.
fn example_of(block: &Block) -> String {
    block
        .prose
        .split('`')
        .find(|w| w.starts_with("mappings/examples/") && w.ends_with(".yaml"))
        .unwrap_or("mappings/examples/demo.yaml")
        .to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn every_yaml_block_of_the_readme_validates_with_the_example_it_belongs_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(
        &Path::new(ROOT).join("mappings"),
        &dir.path().join("mappings"),
    );
    let yaml: Vec<Block> = blocks(&readme())
        .into_iter()
        .filter(|b| b.lang == "yaml")
        .collect();
    assert!(yaml.len() >= 4, "the README's pipeline samples: {yaml:?}");
    for (i, block) in yaml.iter().enumerate() {
        let example = example_of(block);
        let base = std::fs::read_to_string(Path::new(ROOT).join(&example)).expect("example");
        let whole = block.text.starts_with("name:");
        if whole {
            // A whole pipeline shown as a named file is that file, setting for setting.
            assert_eq!(
                settings(&block.text),
                settings(&base),
                "README.md:{}: the pipeline shown is not {example}",
                block.line
            );
        }
        let text = if whole {
            block.text.clone()
        } else {
            merge(&base, &block.text)
        };
        let file = dir
            .path()
            .join("mappings/examples")
            .join(format!("readme-{i}.yaml"));
        std::fs::write(&file, &text).expect("write");
        let needed = rollcall::config::variables::required(&text);
        let o = Command::new(rollcall_bin())
            .arg("validate")
            .arg(&file)
            .envs(
                needed
                    .iter()
                    .map(|n| (n.as_str(), "set-by-the-readme-test")),
            )
            .output()
            .expect("rollcall validate");
        assert_eq!(
            o.status.code(),
            Some(0),
            "README.md:{} ({}, merged into {example}):\n{}\n{text}",
            block.line,
            block.section,
            crate::support::printed(&o)
        );
    }
}

/// Documents of the workplace the project grew in, which a clone does not have. Kept in parts
/// so that this file, too, passes the check it makes.
const OUTSIDE: [[&str; 2]; 4] = [
    ["CONTRACTS", ".md"],
    ["CRATES", ".md"],
    ["../", "shared"],
    ["specs", "/"],
];

/// The project stands on its own files: nothing cites documents that are not in it.
#[test]
fn nothing_in_the_repository_cites_files_outside_it() {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(ROOT)
        .output()
        .expect("git ls-files");
    if !listed.status.success() {
        eprintln!("skipped: not a git checkout");
        return;
    }
    let mut cited = Vec::new();
    for path in listed.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let path = String::from_utf8_lossy(path).into_owned();
        let Ok(text) = std::fs::read_to_string(Path::new(ROOT).join(&path)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if OUTSIDE.iter().any(|parts| line.contains(&parts.concat())) {
                cited.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(cited.is_empty(), "{}", cited.join("\n"));
}

/// Processes started by `&` lines (and `serve`/`worker`), stopped when the walk ends.
struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The walk through the README's shell blocks, in one working copy as one reader would.
struct Walk {
    dir: tempfile::TempDir,
    path: String,
    ports: BTreeMap<&'static str, String>,
    env: BTreeMap<String, String>,
    started: std::collections::BTreeSet<String>,
    background: Background,
}

/// One free port per name, all different: each listener is held until every port is chosen,
/// because a port released at once can be handed out again by the very next bind (the walk
/// once gave two sandboxes the same port, and `connect` reached the wrong one).
fn free_ports<'a>(names: &[&'a str]) -> BTreeMap<&'a str, String> {
    let held: Vec<std::net::TcpListener> = names
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    names
        .iter()
        .zip(&held)
        .map(|(name, l)| {
            (
                *name,
                l.local_addr().expect("its address").port().to_string(),
            )
        })
        .collect()
}

impl Walk {
    fn new() -> Walk {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(
            &Path::new(ROOT).join("mappings"),
            &dir.path().join("mappings"),
        );
        let bin = rollcall_bin().parent().expect("bin dir").to_owned();
        let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .expect("PATH")
        .to_string_lossy()
        .into_owned();
        let ports: BTreeMap<&'static str, String> =
            free_ports(&["8421", "8431", "8423", "8424", "8080"]);
        let walk = Walk {
            dir,
            path,
            ports,
            env: BTreeMap::new(),
            started: Default::default(),
            background: Background(Vec::new()),
        };
        let examples = walk.dir.path().join("mappings/examples");
        for entry in std::fs::read_dir(&examples).expect("examples") {
            let file: PathBuf = entry.expect("entry").path();
            if file.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&file).expect("read");
                std::fs::write(&file, walk.ports(&text)).expect("write");
            }
        }
        walk
    }

    fn ports(&self, text: &str) -> String {
        self.ports.iter().fold(text.to_owned(), |t, (from, to)| {
            t.replace(&format!(":{from}"), &format!(":{to}"))
                .replace(&format!("--port {from}"), &format!("--port {to}"))
        })
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env("NO_COLOR", "1")
            .env_remove("ROLLCALL_STORE")
            .env_remove("ROLLCALL_QUEUE")
            .envs(&self.env);
        cmd
    }

    /// Runs a script to its end (at most a minute); its exit code and output.
    fn run(&self, script: &str) -> (Option<i32>, String) {
        let mut child = self
            .command(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        let (stdout, stderr) = (
            child.stdout.take().expect("stdout"),
            child.stderr.take().expect("stderr"),
        );
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let text: Vec<String> = rx.iter().collect();
                return (status.code(), text.join("\n"));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text: Vec<String> = rx.try_iter().collect();
                panic!(
                    "`{script}` ran for more than a minute:\n{}",
                    text.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a long-running command and waits for its first line of output. The same
    /// command a second time (a later walk-through starting the sandbox an earlier one
    /// started) finds it running, as the reader's would be.
    fn start(&mut self, script: &str) -> String {
        if !self.started.insert(script.to_owned()) {
            return "already running".into();
        }
        let mut child = self
            .command(&format!("exec {script}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let first = rx.recv_timeout(Duration::from_secs(30));
        let exited = child.try_wait().expect("wait");
        self.background.0.push(child);
        let first = first.unwrap_or_else(|_| panic!("`{script}` printed nothing in 30 s"));
        assert!(exited.is_none(), "`{script}` stopped: {first}");
        first
    }

    /// `connect`: the consent page is opened (by an HTTP client playing the browser) once the
    /// command prints its address.
    fn connect(&self, script: &str) -> String {
        let mut child = self
            .command(&format!("exec {script} --port 0 --wait 60"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let consent = lines
            .by_ref()
            .map(|l| l.trim().to_owned())
            .find(|l| l.starts_with("http"))
            .unwrap_or_else(|| panic!("`{script}` printed no consent address"));
        let browser = async {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client");
            let answer = http.get(&consent).send().await.expect("consent page");
            let back = answer.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned();
            http.get(&back)
                .send()
                .await
                .expect("redirect")
                .text()
                .await
                .expect("page")
        };
        let page = tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(browser);
        assert!(page.contains("access granted"), "{page}");
        let rest: Vec<String> = lines.collect();
        let status = child.wait().expect("wait");
        assert!(status.success(), "`{script}`: {}", rest.join("\n"));
        rest.join("\n")
    }

    /// The first id a listing command prints as JSON (`rollcall runs`, `rollcall jobs`).
    fn first_id(&self, listing: &str, field: &str) -> Option<String> {
        let (code, text) = self.run(&format!("{listing} --output json"));
        assert_eq!(code, Some(0), "{listing}: {text}");
        let start = text.find('[')?;
        let json: serde_json::Value = serde_json::from_str(&text[start..]).ok()?;
        json.get(0)?.get(field)?.as_str().map(str::to_owned)
    }

    /// One line of a README shell block, as a reader would type it.
    fn line(&mut self, at: &str, line: &str) {
        let code = match line.find(" #") {
            Some(i) => &line[..i],
            None => line,
        }
        .trim();
        let code = self.ports(code);
        if let Some(assignment) = code.strip_prefix("export ") {
            let (name, value) = assignment.split_once('=').expect("export NAME=VALUE");
            let (status, value) = self.run(&format!("printf %s {value}"));
            assert_eq!(status, Some(0), "{at}: {line}");
            self.env.insert(name.to_owned(), value);
            return;
        }
        let mut code = code.to_owned();
        if code.contains("RUN_ID") {
            let id = self
                .first_id("rollcall runs", "run_id")
                .unwrap_or_else(|| panic!("{at}: `rollcall runs` lists no run"));
            code = code.replace("RUN_ID", &id);
        }
        if code.contains("JOB_ID") {
            match self.first_id("rollcall jobs --failed", "id") {
                Some(id) => code = code.replace("JOB_ID", &id),
                None => return, // no job failed: nothing to retry, as the reader would find
            }
        }
        if let Some(background) = code.strip_suffix('&') {
            let first = self.start(background.trim());
            eprintln!("{at}: {line}\n  started: {first}");
            return;
        }
        if code.starts_with("rollcall connect ") {
            let out = self.connect(&code);
            eprintln!("{at}: {line}\n{out}");
            return;
        }
        let (status, out) = self.run(&code);
        assert_eq!(status, Some(0), "{at}: `{line}` failed:\n{out}");
        // What the README says a line shows, where it says it in so many words.
        if line.contains("# nothing to do") || line.contains("nothing to do now") {
            assert!(
                out.to_lowercase().contains("nothing to do")
                    || out.to_lowercase().contains("no changes"),
                "{at}: `{line}` should plan nothing:\n{out}"
            );
        }
        eprintln!("{at}: {line}\n  ok");
    }
}

/// Shell blocks whose running is left to other tests (see the module docs).
fn skipped(block: &Block) -> bool {
    block.section == "The two commands" || block.section.contains("Active Directory")
}

#[test]
fn the_readme_walk_throughs_run_as_written() {
    let markdown = readme();
    let mut walk = Walk::new();
    for block in blocks(&markdown) {
        let shell = matches!(block.lang.as_str(), "sh" | "console");
        if !shell || skipped(&block) {
            continue;
        }
        // A transcript (`console`) is run for its `$` lines; its output is illustrative.
        let lines: Vec<(usize, String)> = block
            .text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| match block.lang.as_str() {
                "console" => l.strip_prefix("$ ").map(|c| (i, c.to_owned())),
                _ => Some((i, l.to_owned())),
            })
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .collect();
        for (i, line) in lines {
            if line.starts_with("cargo install") {
                continue;
            }
            let at = format!("README.md:{}", block.line + 1 + i);
            walk.line(&at, &line);
        }
        if block.text.contains("rollcall serve ") {
            signed_webhook_from_the_deploy_guide(&walk);
        }
    }
    // What the walk left behind is what the README says it leaves.
    let root = walk.dir.path();
    assert!(root.join(".rollcall/state.db").exists());
    assert!(root.join("report.html").exists());
    let report = std::fs::read_to_string(root.join("report.html")).expect("report");
    assert!(
        report.contains("amounts in USD"),
        "the report names its currency"
    );
    assert!(root.join("my-msp.yaml").exists());
}

/// docs/deploy.md's worked example — curl and openssl, no rollcall code — accepted by the
/// `serve` the README started.
fn signed_webhook_from_the_deploy_guide(walk: &Walk) {
    if Command::new("openssl").arg("version").output().is_err()
        || Command::new("curl").arg("--version").output().is_err()
    {
        assert!(
            std::env::var("ROLLCALL_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "openssl and curl are required (ROLLCALL_REQUIRE_SERVERS=1)"
        );
        eprintln!("skipped: openssl or curl is not installed");
        return;
    }
    let guide =
        std::fs::read_to_string(Path::new(ROOT).join("docs/deploy.md")).expect("docs/deploy.md");
    let block = blocks(&guide)
        .into_iter()
        .find(|b| b.section == "Signing a webhook" && b.lang == "sh")
        .expect("the signing example");
    let script = walk.ports(&block.text).replace("\\\n", " ");
    let (status, out) = walk.run(&script);
    assert_eq!(status, Some(0), "{out}");
    assert_eq!(out.trim(), "202", "docs/deploy.md's signed request: {out}");
    // The same request with another key is refused.
    let forged = script.replace("-hmac \"$KEY\"", "-hmac \"not-the-key\"");
    let (_, out) = walk.run(&forged);
    assert_eq!(out.trim(), "401", "{out}");
}
