//! `rollcall demo`: the product end to end with nothing installed.
//!
//! Starts the sandbox of the billing system the bundled example pipeline names, seeded with
//! three client companies (found through the registry, like every sandbox), runs the pipeline (`mappings/examples/demo.yaml`, its people read from bundled CSV and LDIF exports)
//! and walks through what an ops engineer sees: the first plan and its apply, a resync that
//! plans nothing and writes nothing, a leaver, and an export that arrives empty and is not
//! allowed to lower anyone's bill. Every step checks itself, so the demo doubles as a smoke test.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::engine::{Engine, Options, Verdict};
use crate::{config, report};

const PIPELINE: &str = include_str!("../mappings/examples/demo.yaml");
const ACME: &str = include_str!("../mappings/examples/people/acme.csv");
const GLOBEX: &str = include_str!("../mappings/examples/people/globex.csv");
const INITECH: &str = include_str!("../mappings/examples/people/initech.ldif");
/// The address the example pipeline names; the demo's sandbox listens wherever it can.
const EXAMPLE_URL: &str = "http://127.0.0.1:8421/v4_6_release/apis/3.0";

struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn step(title: &str) {
    println!("\n━━ {title}\n");
}

pub async fn run() -> anyhow::Result<Verdict> {
    let work =
        Workdir(std::env::temp_dir().join(format!("rollcall-demo-{}", uuid::Uuid::new_v4())));
    let people = work.0.join("people");
    std::fs::create_dir_all(&people).context("cannot create the demo's work folder")?;
    let pipeline_path = work.0.join("demo.yaml");
    std::fs::write(&pipeline_path, PIPELINE)?;
    std::fs::write(people.join("acme.csv"), ACME)?;
    std::fs::write(people.join("globex.csv"), GLOBEX)?;
    std::fs::write(people.join("initech.ldif"), INITECH)?;
    let kind = load(&pipeline_path)?.target.kind();
    let role = config::connectors::sandbox(kind)
        .with_context(|| {
            format!("the demo needs the `{kind}` sandbox, and this build has none (built without feature `sandboxes`)")
        })?;
    let Some(start) = role.start_demo() else {
        bail!("the `{kind}` sandbox cannot run the demo: it does not count its writes");
    };
    let sandbox = start.await;
    std::fs::write(
        &pipeline_path,
        PIPELINE.replace(EXAMPLE_URL, &sandbox.url()),
    )?;
    let store = crate::store::Store::open(&work.0.join("state.db")).await?;
    let engine = Engine::new(store.clone()).await?;
    let options = Options {
        command: "demo",
        ..Options::default()
    };

    println!(
        "rollcall demo: a {} sandbox is listening at {}",
        role.title(),
        sandbox.url()
    );
    println!("pipeline: mappings/examples/demo.yaml (3 clients; people from CSV and LDIF exports)");

    step("1. First run: what the directories say the clients should pay for");
    let pipeline = load(&pipeline_path)?;
    let plan = engine.plan(&pipeline, None, &options).await?;
    print!("{}", report::plan_text(&plan));
    let synced = engine.apply(&pipeline, plan, &options).await?;
    print!("{}", report::outcome_text(&synced.outcomes));
    let first_writes = sandbox.write_requests();
    println!("The sandbox took {first_writes} writes.");

    step("2. Run again with nothing changed: nothing to plan, nothing written");
    let synced = engine.sync(&pipeline, None, &options).await?;
    let plan = &synced.plan;
    print!("{}", report::plan_text(plan));
    if !plan.is_empty() || sandbox.write_requests() != first_writes {
        bail!(
            "the resync was not empty: {} change(s), {} write(s)",
            plan.changes.len(),
            sandbox.write_requests() - first_writes
        );
    }
    println!("Writes since the first run: 0.");

    step(
        "3. Grace Hopper leaves Acme (disabled in AD): seats drop by one, her contact is deactivated",
    );
    std::fs::write(
        people.join("acme.csv"),
        ACME.replace("grace@acme.local,TRUE", "grace@acme.local,FALSE"),
    )?;
    let synced = engine.sync(&pipeline, Some("Acme"), &options).await?;
    print!("{}", report::plan_text(&synced.plan));
    print!("{}", report::outcome_text(&synced.outcomes));

    step("4. Acme's export arrives empty: the read is incomplete, so nothing is lowered");
    std::fs::write(people.join("acme.csv"), "")?;
    let plan = engine.plan(&pipeline, Some("Acme"), &options).await?;
    print!("{}", report::plan_text(&plan));
    if plan.clients.iter().any(|c| c.seats_after < c.seats_before) {
        bail!("an empty export lowered seats");
    }

    step("5. History: every change, recorded before and after it was sent");
    let history = store.history(None, 12).await?;
    print!("{}", report::history_text(&history));
    println!("Try it yourself: `rollcall sandbox {kind} --port 8421` in one terminal, then");
    println!("`rollcall plan mappings/examples/demo.yaml` in another.");
    Ok(Verdict::Ok)
}

fn load(path: &Path) -> anyhow::Result<config::Pipeline> {
    config::load(path).map_err(|e| anyhow::anyhow!("the demo pipeline does not load:\n{e}"))
}
