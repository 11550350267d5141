//! Pipelines: a YAML file of stages, each a task template, created as tasks
//! that depend on the stages before them.
//!
//! ```yaml
//! name: login-feature
//! vars:
//!   feature: login
//! stages:
//!   - name: spec
//!     runner: claude
//!     prompt: Write a spec for {{vars.feature}}.
//!   - name: implement            # needs the stage before it unless `needs` says otherwise
//!     prompt: "Implement this spec: {{stages.spec.result}}"
//! ```
//!
//! The file is checked whole before anything is created, and every problem
//! is reported with its line. `{{vars.K}}` is filled in at once;
//! `{{stages.NAME.result}}` and `{{stages.NAME.task}}` when that stage's
//! dependencies have succeeded and it is queued (by the store).

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node};
use muster_core::{RunnerName, TaskId};
use muster_proto::api::{TaskDefaults, TaskSubmit};
use muster_store::NewStage;
use std::collections::{BTreeMap, BTreeSet};

/// Most stages in one pipeline.
pub const MAX_STAGES: usize = 50;

/// One problem in the file, at a line (1-based; 0 when it is about the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// A checked pipeline, ready to be created.
#[derive(Debug)]
pub struct Checked {
    pub name: String,
    pub stages: Vec<NewStage>,
}

/// How each field a stage may set is written.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Bool,
    Count,
    Money,
    List,
    Duration,
}

const STAGE_FIELDS: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("needs", Kind::List),
    ("prompt", Kind::Text),
    ("runner", Kind::Text),
    ("capabilities", Kind::List),
    ("priority", Kind::Text),
    ("timeout", Kind::Duration),
    ("max_attempts", Kind::Count),
    ("repo", Kind::Text),
    ("base", Kind::Text),
    ("auto_commit", Kind::Bool),
    ("keep_worktree", Kind::Text),
    ("fallback", Kind::List),
    ("max_cost_usd", Kind::Money),
    ("max_tokens", Kind::Count),
    ("requires_approval", Kind::Bool),
    ("on_dependency_failure", Kind::Text),
    ("checks", Kind::List),
];

fn line_of(node: &Node) -> usize {
    node.span().start().map_or(0, |m| m.line())
}

fn key_line(key: &MarkedScalarNode) -> usize {
    key.span().start().map_or(0, |m| m.line())
}

struct Checker<'a> {
    problems: Vec<Problem>,
    defaults: &'a TaskDefaults,
    known_runners: &'a BTreeSet<RunnerName>,
}

impl Checker<'_> {
    fn problem(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem { line, message: message.into() });
    }

    fn text<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match node {
            Node::Scalar(s) => Some(s.as_str()),
            _ => {
                self.problem(line_of(node), format!("{what} must be text"));
                None
            }
        }
    }

    fn list(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        match node {
            Node::Sequence(seq) => {
                let mut out = Vec::new();
                for item in seq.iter() {
                    out.push(self.text(item, &format!("each of {what}"))?.to_owned());
                }
                Some(out)
            }
            // A single name is a list of one.
            Node::Scalar(s) if !s.as_str().is_empty() => Some(vec![s.as_str().to_owned()]),
            _ => {
                self.problem(line_of(node), format!("{what} must be a list"));
                None
            }
        }
    }

    /// A stage's field as the JSON the task API takes.
    fn field(&mut self, key: &str, kind: Kind, node: &Node) -> Option<serde_json::Value> {
        use serde_json::Value;
        let line = line_of(node);
        Some(match kind {
            Kind::Text => Value::String(self.text(node, key)?.to_owned()),
            Kind::Duration => Value::String(self.text(node, key)?.to_owned()),
            Kind::List => Value::from(self.list(node, key)?),
            Kind::Bool => match self.text(node, key)? {
                "true" | "yes" | "on" => Value::Bool(true),
                "false" | "no" | "off" => Value::Bool(false),
                other => {
                    self.problem(line, format!("{key}: {other:?} is not true or false"));
                    return None;
                }
            },
            Kind::Count => match self.text(node, key)?.parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => {
                    self.problem(line, format!("{key} must be a whole number"));
                    return None;
                }
            },
            Kind::Money => match self.text(node, key)?.parse::<f64>() {
                Ok(n) if n.is_finite() => Value::from(n),
                _ => {
                    self.problem(line, format!("{key} must be a number (US dollars)"));
                    return None;
                }
            },
        })
    }
}

/// `{{ ... }}` placeholders in `text`, trimmed.
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else { break };
        out.push(rest[open + 2..open + close].trim());
        rest = &rest[open + close + 2..];
    }
    out
}

fn fill_vars(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else { break };
        let inner = rest[open + 2..open + close].trim();
        out.push_str(&rest[..open]);
        match inner.strip_prefix("vars.").and_then(|k| vars.get(k)) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

fn load_problem(e: &LoadError) -> Problem {
    let (line, message) = match e {
        LoadError::TopLevelMustBeMapping(m) => (m.line(), "the file must be a mapping (name, vars, stages)".to_owned()),
        LoadError::TopLevelMustBeSequence(m) => (m.line(), "expected a list".to_owned()),
        LoadError::UnexpectedAnchor(m) => (m.line(), "anchors are not supported".to_owned()),
        LoadError::MappingKeyMustBeScalar(m) => (m.line(), "keys must be plain text".to_owned()),
        LoadError::UnexpectedTag(m) => (m.line(), "tags are not supported".to_owned()),
        LoadError::ScanError(m, e) => (m.line(), format!("not valid YAML: {}", e.info())),
        LoadError::DuplicateKey(inner) => {
            (inner.key.span().start().map_or(0, |m| m.line()), format!("{:?} is given twice", inner.key.as_str()))
        }
    };
    Problem { line, message }
}

/// Checks a pipeline file whole; `vars` (from `--var`) override its own.
pub fn check(
    source: &str,
    vars: &BTreeMap<String, String>,
    defaults: &TaskDefaults,
    known_runners: &BTreeSet<RunnerName>,
    new_id: &mut dyn FnMut() -> TaskId,
) -> Result<Checked, Vec<Problem>> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = marked_yaml::parse_yaml_with_options(0, source, options).map_err(|e| vec![load_problem(&e)])?;
    let mut ck = Checker { problems: Vec::new(), defaults, known_runners };
    let Some(top) = root.as_mapping() else {
        return Err(vec![Problem { line: line_of(&root), message: "the file must be a mapping".into() }]);
    };
    for (key, _) in top.iter() {
        if !["name", "vars", "stages"].contains(&key.as_str()) {
            ck.problem(key_line(key), format!("unknown key {:?}; a pipeline has name, vars and stages", key.as_str()));
        }
    }
    let name = match top.get_node("name") {
        Some(n) => ck.text(n, "name").map(|s| s.trim().to_owned()).unwrap_or_default(),
        None => {
            ck.problem(line_of(&root), "name is missing");
            String::new()
        }
    };
    if top.get_node("name").is_some() && (name.is_empty() || name.len() > 200) {
        ck.problem(top.get_node("name").map_or(0, line_of), "name must be 1 to 200 characters");
    }
    let mut all_vars: BTreeMap<String, String> = BTreeMap::new();
    match top.get_node("vars") {
        None => {}
        Some(Node::Mapping(m)) => {
            for (k, v) in m.iter() {
                if let Some(text) = ck.text(v, &format!("vars.{}", k.as_str())) {
                    all_vars.insert(k.as_str().to_owned(), text.to_owned());
                }
            }
        }
        Some(other) => ck.problem(line_of(other), "vars must be a mapping of names to values"),
    }
    all_vars.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));

    let stages = match top.get_node("stages") {
        Some(Node::Sequence(seq)) if !seq.is_empty() => seq.iter().collect::<Vec<_>>(),
        Some(other) => {
            ck.problem(line_of(other), "stages must be a list of one or more stages");
            Vec::new()
        }
        None => {
            ck.problem(line_of(&root), "stages is missing");
            Vec::new()
        }
    };
    if stages.len() > MAX_STAGES {
        ck.problem(top.get_node("stages").map_or(0, line_of), format!("at most {MAX_STAGES} stages"));
    }

    // Each stage's name, its task id, and the stages it needs, transitively.
    let mut seen: Vec<(String, TaskId, BTreeSet<String>)> = Vec::new();
    let mut out = Vec::new();
    for (i, node) in stages.iter().enumerate() {
        let Some(stage) = node.as_mapping() else {
            ck.problem(line_of(node), format!("stage {} must be a mapping with at least name and prompt", i + 1));
            continue;
        };
        if let Some(stage) = check_stage(&mut ck, stage, line_of(node), &seen, &all_vars) {
            let id = new_id();
            let mut ancestors = BTreeSet::new();
            for need in &stage.needs {
                if let Some((_, _, theirs)) = seen.iter().find(|(n, _, _)| n == need) {
                    ancestors.extend(theirs.iter().cloned());
                }
                ancestors.insert(need.clone());
            }
            let mut spec = stage.spec;
            spec.depends_on = stage
                .needs
                .iter()
                .filter_map(|n| seen.iter().find(|(s, _, _)| s == n))
                .map(|(_, t, _)| t.clone())
                .collect();
            seen.push((stage.name.clone(), id.clone(), ancestors));
            out.push(NewStage { name: stage.name, task: id, spec, templated: stage.templated });
        } else {
            // Keep later stages' `needs` from reporting a name that is only badly written.
            if let Some(n) = stage.get_scalar("name") {
                seen.push((n.as_str().to_owned(), new_id(), BTreeSet::new()));
            }
        }
    }
    if ck.problems.is_empty() {
        Ok(Checked { name, stages: out })
    } else {
        ck.problems.sort_by_key(|p| p.line);
        Err(ck.problems)
    }
}

struct Stage {
    name: String,
    needs: Vec<String>,
    spec: muster_core::TaskSpec,
    templated: bool,
}

fn check_stage(
    ck: &mut Checker<'_>,
    stage: &MarkedMappingNode,
    line: usize,
    before: &[(String, TaskId, BTreeSet<String>)],
    vars: &BTreeMap<String, String>,
) -> Option<Stage> {
    let errors_before = ck.problems.len();
    let mut body = serde_json::Map::new();
    let mut lines: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, value) in stage.iter() {
        let k = key.as_str();
        match STAGE_FIELDS.iter().find(|(f, _)| *f == k) {
            Some((field, kind)) => {
                lines.insert(field, line_of(value).max(key_line(key)));
                if let Some(v) = ck.field(k, *kind, value) {
                    body.insert(k.to_owned(), v);
                }
            }
            None => {
                let fields: Vec<&str> = STAGE_FIELDS.iter().map(|(f, _)| *f).collect();
                ck.problem(key_line(key), format!("unknown key {k:?}; a stage takes {}", fields.join(", ")));
            }
        }
    }
    let name = match body.remove("name") {
        Some(serde_json::Value::String(n)) => n,
        _ => {
            if !lines.contains_key("name") {
                ck.problem(line, "this stage has no name");
            }
            return None;
        }
    };
    let at = |f: &str| lines.get(f).copied().unwrap_or(line);
    let name_ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        ck.problem(at("name"), format!("stage name {name:?}: use 1 to 64 letters, digits, - or _"));
    }
    if before.iter().any(|(n, _, _)| *n == name) {
        ck.problem(at("name"), format!("stage name {name:?} is used twice"));
    }
    let needs: Vec<String> = match body.remove("needs") {
        Some(serde_json::Value::Array(list)) => {
            list.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        }
        _ => before.last().map(|(n, _, _)| vec![n.clone()]).unwrap_or_default(),
    };
    for need in &needs {
        if !before.iter().any(|(n, _, _)| n == need) {
            ck.problem(at("needs"), format!("stage {name}: needs {need:?}, which is not a stage before it"));
        }
    }
    let Some(serde_json::Value::String(prompt)) = body.get("prompt").cloned() else {
        if !lines.contains_key("prompt") {
            ck.problem(line, format!("stage {name} has no prompt"));
        }
        return None;
    };
    // What the prompt may name: vars, and the stages it needs (directly or not).
    let mut ancestors: BTreeSet<&str> = BTreeSet::new();
    for need in &needs {
        ancestors.insert(need);
        if let Some((_, _, theirs)) = before.iter().find(|(n, _, _)| n == need) {
            ancestors.extend(theirs.iter().map(String::as_str));
        }
    }
    let mut templated = false;
    for p in placeholders(&prompt) {
        let parts: Vec<&str> = p.split('.').collect();
        match parts.as_slice() {
            ["vars", k] if vars.contains_key(*k) => {}
            ["vars", k] => ck.problem(
                at("prompt"),
                format!("stage {name}: {{{{vars.{k}}}}} has no value; set it under vars or with --var {k}=VALUE"),
            ),
            ["stages", s, "result" | "task"] if ancestors.contains(s) => templated = true,
            ["stages", _, "result" | "task"] => ck.problem(
                at("prompt"),
                format!("stage {name}: {{{{{p}}}}} names a stage it does not need; add it to needs"),
            ),
            ["stages", _, f] => {
                ck.problem(at("prompt"), format!("stage {name}: {{{{{p}}}}}: {f:?} is not result or task"))
            }
            _ => ck.problem(
                at("prompt"),
                format!("stage {name}: {{{{{p}}}}} is not vars.NAME, stages.NAME.result or stages.NAME.task"),
            ),
        }
    }
    body.insert("prompt".into(), serde_json::Value::String(fill_vars(&prompt, vars)));
    if let Some(serde_json::Value::String(runner)) = body.get("runner")
        && let Ok(runner) = RunnerName::parse(runner)
        && !ck.known_runners.contains(&runner)
    {
        let known: Vec<&str> = ck.known_runners.iter().map(RunnerName::as_str).collect();
        ck.problem(
            at("runner"),
            format!("stage {name}: unknown runner {:?}; known runners: {}", runner.as_str(), known.join(", ")),
        );
    }
    if let Some(serde_json::Value::Array(fallback)) = body.get("fallback") {
        for f in fallback.iter().filter_map(|f| f.as_str()) {
            if let Ok(r) = RunnerName::parse(f)
                && !ck.known_runners.contains(&r)
            {
                ck.problem(at("fallback"), format!("stage {name}: unknown fallback runner {f:?}"));
            }
        }
    }
    if ck.problems.len() > errors_before {
        return None;
    }
    let submit: TaskSubmit = match serde_json::from_value(serde_json::Value::Object(body)) {
        Ok(s) => s,
        Err(e) => {
            ck.problem(line, format!("stage {name}: {e}"));
            return None;
        }
    };
    let spec = match submit.into_spec(ck.defaults).and_then(|s| s.validate().map_err(Into::into)) {
        Ok(spec) => spec,
        Err(e) => {
            let field = e.field.split('.').next().unwrap_or_default().to_owned();
            ck.problem(at(&field), format!("stage {name}: {}: {}", e.field, e.reason));
            return None;
        }
    };
    if !ck.known_runners.contains(&spec.runner) {
        let known: Vec<&str> = ck.known_runners.iter().map(RunnerName::as_str).collect();
        ck.problem(
            at("runner"),
            format!("stage {name}: unknown runner {:?}; known runners: {}", spec.runner.as_str(), known.join(", ")),
        );
        return None;
    }
    Some(Stage { name, needs, spec, templated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(source: &str) -> Result<Checked, Vec<Problem>> {
        let defaults = TaskDefaults { runner: None, timeout: Duration::from_secs(600), max_attempts: 3 };
        let known: BTreeSet<RunnerName> =
            ["shell", "claude"].iter().map(|r| RunnerName::parse(r).expect("a runner name")).collect();
        let mut n = 0u128;
        let mut new_id = || {
            n += 1;
            TaskId::from_parts(1_700_000_000_000, n)
        };
        check(source, &BTreeMap::from([("who".to_owned(), "ops".to_owned())]), &defaults, &known, &mut new_id)
    }

    #[test]
    fn stages_depend_on_the_one_before_unless_they_say_and_vars_are_filled_in() {
        let checked = run("name: ship\nvars:\n  feature: login\nstages:\n  - name: spec\n    runner: shell\n    prompt: spec {{vars.feature}} for {{ vars.who }}\n  - name: build\n    runner: shell\n    prompt: \"build {{stages.spec.result}}\"\n  - name: docs\n    runner: claude\n    needs: [spec]\n    prompt: docs\n    max_attempts: 1\n    requires_approval: yes\n")
            .expect("a valid file");
        assert_eq!(checked.name, "ship");
        let s = &checked.stages;
        assert_eq!(s[0].spec.prompt, "spec login for ops");
        assert!(s[0].spec.depends_on.is_empty() && !s[0].templated);
        assert_eq!(s[1].spec.depends_on, vec![s[0].task.clone()]);
        assert!(s[1].templated, "filled in when it is queued");
        assert_eq!(s[1].spec.prompt, "build {{stages.spec.result}}");
        assert_eq!(s[2].spec.depends_on, vec![s[0].task.clone()]);
        assert_eq!((s[2].spec.max_attempts, s[2].spec.requires_approval), (1, true));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let problems = run("name: bad\nstages:\n  - name: spec\n    runner: nowhere\n    prompt: x\n  - name: spec\n    runner: shell\n    prompt: \"{{stages.later.result}} {{vars.nope}}\"\n    colour: blue\n  - name: late\n    runner: shell\n    needs: [ghost]\n    prompt: y\n    max_attempts: many\n")
            .expect_err("problems");
        let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        let has = |line: usize, needle: &str| got.iter().any(|(l, m)| *l == line && m.contains(needle));
        assert!(has(4, "unknown runner \"nowhere\""), "{got:?}");
        assert!(has(6, "used twice"), "{got:?}");
        assert!(has(8, "names a stage it does not need"), "{got:?}");
        assert!(has(8, "{{vars.nope}} has no value"), "{got:?}");
        assert!(has(9, "unknown key \"colour\""), "{got:?}");
        assert!(has(12, "needs \"ghost\""), "{got:?}");
        assert!(has(14, "max_attempts must be a whole number"), "{got:?}");
        assert_eq!(got.len(), 7, "{got:?}");
    }

    #[test]
    fn a_file_that_is_not_yaml_or_not_a_pipeline_is_refused_plainly() {
        let p = run("name: x\nstages: [\n").expect_err("bad yaml");
        assert!(p[0].message.starts_with("not valid YAML"), "{p:?}");
        let p = run("- a\n- b\n").expect_err("a list");
        assert!(p[0].message.contains("mapping"), "{p:?}");
        let p = run("name: x\nname: y\nstages: []\n").expect_err("twice");
        assert_eq!((p[0].line, p[0].message.as_str()), (2, "\"name\" is given twice"));
        let p = run("name: x\n").expect_err("no stages");
        assert!(p.iter().any(|p| p.message == "stages is missing"), "{p:?}");
        let p = run("name: x\nstages:\n  - runner: shell\n    prompt: x\n").expect_err("no name");
        assert_eq!((p[0].line, p[0].message.as_str()), (3, "this stage has no name"));
    }
}
