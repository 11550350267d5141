//! Pipelines' prompt templates: a stage's prompt may name what earlier
//! stages produced, as `{{stages.NAME.result}}` (the stage's result) or
//! `{{stages.NAME.task}}` (its task id). The backend knows the values; the
//! rule of what a placeholder is lives here.

/// `prompt` with each `{{stages.NAME.FIELD}}` replaced by what `value(NAME,
/// FIELD)` gives. A placeholder it gives nothing for, and any other `{{…}}`,
/// stays as written; so does an unclosed `{{`.
pub fn render<E>(prompt: &str, mut value: impl FnMut(&str, &str) -> Result<Option<String>, E>) -> Result<String, E> {
    let mut rendered = String::with_capacity(prompt.len());
    let mut rest = prompt;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else { break };
        let placeholder = &rest[open..open + close + 2];
        rendered.push_str(&rest[..open]);
        let mut parts = placeholder[2..placeholder.len() - 2].trim().split('.');
        let found = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("stages"), Some(name), Some(field), None) => value(name, field)?,
            _ => None,
        };
        rendered.push_str(found.as_deref().unwrap_or(placeholder));
        rest = &rest[open + close + 2..];
    }
    rendered.push_str(rest);
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stages(name: &str, field: &str) -> Result<Option<String>, ()> {
        Ok(match (name, field) {
            ("plan", "result") => Some("three steps".into()),
            ("plan", "task") => Some("t_1".into()),
            _ => None,
        })
    }

    #[test]
    fn placeholders_become_what_the_stages_produced_and_the_rest_stays() {
        let out = render("Do {{stages.plan.result}} ({{ stages.plan.task }}).", stages).unwrap();
        assert_eq!(out, "Do three steps (t_1).");
        for kept in [
            "{{stages.build.result}}",
            "{{stages.plan.cost}}",
            "{{stages.plan.result.extra}}",
            "{{ other }}",
            "{{}}",
            "open {{stages.plan.result",
            "}} {{",
        ] {
            assert_eq!(render(kept, stages).unwrap(), kept);
        }
        assert_eq!(render("{{x}}{{stages.plan.task}}", stages).unwrap(), "{{x}}t_1");
        assert_eq!(render::<&str>("{{stages.a.result}}", |_, _| Err("the store failed")), Err("the store failed"));
    }

    proptest! {
        #[test]
        fn a_prompt_renders_as_itself_when_no_stage_has_a_value(prompt in ".{0,200}") {
            prop_assert_eq!(render::<()>(&prompt, |_, _| Ok(None)).unwrap(), prompt);
        }

        #[test]
        fn text_around_placeholders_is_kept_whole(before in "[^{}]{0,40}", after in "[^{}]{0,40}") {
            let prompt = format!("{before}{{{{stages.plan.result}}}}{after}");
            prop_assert_eq!(render(&prompt, stages).unwrap(), format!("{before}three steps{after}"));
        }
    }
}
