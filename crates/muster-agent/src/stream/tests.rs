use super::*;
use proptest::prelude::*;
use serde_json::json;

/// A short Claude Code run as `stream-json --verbose` prints it.
fn claude_run() -> String {
    [
        json!({"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-sonnet-4-5", "tools": ["Bash"]}),
        json!({"type": "assistant", "session_id": "s-1", "message": {"id": "m1", "role": "assistant", "content": [
            {"type": "text", "text": "I will write the file."},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "echo hi > hello.txt", "description": "write"}}
        ], "usage": {"input_tokens": 10, "output_tokens": 5}}}),
        json!({"type": "user", "session_id": "s-1", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": ""}], "is_error": false}
        ]}}),
        json!({"type": "assistant", "session_id": "s-1", "message": {"content": [{"type": "text", "text": "Done."}]}}),
        json!({"type": "result", "subtype": "success", "is_error": false, "duration_ms": 1234, "num_turns": 2,
               "result": "Done.", "session_id": "s-1", "total_cost_usd": 0.0123,
               "usage": {"input_tokens": 100, "cache_creation_input_tokens": 7, "cache_read_input_tokens": 20, "output_tokens": 30}}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect()
}

fn codex_run() -> String {
    [
        json!({"type": "thread.started", "thread_id": "th-9"}),
        json!({"type": "turn.started"}),
        json!({"type": "item.started", "item": {"id": "i1", "type": "command_execution", "command": "bash -lc ls", "status": "in_progress"}}),
        json!({"type": "item.completed", "item": {"id": "i1", "type": "command_execution", "command": "bash -lc ls", "aggregated_output": "a.txt\n", "exit_code": 0, "status": "completed"}}),
        json!({"type": "item.completed", "item": {"id": "i2", "type": "agent_message", "text": "There is one file."}}),
        json!({"type": "turn.completed", "usage": {"input_tokens": 50, "cached_input_tokens": 8, "output_tokens": 12}}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect()
}

fn parse<D: Dialect>(dialect: D, chunks: &[&[u8]]) -> (Vec<Step>, Summary) {
    let mut p = StreamParser::new(dialect);
    let mut steps = Vec::new();
    for chunk in chunks {
        steps.extend(p.feed(chunk));
    }
    let (last, summary) = p.finish();
    steps.extend(last);
    (steps, summary)
}

#[test]
fn a_claude_run_is_read_into_steps_tokens_and_cost() {
    let text = claude_run();
    let (steps, s) = parse(Claude::default(), &[text.as_bytes()]);
    assert_eq!(steps[0], Step::Session { id: "s-1".into(), model: Some("claude-sonnet-4-5".into()) });
    assert!(steps.contains(&Step::ToolUse {
        id: "toolu_1".into(),
        name: "Bash".into(),
        summary: "echo hi > hello.txt".into()
    }));
    assert_eq!((s.tool_uses, s.tool_errors, s.unreadable), (1, 0, 0));
    let report = s.report.clone().expect("the final report");
    assert!(report.ok);
    assert_eq!((report.turns, report.cost_usd, report.duration_ms), (Some(2), Some(0.0123), Some(1234)));
    assert_eq!(s.usage, Usage { input_tokens: 100, output_tokens: 30, cache_read_tokens: 20, cache_write_tokens: 7 });
    assert_eq!(report.final_text.as_deref(), Some("Done."));
    assert_eq!(s.latest.as_deref(), Some("Done."));
    assert_eq!(s.ended, None);
}

#[test]
fn a_codex_run_is_read_into_the_same_shape() {
    let text = codex_run();
    let (steps, s) = parse(Codex::default(), &[text.as_bytes()]);
    assert_eq!(steps[0], Step::Session { id: "th-9".into(), model: None });
    assert_eq!((s.tool_uses, s.tool_errors), (1, 0));
    // Codex counts cached input inside input_tokens; Muster keeps the two apart.
    assert_eq!(s.usage, Usage { input_tokens: 42, output_tokens: 12, cache_read_tokens: 8, cache_write_tokens: 0 });
    let report = s.report.expect("a report when the turn completes");
    assert_eq!((report.ok, report.turns, report.final_text.as_deref()), (true, Some(1), Some("There is one file.")));
    let failed =
        parse(Codex::default(), &[b"{\"type\":\"turn.failed\",\"error\":{\"message\":\"usage limit reached\"}}\n"]).1;
    let report = failed.report.expect("a failed turn is a report too");
    assert!(!report.ok);
    assert_eq!(failed.last_error.as_deref(), Some("usage limit reached"));
}

/// The lines Claude Code 2.1.330 and Codex 0.169.0 print while they retry a
/// failed model request, as they printed them against a model server that
/// refused the key and one that was overloaded.
#[test]
fn the_agents_retries_of_a_failed_model_request_are_steps_that_name_the_failure() {
    let claude = concat!(
        r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"retry_delay_ms":567,"error_status":401,"error":"authentication_failed","session_id":"b0","uuid":"b1"}"#,
        "\n",
        r#"{"type":"system","subtype":"api_retry","attempt":2,"max_retries":2,"retry_delay_ms":1226,"error_status":null,"error":"unknown","session_id":"b0","uuid":"b2"}"#,
        "\n",
    );
    let (steps, s) = parse(Claude::default(), &[claude.as_bytes()]);
    assert_eq!(
        steps,
        [
            Step::Retry {
                what: "401".into(),
                message: "the model API failed (401 authentication_failed); try 1 of 2 in 567ms".into()
            },
            Step::Retry {
                what: "unknown".into(),
                message: "the model API failed (unknown); try 2 of 2 in 1s226ms".into()
            },
        ]
    );
    // Retries are not the run's error: a run that got past them must not read as failed by them.
    assert_eq!(s.last_error, None);

    let codex = concat!(
        r#"{"type":"error","message":"Reconnecting... 1/5 (unexpected status 503 Service Unavailable: Overloaded, url: http://127.0.0.1:9/v1/responses)"}"#,
        "\n",
        r#"{"type":"error","message":"Reconnecting... 2/5 (stream disconnected before completion: idle timeout waiting for SSE)"}"#,
        "\n",
        r#"{"type":"error","message":"Reconnecting... 1/1 (exceeded retry limit, last status: 429 Too Many Requests)"}"#,
        "\n",
        r#"{"type":"error","message":"unexpected status 503 Service Unavailable: Overloaded"}"#,
        "\n",
        r#"{"type":"turn.failed","error":{"message":"unexpected status 503 Service Unavailable: Overloaded"}}"#,
        "\n",
    );
    let (mut steps, s) = parse(Codex::default(), &[codex.as_bytes()]);
    assert!(matches!(steps.pop(), Some(Step::Report(_))), "{steps:?}");
    assert_eq!(
        steps,
        [
            Step::Retry {
                what: "503".into(),
                message: "the model API failed (unexpected status 503 Service Unavailable: Overloaded, url: \
                          http://127.0.0.1:9/v1/responses); try 1 of 5"
                    .into()
            },
            Step::Retry {
                what: "stream disconnected before completion".into(),
                message: "the model API failed (stream disconnected before completion: idle timeout waiting for SSE); \
                          try 2 of 5"
                    .into()
            },
            Step::Retry {
                what: "429".into(),
                message: "the model API failed (exceeded retry limit, last status: 429 Too Many Requests); try 1 of 1"
                    .into()
            },
            // The failed turn repeats the error: one step, then the report.
            Step::Error { message: "unexpected status 503 Service Unavailable: Overloaded".into() },
        ]
    );
    let report = s.report.expect("the failed turn's report");
    // A body long enough to be clipped is read whole first.
    let long =
        format!("Reconnecting... 3/5 (unexpected status 401 Unauthorized: {}, url: http://h/v1)", "x".repeat(400));
    let line = format!("{}\n", json!({"type": "error", "message": long}));
    let (steps, _) = parse(Codex::default(), &[line.as_bytes()]);
    let [Step::Retry { what, message }] = steps.as_slice() else { panic!("{steps:?}") };
    assert_eq!(what, "401");
    assert!(message.starts_with("the model API failed (unexpected status 401 Unauthorized: xxx"), "{message}");
    assert!(message.ends_with("; try 3 of 5") && !message.contains("(("), "{message}");
    assert_eq!(report.final_text.as_deref(), Some("unexpected status 503 Service Unavailable: Overloaded"));
}

#[test]
fn damage_is_reported_with_a_reason_and_reading_goes_on() {
    let mut text = String::from("{not json\n");
    text.push_str(&"x".repeat(MAX_LINE_BYTES + 10));
    text.push('\n');
    text.push_str("{\"no\":\"type\"}\n");
    text.push_str(&claude_run());
    let (steps, s) = parse(Claude::default(), &[text.as_bytes()]);
    let reasons: Vec<&str> = steps
        .iter()
        .filter_map(|s| if let Step::Unreadable { reason } = s { Some(reason.as_str()) } else { None })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].starts_with("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("over the 4194304-byte limit"), "{reasons:?}");
    assert!(s.report.is_some(), "the run after the damage is read");

    let cut = claude_run();
    let cut = &cut[..cut.len() - 40];
    let s = parse(Claude::default(), &[cut.as_bytes()]).1;
    assert_eq!(s.report, None);
    assert_eq!(s.ended.as_deref(), Some("the stream was cut off mid-line, before the agent's final report"));
    let s = parse(Claude::default(), &[b""]).1;
    assert_eq!(s.ended.as_deref(), Some("the stream ended without the agent's final report"));
}

#[test]
fn clip_cuts_on_a_character_boundary() {
    assert_eq!(clip("héllo wörld", 4), "héll…");
    assert_eq!(clip("  short  ", 10), "short");
}

/// Splits `bytes` at `cuts` (positions taken modulo its length).
fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() }).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in at {
        out.push(&bytes[from..cut]);
        from = cut;
    }
    out.push(&bytes[from..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the bytes and however the pipe splits them, the parsers do
    /// not panic, and the pieces make no difference.
    #[test]
    fn arbitrary_bytes_in_arbitrary_pieces_never_panic_and_read_the_same(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = parse(Claude::default(), &[&bytes]);
        prop_assert_eq!(&parse(Claude::default(), &chunks(&bytes, &cuts)), &whole);
        let whole = parse(Codex::default(), &[&bytes]);
        prop_assert_eq!(&parse(Codex::default(), &chunks(&bytes, &cuts)), &whole);
    }

    /// A real run damaged anywhere (a byte changed, or cut short) still
    /// parses without a panic, and a cut run never claims a report it lost.
    #[test]
    fn a_damaged_run_is_read_as_far_as_it_goes(at in any::<usize>(), byte in any::<u8>(), keep in any::<usize>()) {
        for text in [claude_run(), codex_run()] {
            let mut bytes = text.into_bytes();
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = parse(Claude::default(), &[&bytes]);
            let _ = parse(Codex::default(), &[&bytes]);
            // The final report is the last line: a cut into it (short of
            // its closing newline alone) leaves no report to read, and the
            // summary says why the run is incomplete.
            let cut = &bytes[..keep % bytes.len()];
            if cut.len() < bytes.len() - 1 {
                for s in [parse(Claude::default(), &[cut]).1, parse(Codex::default(), &[cut]).1] {
                    prop_assert_eq!(&s.report, &None, "a cut run claimed a report");
                    prop_assert!(s.ended.is_some(), "a cut run does not say it is incomplete");
                }
            }
        }
    }

    /// Lines of JSON with any shape: unknown fields and types are passed over.
    #[test]
    fn any_json_object_is_read_or_passed_over(
        kind in proptest::sample::select(vec!["system", "assistant", "user", "result", "thread.started", "item.started", "item.completed", "turn.completed", "turn.failed", "error", "other"]),
        content in proptest::collection::vec(proptest::option::of(".{0,20}"), 0..4),
        number in any::<i64>(),
    ) {
        let items: Vec<serde_json::Value> = content.iter().map(|c| json!({"type": c, "text": c, "name": c, "input": number, "id": number})).collect();
        let line = json!({"type": kind, "subtype": "init", "message": {"content": items}, "item": {"type": content.first().cloned().flatten(), "text": number},
                          "usage": {"input_tokens": number}, "num_turns": number, "total_cost_usd": number,
                          // What a session's first line must carry; everything else is of any shape.
                          "session_id": "s-1", "thread_id": "t-1"});
        let text = format!("{line}\n");
        for (steps, s) in [parse(Claude::default(), &[text.as_bytes()]), parse(Codex::default(), &[text.as_bytes()])] {
            // Read or passed over: a JSON object with a type is never taken for damage.
            prop_assert_eq!(s.unreadable, 0);
            prop_assert!(!steps.iter().any(|st| matches!(st, Step::Unreadable { .. })), "{:?}", steps);
        }
    }
}

#[test]
fn a_claude_run_cut_off_before_its_report_still_counts_each_messages_usage_once() {
    let message = |id: &str, text: &str, input: u64| {
        serde_json::json!({"type": "assistant", "message": {"id": id, "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": input, "output_tokens": 3, "cache_read_input_tokens": 5}}})
        .to_string()
    };
    // One message split over two lines repeats its usage; a second message adds its own.
    let text = [message("msg_1", "one", 100), message("msg_1", "two", 100), message("msg_2", "three", 40)].join("\n");
    let s = parse(Claude::default(), &[text.as_bytes(), b"\n"]).1;
    assert_eq!(s.usage, Usage { input_tokens: 140, output_tokens: 6, cache_read_tokens: 10, cache_write_tokens: 0 });
    assert_eq!(s.report, None);
}
