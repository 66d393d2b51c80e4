//! Returned mail, and feedback reports, are anyone's to write: each message is screened before
//! it is parsed (its size, its nesting, see [`dsn::hazard`]) and parsed on a thread of its own
//! under a time limit, so one message can neither crash the import nor hold it up. What fails a
//! bound is set aside (a Maildir's file moved to [`SET_ASIDE_FOLDER`], an mbox's message listed)
//! and the import goes on with the next message. `bounces import` and `complaints import` both
//! read through here.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use super::dsn;
#[cfg(doc)]
use super::mailbox::SET_ASIDE_FOLDER;
use super::mailbox::{Mailbox, Message, Origin, MAX_MESSAGE_BYTES};

/// The longest one message may take to parse. Screened messages parse in milliseconds; this
/// only stops one that the screening did not foresee from holding every later import up.
pub(crate) const MAX_PARSE_TIME: Duration = Duration::from_secs(10);

/// How one message is read.
pub(crate) type ReadFn<T> = Arc<dyn Fn(&[u8]) -> T + Send + Sync>;

/// Screens and parses messages one at a time.
pub(crate) struct Guard<T> {
    read: ReadFn<T>,
    limit: Duration,
    worker: Option<Worker<T>>,
}

/// The parsing thread: a message in, its reading out.
struct Worker<T> {
    jobs: mpsc::SyncSender<Vec<u8>>,
    done: mpsc::Receiver<T>,
}

/// A message set aside: why, and the folder its file was moved to (a Maildir's; an mbox's
/// message stays where it is and is only listed).
#[derive(Debug, Clone)]
pub(crate) struct SetAside {
    pub why: String,
    pub moved_to: Option<PathBuf>,
}

impl<T: Send + 'static> Guard<T> {
    pub(crate) fn new(read: ReadFn<T>, limit: Duration) -> Guard<T> {
        Guard {
            read,
            limit,
            worker: None,
        }
    }

    /// The message at `origin` of `mailbox` read, or set aside: its file moved out of the way
    /// when it has one (a failed move is logged; the next import meets it again).
    pub(crate) fn screen_in(
        &mut self,
        mailbox: &Mailbox,
        origin: &Origin<'_>,
        message: Message<'_>,
    ) -> Result<T, SetAside> {
        self.screen(message).map_err(|why| {
            tracing::warn!(origin = %origin.label, why = %why, "message set aside");
            let moved_to = origin.file.and_then(|file| match mailbox.set_aside(file) {
                Ok(folder) => Some(folder),
                Err(e) => {
                    tracing::warn!(origin = %origin.label, error = %e, "cannot move a message set aside");
                    None
                }
            });
            SetAside { why, moved_to }
        })
    }

    /// The message read, or why it is set aside.
    pub(crate) fn screen(&mut self, message: Message<'_>) -> Result<T, String> {
        let raw = match message {
            Message::TooBig(size) => {
                return Err(format!(
                    "too big: {size} bytes (at most {MAX_MESSAGE_BYTES} are read)"
                ))
            }
            Message::Raw(raw) => raw,
        };
        if let Some(hazard) = dsn::hazard(raw) {
            return Err(hazard.to_string());
        }
        self.parse(raw.to_vec())
    }

    fn parse(&mut self, raw: Vec<u8>) -> Result<T, String> {
        let worker = match self.worker.take() {
            Some(worker) => worker,
            None => spawn(self.read.clone()).map_err(|e| format!("cannot start a parser: {e}"))?,
        };
        if worker.jobs.send(raw).is_err() {
            return Err("the parser stopped".to_string());
        }
        match worker.done.recv_timeout(self.limit) {
            Ok(bounce) => {
                self.worker = Some(worker);
                Ok(bounce)
            }
            // The thread is left to finish on its own (its channels are gone, so it then
            // ends); the next message gets a new one.
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "too slow to read: not done in {} s",
                self.limit.as_secs_f64()
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err("the parser failed on it (a panic, logged above)".to_string())
            }
        }
    }
}

fn spawn<T: Send + 'static>(read: ReadFn<T>) -> std::io::Result<Worker<T>> {
    let (jobs, inbox) = mpsc::sync_channel::<Vec<u8>>(0);
    let (outbox, done) = mpsc::sync_channel::<T>(1);
    std::thread::Builder::new()
        .name("bounce-parser".into())
        .spawn(move || {
            for raw in inbox {
                if outbox.send(read(&raw)).is_err() {
                    return;
                }
            }
        })?;
    Ok(Worker { jobs, done })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce::dsn::Bounce;

    fn plain(raw: &[u8]) -> Bounce {
        dsn::read(raw, None)
    }

    #[test]
    fn a_slow_or_failing_message_is_set_aside_and_the_next_is_read() {
        let slow: ReadFn<Bounce> = Arc::new(|raw: &[u8]| {
            if raw.starts_with(b"Subject: slow") {
                std::thread::sleep(Duration::from_secs(10));
            }
            if raw.starts_with(b"Subject: panic") {
                panic!("a parser bug");
            }
            plain(raw)
        });
        // Generous: a loaded machine, and the panic's backtrace being printed, slow the others.
        let mut guard = Guard::new(slow, Duration::from_secs(2));
        let ok = b"Message-ID: <a@b.it>\r\nSubject: fine\r\n\r\nhi\r\n";
        for (raw, expected) in [
            (&ok[..], None),
            (b"Subject: slow\r\n\r\n", Some("too slow to read")),
            (&ok[..], None),
            (b"Subject: panic\r\n\r\n", Some("the parser failed")),
            (&ok[..], None),
        ] {
            match (guard.screen(Message::Raw(raw)), expected) {
                (Ok(b), None) => assert_eq!(b.dedupe_key, "<a@b.it>"),
                (Err(why), Some(text)) => assert!(why.contains(text), "{why}"),
                (Ok(_), Some(text)) => panic!("read, expected {text}"),
                (Err(why), None) => panic!("set aside: {why}"),
            }
        }
        match guard.screen(Message::TooBig(MAX_MESSAGE_BYTES + 1)) {
            Err(why) => assert!(why.starts_with("too big"), "{why}"),
            Ok(_) => panic!("a message too big was read"),
        }
    }
}
