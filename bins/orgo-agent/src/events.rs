//! The event ring: every event the agent raises, kept for
//! [`Op::ReadEvents`](orgo_agent_protocol::Op::ReadEvents) whether or not a
//! host was connected when it happened.
//!
//! The ring holds the newest [`EVENT_RING_CAPACITY`] events; when it is
//! full, the oldest is dropped first. Each event's text fields are cut to
//! [`MAX_EVENT_TEXT`] bytes, so the ring stays under about 8 MiB whatever
//! the guest's processes print.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use orgo_agent_protocol::{Event, EventRecord, MAX_EVENTS_READ};

/// How many events the ring keeps.
pub(crate) const EVENT_RING_CAPACITY: usize = 4096;

/// The most bytes of one text field of an event in the ring.
pub(crate) const MAX_EVENT_TEXT: usize = 2048;

#[derive(Default)]
struct Ring {
    /// The last sequence number given.
    last: u64,
    records: VecDeque<EventRecord>,
}

/// The ring.
#[derive(Default)]
pub(crate) struct EventRing {
    ring: Mutex<Ring>,
}

/// Milliseconds since the Unix epoch on the guest's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Cuts `text` to [`MAX_EVENT_TEXT`] bytes (on a character boundary).
pub(crate) fn cut(text: &mut String) {
    cut_to(text, MAX_EVENT_TEXT);
}

/// Cuts `text` to `max` bytes (on a character boundary), marked with `…`.
pub(crate) fn cut_to(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

fn bounded(mut event: Event) -> Event {
    match &mut event {
        Event::ServiceFailed { message, .. }
        | Event::Alert { message, .. }
        | Event::TriggerFailed { message, .. } => cut(message),
        Event::Health {
            message: Some(message),
            ..
        }
        | Event::HealthAction {
            message: Some(message),
            ..
        }
        | Event::TriggerFired {
            detail: Some(message),
            ..
        }
        | Event::TriggerDeduplicated {
            detail: Some(message),
            ..
        } => cut(message),
        _ => {}
    }
    event
}

impl EventRing {
    /// Keeps `event` (the handshake's `ready` and the outbox's `dropped`
    /// are not kept: they are about one connection).
    pub(crate) fn push(&self, event: &Event) {
        if matches!(event, Event::Ready(_) | Event::Dropped { .. }) {
            return;
        }
        let record_event = bounded(event.clone());
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.last += 1;
        let seq = ring.last;
        if ring.records.len() >= EVENT_RING_CAPACITY {
            ring.records.pop_front();
        }
        ring.records.push_back(EventRecord {
            seq,
            ts_ms: now_ms(),
            event: record_event,
        });
    }

    /// The events after `after`, at most `max`, and how many events after
    /// `after` were dropped before the first one returned.
    pub(crate) fn read(&self, after: Option<u64>, max: Option<u32>) -> (Vec<EventRecord>, u64) {
        let max = max.unwrap_or(MAX_EVENTS_READ).min(MAX_EVENTS_READ) as usize;
        let after = after.unwrap_or(0);
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = ring.records.front().map_or(ring.last + 1, |r| r.seq);
        let dropped = oldest.saturating_sub(after + 1);
        let events = ring
            .records
            .iter()
            .filter(|r| r.seq > after)
            .take(max)
            .cloned()
            .collect();
        (events, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: usize) -> Event {
        Event::Alert {
            app: String::new(),
            message: format!("alert {i}"),
            trigger: Some("t".into()),
        }
    }

    #[test]
    fn the_oldest_is_dropped_first_and_counted() {
        let ring = EventRing::default();
        for i in 0..EVENT_RING_CAPACITY + 10 {
            ring.push(&alert(i));
        }
        let (events, dropped) = ring.read(None, Some(5));
        assert_eq!(dropped, 10);
        assert_eq!(events.len(), 5);
        assert_eq!(events[0].seq, 11);
        assert_eq!(events[0].event, alert(10));
        let last = (EVENT_RING_CAPACITY + 9) as u64;
        let (events, dropped) = ring.read(Some(last), None);
        assert_eq!((events.len(), dropped), (1, 0));
        let (events, dropped) = ring.read(Some(last + 1), None);
        assert_eq!((events.len(), dropped), (0, 0));
    }

    #[test]
    fn ready_is_not_kept_and_long_text_is_cut() {
        let ring = EventRing::default();
        ring.push(&Event::Dropped { count: 3 });
        ring.push(&Event::Alert {
            app: "a".into(),
            message: "é".repeat(MAX_EVENT_TEXT),
            trigger: None,
        });
        let (events, _) = ring.read(None, None);
        assert_eq!(events.len(), 1);
        let Event::Alert { message, .. } = &events[0].event else {
            panic!("an alert")
        };
        assert!(message.len() <= MAX_EVENT_TEXT + 3, "{}", message.len());
    }
}
