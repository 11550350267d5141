//! Messages: mailboxes of agents and tasks, channels with history, threads,
//! and what was delivered or read.

use super::*;
use crate::{ChannelRecord, MAX_MESSAGE, MessageRecord, Recipient};

async fn send(
    s: &dyn Store,
    to: &Recipient,
    sender: &str,
    body: &str,
    reply_to: Option<i64>,
    now: Millis,
) -> MessageRecord {
    ok("send_message", s.send_message(to, sender, body, reply_to, now).await)
}

async fn mailbox(s: &dyn Store, to: &Recipient, thread: Option<i64>, after: i64, limit: usize) -> Vec<MessageRecord> {
    ok("messages", s.messages(to, thread, after, limit).await)
}

fn ids(list: &[MessageRecord]) -> Vec<i64> {
    list.iter().map(|m| m.id).collect()
}

/// Channels are created once, by a valid name, and listed by name with how many messages they hold.
pub async fn channels_are_created_once_and_count_their_messages(store: Arc<dyn Store>) {
    let s = &*store;
    let mark = last_seq(s).await;
    let releases = ok("create_channel", s.create_channel("releases", "what shipped", "lead", at(1)).await);
    let expected = ChannelRecord {
        name: "releases".into(),
        description: "what shipped".into(),
        created_by: "lead".into(),
        created_at: at(1),
        messages: 0,
    };
    assert_eq!(releases, expected);
    let events = assert_events(s, mark, &["channel.created"], "create_channel").await;
    assert_eq!(events[0].detail.as_deref(), Some("releases (by lead)"));

    let before = (snapshot(s).await, ok("channels", s.channels().await));
    match s.create_channel("releases", "again", "ops", at(2)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("create_channel with a taken name: expected StoreError::Conflict, got {other:?}"),
    }
    for bad in ["", "Releases", "has space", &"x".repeat(65)] {
        let what = format!("create_channel named {bad:?}");
        assert_eq!(invalid(&what, s.create_channel(bad, "", "ops", at(2)).await).field, "name", "{what}");
    }
    let long = "x".repeat(501);
    let r = s.create_channel("chatter", &long, "ops", at(2)).await;
    assert_eq!(invalid("create_channel with a long description", r).field, "description");
    assert_eq!((snapshot(s).await, ok("channels", s.channels().await)), before, "a refused channel wrote something");

    ok("create_channel", s.create_channel("alerts", "", "ops", at(3)).await);
    let to = Recipient::Channel("releases".into());
    send(s, &to, "lead", "v1.2 is out", None, at(4)).await;
    send(s, &to, "lead", "v1.3 is out", None, at(5)).await;
    let listed: Vec<(String, u64)> =
        ok("channels", s.channels().await).into_iter().map(|c| (c.name, c.messages)).collect();
    assert_eq!(listed, [("alerts".into(), 0), ("releases".into(), 2)], "channels by name, with their messages");
}

/// A message goes to a known agent, task or channel; a reply joins the
/// thread of what it answers; each mailbox reads oldest first.
pub async fn messages_are_kept_by_mailbox_and_thread_and_read_in_order(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    ok("create_channel", s.create_channel("releases", "", "lead", at(0)).await);
    let to_agent = Recipient::Agent(a.clone());
    let to_task = Recipient::Task(task.clone());
    let channel = Recipient::Channel("releases".into());

    let mark = last_seq(s).await;
    let hello = send(s, &to_agent, "lead", "hello\nsecond line", None, at(1)).await;
    let expected = MessageRecord {
        id: hello.id,
        to: to_agent.clone(),
        sender: "lead".into(),
        body: "hello\nsecond line".into(),
        thread: hello.id,
        reply_to: None,
        created_at: at(1),
        delivered_at: None,
        read_at: None,
    };
    assert_eq!(hello, expected, "a message that replies to nothing starts its own thread");
    let note = send(s, &to_task, "lead", "mind the tests", None, at(2)).await;
    let shipped = send(s, &channel, "lead", "v1.2 is out", None, at(3)).await;
    let events = assert_events(s, mark, &["message.sent"; 3], "send_message").await;
    assert_eq!((events[0].agent.as_ref(), events[0].task.as_ref()), (Some(&a), None), "on the agent's timeline");
    assert_eq!((events[1].agent.as_ref(), events[1].task.as_ref()), (None, Some(&task)), "on the task's timeline");
    assert_eq!(events[0].detail, Some(format!("#{} to agent:a from lead: hello", hello.id)));

    // Refusals name what is wrong and write nothing.
    let before = snapshot(s).await;
    let too_long = "x".repeat(MAX_MESSAGE + 1);
    for (what, body) in [("an empty body", ""), ("a blank body", " \n "), ("a body over the limit", too_long.as_str())]
    {
        let r = s.send_message(&channel, "lead", body, None, at(4)).await;
        assert_eq!(invalid(&format!("send_message with {what}"), r).field, "body");
    }
    let unknown = [
        (Recipient::Agent(name("nobody")), "agent"),
        (Recipient::Task(task_id(9)), "task"),
        (Recipient::Channel("nowhere".into()), "channel"),
    ];
    for (to, what) in unknown {
        let r = s.send_message(&to, "lead", "hi", None, at(4)).await;
        assert_eq!(not_found(&format!("send_message to an unknown {what}"), r), what);
    }
    let r = s.send_message(&channel, "lead", "hi", Some(shipped.id + 100), at(4)).await;
    assert_eq!(not_found("a reply to an unknown message", r), "message");
    let r = s.send_message(&to_agent, "lead", "psst", Some(shipped.id), at(4)).await;
    assert_eq!(invalid("a reply to a channel's message from outside it", r).field, "reply_to");
    assert_unchanged(s, &before, "a refused send_message").await;

    // A reply joins the thread of what it answers, however deep.
    let reply = send(s, &channel, "ops", "deployed", Some(shipped.id), at(5)).await;
    let deeper = send(s, &channel, "lead", "thanks", Some(reply.id), at(6)).await;
    let other = send(s, &channel, "lead", "v1.3 is next", None, at(7)).await;
    assert_eq!((reply.thread, reply.reply_to), (shipped.id, Some(shipped.id)));
    assert_eq!(
        (deeper.thread, deeper.reply_to),
        (shipped.id, Some(reply.id)),
        "a reply to a reply stays in the thread"
    );
    // A conversation between mailboxes: the agent answers the task's note in the task's mailbox.
    let answer = send(s, &to_task, "agent:a", "will do", Some(note.id), at(8)).await;
    assert_eq!(answer.thread, note.id);

    // Each mailbox reads oldest first, after a message, by thread, up to a limit.
    let all = mailbox(s, &channel, None, 0, 100).await;
    assert_eq!(ids(&all), [shipped.id, reply.id, deeper.id, other.id]);
    assert_eq!(all[1], reply, "messages answers with the stored messages");
    assert_eq!(ids(&mailbox(s, &channel, None, reply.id, 100).await), [deeper.id, other.id], "after a message");
    assert_eq!(ids(&mailbox(s, &channel, Some(shipped.id), 0, 100).await), [shipped.id, reply.id, deeper.id]);
    assert_eq!(ids(&mailbox(s, &channel, None, 0, 2).await), [shipped.id, reply.id], "the limit is honoured");
    assert_eq!(ids(&mailbox(s, &to_task, None, 0, 100).await), [note.id, answer.id]);
    assert_eq!(mailbox(s, &to_agent, None, 0, 100).await, [expected]);
    assert_eq!(mailbox(s, &Recipient::Channel("other".into()), None, 0, 100).await, []);
}

/// An agent's mail waits until its socket takes it, and is marked
/// delivered once; a task's mail is marked read once, by its own runs only.
pub async fn mail_is_marked_delivered_or_read_once_and_only_in_its_own_mailbox(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let to_a = Recipient::Agent(a.clone());
    let first = send(s, &to_a, "lead", "one", None, at(1)).await;
    let for_b = send(s, &Recipient::Agent(b.clone()), "lead", "for b", None, at(2)).await;
    let second = send(s, &to_a, "lead", "two", None, at(3)).await;
    let third = send(s, &to_a, "lead", "three", None, at(4)).await;
    let undelivered = |agent: AgentName| async move { ids(&ok("undelivered", s.undelivered(&agent).await)) };
    assert_eq!(undelivered(a.clone()).await, [first.id, second.id, third.id], "an agent's mail, oldest first");
    assert_eq!(undelivered(b.clone()).await, [for_b.id]);

    let mark = last_seq(s).await;
    let ids_given = vec![first.id, second.id, for_b.id, third.id + 100];
    assert_eq!(ok("mark_delivered", s.mark_delivered(&a, ids_given, at(5)).await), 2, "only the agent's own mail");
    let events = assert_events(s, mark, &["message.delivered"; 2], "mark_delivered").await;
    assert!(events.iter().all(|e| e.agent.as_ref() == Some(&a)), "{events:?}");
    assert_eq!(undelivered(a.clone()).await, [third.id]);
    assert_eq!(undelivered(b.clone()).await, [for_b.id], "another agent's mail is not marked");

    // Marking again (a resend) changes nothing: the first delivery's time stands.
    let before = snapshot(s).await;
    assert_eq!(ok("mark_delivered", s.mark_delivered(&a, vec![first.id, second.id], at(6)).await), 0);
    assert_unchanged(s, &before, "marking delivered mail again").await;
    let mail = mailbox(s, &to_a, None, 0, 100).await;
    let delivered: Vec<Option<Millis>> = mail.iter().map(|m| m.delivered_at).collect();
    assert_eq!(delivered, [Some(at(5)), Some(at(5)), None]);

    // A task's mailbox: read once, the first time standing; another task's mail untouched.
    let task = submit(s, 1, spec("work"), at(7)).await;
    let other = submit(s, 2, spec("other"), at(7)).await;
    let note = send(s, &Recipient::Task(task.clone()), "lead", "mind the tests", None, at(8)).await;
    let not_yours = send(s, &Recipient::Task(other.clone()), "lead", "private", None, at(8)).await;
    ok("mark_read", s.mark_read(&task, vec![note.id, not_yours.id], at(9)).await);
    ok("mark_read", s.mark_read(&task, vec![note.id], at(10)).await);
    let read = mailbox(s, &Recipient::Task(task.clone()), None, 0, 100).await;
    assert_eq!(read, [MessageRecord { read_at: Some(at(9)), ..note }], "read once, at the first reading");
    let unread = mailbox(s, &Recipient::Task(other.clone()), None, 0, 100).await;
    assert_eq!(unread, [not_yours], "a run marks only its own task's mail as read");
}
