//! Property test of the reply queue against a small model of a PostgreSQL backend: for any batches of
//! the client's requests mixed with replies pgsluice answers itself and requests of its own, and however
//! the requests and the server's replies interleave, the client receives exactly the replies it would
//! from PostgreSQL for its own requests, in order: one reply sequence per request, an error skipping
//! the rest of its batch up to Sync, pgsluice's own requests unseen.

use std::collections::VecDeque;

use bytes::Bytes;
use proptest::prelude::*;

use super::{Entry, ReplyQueue, Request, Verdict};
use crate::protocol::tags::backend;

/// A request of the client's (forwarded, or answered by pgsluice) or of pgsluice's own.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// Forwarded; `fails`: the server answers it with an error.
    Pass { request: Request, fails: bool, rows: u8 },
    /// Answered by pgsluice (a ParseComplete for a statement the server holds, a CloseComplete).
    Synth,
    /// pgsluice's own request (a Parse before a Bind, an eviction Close); only its error is shown.
    Own { request: Request, fails: bool },
}

/// One message the client receives: its tag and the index of the request it answers.
type Shown = (u8, usize);

fn extended_request() -> impl Strategy<Value = Request> {
    prop::sample::select(vec![
        Request::Parse,
        Request::Bind,
        Request::DescribeStatement,
        Request::DescribePortal,
        Request::Execute,
        Request::Close,
    ])
}

fn item() -> impl Strategy<Value = Item> {
    let fails = prop::bool::weighted(0.15);
    prop_oneof![
        6 => (extended_request(), fails, 0..3u8).prop_map(|(request, fails, rows)| Item::Pass { request, fails, rows }),
        1 => Just(Item::Synth),
        1 => (prop::sample::select(vec![Request::Parse, Request::Close]), fails)
            .prop_map(|(request, fails)| Item::Own { request, fails }),
    ]
}

/// A batch: extended requests then Sync, or one simple Query of `rows` rows.
fn batch() -> impl Strategy<Value = Vec<Item>> {
    prop_oneof![
        3 => prop::collection::vec(item(), 0..6).prop_map(|mut items| {
            items.push(Item::Pass { request: Request::Sync, fails: false, rows: 0 });
            items
        }),
        1 => (prop::bool::weighted(0.2), 0..3u8)
            .prop_map(|(fails, rows)| vec![Item::Pass { request: Request::Simple, fails, rows }]),
    ]
}

/// What PostgreSQL sends for one request that it runs.
fn server_replies(request: Request, fails: bool, rows: u8) -> Vec<u8> {
    let mut out = Vec::new();
    match request {
        Request::Simple => {
            out.push(backend::ROW_DESCRIPTION);
            out.extend(std::iter::repeat_n(backend::DATA_ROW, rows.into()));
            out.push(if fails { backend::ERROR_RESPONSE } else { backend::COMMAND_COMPLETE });
            out.push(backend::READY_FOR_QUERY);
            return out;
        }
        _ if fails => return vec![backend::ERROR_RESPONSE],
        Request::Parse => out.push(backend::PARSE_COMPLETE),
        Request::Bind => out.push(backend::BIND_COMPLETE),
        Request::DescribeStatement => out.extend([
            backend::PARAMETER_DESCRIPTION,
            if rows == 0 { backend::NO_DATA } else { backend::ROW_DESCRIPTION },
        ]),
        Request::DescribePortal => out.push(if rows == 0 { backend::NO_DATA } else { backend::ROW_DESCRIPTION }),
        Request::Execute => {
            out.extend(std::iter::repeat_n(backend::DATA_ROW, rows.into()));
            out.push(
                [backend::COMMAND_COMPLETE, backend::EMPTY_QUERY_RESPONSE, backend::PORTAL_SUSPENDED]
                    [usize::from(rows) % 3],
            );
        }
        Request::Close => out.push(backend::CLOSE_COMPLETE),
        Request::Sync | Request::Abort | Request::Shadow => out.push(backend::READY_FOR_QUERY),
    }
    out
}

/// The backend: runs forwarded requests in order, skipping the rest of a batch after an error.
#[derive(Default)]
struct Backend {
    skipping: bool,
    output: VecDeque<Shown>,
}

impl Backend {
    fn run(&mut self, index: usize, request: Request, fails: bool, rows: u8) {
        if request == Request::Sync {
            self.skipping = false;
        } else if self.skipping {
            return;
        }
        let replies = server_replies(request, fails, rows);
        self.skipping = fails && request != Request::Simple;
        self.output.extend(replies.into_iter().map(|tag| (tag, index)));
    }
}

/// What the client must receive, in order.
fn expected(items: &[Item]) -> Vec<Shown> {
    let mut shown = Vec::new();
    let mut failed = false;
    for (i, item) in items.iter().enumerate() {
        match *item {
            Item::Pass { request: Request::Sync, .. } => {
                failed = false;
                shown.push((backend::READY_FOR_QUERY, i));
            }
            _ if failed => {}
            Item::Pass { request, fails, rows } => {
                shown.extend(server_replies(request, fails, rows).into_iter().map(|t| (t, i)));
                failed = fails && request != Request::Simple;
            }
            Item::Synth => shown.push((b'#', i)),
            Item::Own { fails, .. } => {
                if fails {
                    shown.push((backend::ERROR_RESPONSE, i));
                    failed = true;
                }
            }
        }
    }
    shown
}

fn entry(i: usize, item: Item) -> Entry {
    match item {
        Item::Pass { request, .. } => Entry::pass(request),
        Item::Synth => Entry::synth(Bytes::from(vec![b'#', i as u8]), None),
        Item::Own { request, .. } => Entry::swallowed(request, None),
    }
}

/// Sends `items` and delivers the server's replies in the order `schedule` picks (even: send the next
/// request, odd: deliver one reply; a choice that cannot be made takes the other), as the session does:
/// `take_due` after forwarding and after each reply. Returns what the client received.
fn run(items: &[Item], schedule: &[bool]) -> Vec<Shown> {
    let mut queue = ReplyQueue::default();
    let mut backend = Backend::default();
    let mut shown: Vec<Shown> = Vec::new();
    let mut next = 0;
    let mut choices = schedule.iter().copied().chain(std::iter::repeat(false));
    let synth_index = |b: &Bytes| b.get(1).map_or(usize::MAX, |i| usize::from(*i));
    loop {
        let send = choices.next().unwrap_or(false);
        let can_send = next < items.len();
        let can_deliver = !backend.output.is_empty();
        if can_send && (send || !can_deliver) {
            let item = items[next];
            queue.push(entry(next, item));
            let forwarded = match item {
                Item::Pass { request, fails, rows } => Some((request, fails, rows)),
                Item::Own { request, fails } => Some((request, fails, 0)),
                Item::Synth => None,
            };
            if let Some((request, fails, rows)) = forwarded {
                backend.run(next, request, fails, rows);
            }
            next += 1;
            queue.take_due(&mut |b| shown.push((b'#', synth_index(&b))));
        } else if let Some((tag, i)) = backend.output.pop_front() {
            let body: &[u8] = if tag == backend::ERROR_RESPONSE { b"SERROR\0C42601\0Msyntax error\0\0" } else { b"" };
            let (verdict, _) = queue.on_server(tag, Some(body), &mut |b| shown.push((b'#', synth_index(&b))));
            if verdict == Verdict::Pass {
                shown.push((tag, i));
            }
            queue.take_due(&mut |b| shown.push((b'#', synth_index(&b))));
        } else {
            break;
        }
    }
    assert!(queue.is_empty(), "requests left over: {queue:?}");
    shown
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_client_gets_one_reply_per_request_in_order(
        batches in prop::collection::vec(batch(), 1..6),
        schedule in prop::collection::vec(any::<bool>(), 0..60),
    ) {
        let items: Vec<Item> = batches.concat();
        prop_assume!(items.len() < 200);
        prop_assert_eq!(run(&items, &schedule), expected(&items));
    }
}

/// Found by the property test: the server's error arrived before pgsluice read the rest of the batch.
/// PostgreSQL skips everything up to Sync, so a ParseComplete pgsluice would answer itself is not sent,
/// and what the skipped requests recorded is taken back.
#[test]
fn what_is_sent_after_an_error_was_seen_is_skipped_too() {
    use super::{Undo, Verdict};
    let name = Bytes::from_static(b"s1");
    let mut queue = ReplyQueue::default();
    let mut shown = Vec::new();
    queue.push(Entry::pass(Request::Parse));
    let (verdict, outcome) =
        queue.on_server(backend::ERROR_RESPONSE, Some(b"SERROR\0C42601\0\0"), &mut |b| shown.push(b));
    assert_eq!((verdict, outcome.undo), (Verdict::Pass, vec![]));
    queue.push(Entry::synth(Bytes::from_static(b"1"), Some(Undo::ClientParse(name.clone()))));
    queue.push(Entry::pass(Request::Bind));
    queue.take_due(&mut |b| shown.push(b));
    assert!(shown.is_empty(), "no ParseComplete for a Parse PostgreSQL skipped");
    queue.push(Entry::pass(Request::Sync));
    let (verdict, outcome) = queue.on_server(backend::READY_FOR_QUERY, Some(b"I"), &mut |b| shown.push(b));
    assert_eq!((verdict, outcome.undo), (Verdict::Pass, vec![Undo::ClientParse(name)]));
    assert!(queue.is_empty() && shown.is_empty());
}
