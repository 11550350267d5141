//! Pipelines: stages created together as tasks, each filled in with what
//! earlier stages produced when it becomes ready.

use super::*;
use crate::{NewPipeline, NewStage, PipelineRecord, StageRecord};

fn stage(name: &str, n: u128, prompt: &str, after: &[u128]) -> NewStage {
    NewStage {
        name: name.to_owned(),
        task: task_id(n),
        spec: TaskSpec { depends_on: after.iter().map(|d| task_id(*d)).collect(), ..spec(prompt) },
        templated: prompt.contains("{{"),
    }
}

fn pipeline(name: &str, stages: Vec<NewStage>) -> NewPipeline {
    NewPipeline { name: name.to_owned(), source: format!("name: {name}\n"), created_by: "lead".to_owned(), stages }
}

async fn list(s: &dyn Store, limit: usize) -> Vec<PipelineRecord> {
    ok("pipelines", s.pipelines(limit).await)
}

/// A pipeline's stages are tasks created together, in the file's order;
/// each waits for the one before, and is filled in with what earlier stages
/// produced only when it becomes ready.
pub async fn a_pipeline_queues_its_first_stage_and_fills_in_earlier_results_as_each_stage_becomes_ready(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let stages = vec![
        stage("plan", 1, "plan the release", &[]),
        stage("build", 2, "build this: {{stages.plan.result}}", &[1]),
        stage(
            "review",
            3,
            "review {{stages.build.task}} against {{ stages.plan.result }}, not {{stages.nope.result}}",
            &[2],
        ),
    ];
    let mark = last_seq(s).await;
    let p = ok("create_pipeline", s.create_pipeline(pipeline("release", stages), at(1)).await);
    let by_name = |name: &str, n: u128| StageRecord { name: name.to_owned(), task: task_id(n) };
    assert_eq!(
        p,
        PipelineRecord {
            id: p.id,
            name: "release".into(),
            created_by: "lead".into(),
            created_at: at(1),
            stages: vec![by_name("plan", 1), by_name("build", 2), by_name("review", 3)],
        },
        "the pipeline lists its stages in the file's order"
    );
    let events = assert_events(
        s,
        mark,
        &[
            "task.created",
            "task.staged",
            "task.created",
            "task.staged",
            "task.created",
            "task.staged",
            "pipeline.created",
        ],
        "create_pipeline",
    )
    .await;
    let staged: Vec<Option<&TaskId>> =
        events.iter().filter(|e| e.kind == "task.staged").map(|e| e.task.as_ref()).collect();
    assert_eq!(staged, [Some(&task_id(1)), Some(&task_id(2)), Some(&task_id(3))]);
    assert_eq!(ok("pipeline", s.pipeline(p.id).await), Some(p.clone()));
    assert_eq!(ok("pipeline", s.pipeline(p.id + 1).await), None, "an unknown pipeline is none");
    assert_eq!(list(s, 10).await, std::slice::from_ref(&p));
    assert_eq!(get(s, &task_id(1)).await.state, TaskState::Queued, "the first stage is queued");
    let build = get(s, &task_id(2)).await;
    assert_eq!(build.state, TaskState::Blocked, "a later stage waits for the one before");
    assert_eq!(build.spec.prompt, "build this: {{stages.plan.result}}", "a stage is filled in only when ready");

    // The plan's result fills in the build's prompt as it is queued.
    let e = start(s, &a, &task_id(1), at(2)).await;
    let report = RunReport { result: Some("three steps".into()), ..RunReport::default() };
    let details = RunDetails { report: Some(report), ..RunDetails::default() };
    ok("finish_task", s.finish_task(&a, &task_id(1), e, &SUCCEEDED, details, at(3), Retry::fixed(BACKOFF)).await);
    let build = get(s, &task_id(2)).await;
    assert_eq!((build.state, build.spec.prompt.as_str()), (TaskState::Queued, "build this: three steps"));
    let review = get(s, &task_id(3)).await;
    assert!(review.spec.prompt.starts_with("review {{stages.build.task}}"), "{}", review.spec.prompt);

    let e = start(s, &a, &task_id(2), at(4)).await;
    finish(s, &a, &task_id(2), e, &SUCCEEDED, at(5)).await;
    let review = get(s, &task_id(3)).await;
    assert_eq!(
        (review.state, review.spec.prompt),
        (TaskState::Queued, format!("review {} against three steps, not {{{{stages.nope.result}}}}", task_id(2))),
        "placeholders become the stages' task and result; an unknown stage stays as written"
    );
}

/// Creating a pipeline is one change: a refused stage leaves no task, no
/// event and no pipeline behind. Pipelines are listed newest first.
pub async fn a_pipeline_is_created_whole_or_not_at_all(store: Arc<dyn Store>) {
    let s = &*store;
    let invalid_stages =
        invalid("create_pipeline with no stages", s.create_pipeline(pipeline("empty", vec![]), at(0)).await);
    assert_eq!(invalid_stages.field, "stages");

    // A stage refused after others were written leaves nothing behind.
    let bad = NewStage { spec: with_attempts(spec("no attempts"), 0), ..stage("deploy", 3, "deploy", &[2]) };
    let before = snapshot(s).await;
    let err = invalid(
        "create_pipeline with an invalid stage",
        s.create_pipeline(
            pipeline("broken", vec![stage("build", 1, "build", &[]), stage("test", 2, "test", &[1]), bad]),
            at(1),
        )
        .await,
    );
    assert_eq!(err.field, "max_attempts");
    assert_unchanged(s, &before, "create_pipeline with an invalid stage").await;
    assert_eq!(list(s, 10).await, [], "a refused pipeline is not listed");

    // A stage that would reuse a task (its idempotency key is taken) is a conflict.
    let keyed = TaskSpec { idempotency_key: Some("nightly".into()), ..spec("nightly") };
    submit(s, 10, keyed.clone(), at(2)).await;
    let reuse = NewStage { spec: keyed, ..stage("again", 12, "again", &[]) };
    let before = snapshot(s).await;
    match s.create_pipeline(pipeline("reuse", vec![stage("fresh", 11, "fresh", &[]), reuse]), at(3)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("create_pipeline with a stage reusing a task: expected StoreError::Conflict, got {other:?}"),
    }
    assert_unchanged(s, &before, "create_pipeline with a stage reusing a task").await;
    assert_eq!(list(s, 10).await, []);

    // Newest first, up to the limit.
    let first =
        ok("create_pipeline", s.create_pipeline(pipeline("first", vec![stage("only", 20, "one", &[])]), at(4)).await);
    let second =
        ok("create_pipeline", s.create_pipeline(pipeline("second", vec![stage("only", 21, "two", &[])]), at(5)).await);
    assert_ne!(first.id, second.id);
    assert_eq!(list(s, 10).await, [second.clone(), first], "the newest first");
    assert_eq!(list(s, 1).await, [second], "the limit is honoured");
}
