//! `rollcall plan --output markdown`: the summary a pull request's comment shows, per client:
//! seats, money, people added and removed, and a refusal — with directory text escaped.

use crate::approvals::{guarded, rollcall, run};
use crate::support::{PIPELINE, World, people_csv};

fn markdown(w: &World) -> (Option<i32>, String) {
    let file = w.pipeline_path();
    rollcall(
        w,
        &[
            "plan",
            "--output",
            "markdown",
            file.to_str().expect("utf-8"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_renders_as_a_markdown_summary_per_client() {
    let csv = people_csv(3, 2).replace("Given1,", "[Eve](http://evil.example),");
    let w = World::with_pipeline(&guarded(PIPELINE), &csv).await;
    let (code, md) = markdown(&w);
    assert_eq!(code, Some(0), "{md}");
    assert!(
        md.starts_with("## rollcall plan: `e2e` → connectwise\n"),
        "{md}"
    );
    assert!(
        md.contains("| client | seats | monthly | change | status |"),
        "{md}"
    );
    // Two M365 seats at 22.00 and three helpdesk seats at 35: nothing billed yet.
    assert!(
        md.contains("| Acme | 0 → 5 | 0 → 149.00 USD | +149.00 | 5 change(s) |"),
        "{md}"
    );
    assert!(md.contains("### Acme"), "{md}");
    assert!(
        md.contains(
            "- **People added (3):** Given0 Sur0, \\[Eve\\](http://evil.example) Sur1, Given2 Sur2"
        ),
        "{md}"
    );
    assert!(
        !md.contains("[Eve](http"),
        "a name never becomes a link: {md}"
    );
    assert!(
        md.contains("| M365-BP | 0 → 2 | 22.00 | 0 → 44.00 |"),
        "{md}"
    );
    assert!(
        md.contains("| HELPDESK-USER | 0 → 3 | 35.00 | 0 → 105.00 |"),
        "{md}"
    );

    assert_eq!(run(&w).0, Some(0));
    let (code, md) = markdown(&w);
    assert_eq!(code, Some(0), "{md}");
    assert!(
        md.contains("| Acme | 5 → 5 | 149.00 → 149.00 USD | 0.00 | no change |"),
        "{md}"
    );

    // Two people leave: a drop the guard refuses, shown as such, their names listed.
    w.set_people(&people_csv(1, 1));
    let (code, md) = markdown(&w);
    assert_eq!(code, Some(2), "{md}");
    assert!(md.contains("⛔ refused: waits for approval"), "{md}");
    assert!(md.contains("**Refused:** the plan removes"), "{md}");
    assert!(
        md.contains("- **People removed (2):** \\[Eve\\](http://evil.example) Sur1, Given2 Sur2"),
        "{md}"
    );
    assert!(md.contains("(-"), "the money goes down: {md}");
}
