//! The folder or file of returned mail: a Maildir (`cur/` and `new/`, one file per message) or
//! an mbox file (messages after `From ` lines, `>From ` unquoted as mboxrd writes it).
//!
//! Neither reads more than [`MAX_MESSAGE_BYTES`] of a message into memory: a larger one is
//! handed over as [`Message::TooBig`] with its size, and the next one is read.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::BounceError;

/// The largest message read. A bounce of one of our emails, with the original attached, is
/// well under 200 KB; anything larger is not one of ours, and parsing cost grows with size
/// (a 200 MB report took 1.2 GB).
pub const MAX_MESSAGE_BYTES: u64 = 4 * 1024 * 1024;

/// The Maildir++ folder (hidden from the import, shown as a folder by mail clients) where
/// messages set aside are moved.
pub const SET_ASIDE_FOLDER: &str = ".avvisi-rejected";

/// Where the returned mail is.
#[derive(Debug, Clone)]
pub enum Mailbox {
    Maildir(PathBuf),
    Mbox(PathBuf),
}

/// One message as the mailbox hands it over.
pub(crate) enum Message<'a> {
    Raw(&'a [u8]),
    /// Over [`MAX_MESSAGE_BYTES`]: not read (its size in bytes).
    TooBig(u64),
}

/// Where a message is: its label for people, and its file when it has one of its own.
pub(crate) struct Origin<'a> {
    /// The Maildir file, or `FILE#N` for the N-th message of an mbox.
    pub label: String,
    /// The Maildir file (an mbox message has none).
    pub file: Option<&'a Path>,
}

impl Mailbox {
    /// A folder with `cur/` or `new/` is a Maildir; a file starting with a `From ` line (or
    /// empty) is an mbox.
    pub fn open(path: &Path) -> Result<Mailbox, BounceError> {
        let read = |source| BounceError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.is_dir() {
            if path.join("cur").is_dir() || path.join("new").is_dir() {
                return Ok(Mailbox::Maildir(path.to_path_buf()));
            }
            return Err(BounceError::NotAMailbox {
                path: path.to_path_buf(),
            });
        }
        let mut head = [0u8; 5];
        let mut file = std::fs::File::open(path).map_err(read)?;
        let n = std::io::Read::read(&mut file, &mut head).map_err(read)?;
        if n == 0 || &head[..n] == b"From " {
            return Ok(Mailbox::Mbox(path.to_path_buf()));
        }
        Err(BounceError::NotAMailbox {
            path: path.to_path_buf(),
        })
    }

    /// Calls `f` with each message (where it is, its bytes), one at a time, until `f` returns
    /// false. Blocking: run it on a thread of its own.
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(Origin<'_>, Message<'_>) -> bool,
    ) -> Result<(), BounceError> {
        match self {
            Mailbox::Maildir(dir) => {
                for sub in ["new", "cur"] {
                    let folder = dir.join(sub);
                    if !folder.is_dir() {
                        continue;
                    }
                    let read = |source| BounceError::Read {
                        path: folder.clone(),
                        source,
                    };
                    for entry in std::fs::read_dir(&folder).map_err(read)? {
                        let path = entry.map_err(read)?.path();
                        let hidden = path
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                        if hidden || !path.is_file() {
                            continue;
                        }
                        let fail = |source| BounceError::Read {
                            path: path.clone(),
                            source,
                        };
                        // At most one byte over the bound: a file that grows while read is
                        // still caught.
                        let mut raw = Vec::new();
                        std::fs::File::open(&path)
                            .map_err(fail)?
                            .take(MAX_MESSAGE_BYTES + 1)
                            .read_to_end(&mut raw)
                            .map_err(fail)?;
                        let message = if raw.len() as u64 > MAX_MESSAGE_BYTES {
                            let size =
                                std::fs::metadata(&path).map_or(raw.len() as u64, |m| m.len());
                            Message::TooBig(size)
                        } else {
                            Message::Raw(&raw)
                        };
                        let origin = Origin {
                            label: path.display().to_string(),
                            file: Some(&path),
                        };
                        if !f(origin, message) {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            }
            Mailbox::Mbox(file) => {
                let read = |source| BounceError::Read {
                    path: file.clone(),
                    source,
                };
                let mut reader = BufReader::new(std::fs::File::open(file).map_err(read)?);
                let mut n = 0;
                let mut emit = |message: Option<Pending>| match message {
                    Some(m) => {
                        n += 1;
                        let origin = Origin {
                            label: format!("{}#{n}", file.display()),
                            file: None,
                        };
                        if m.size > MAX_MESSAGE_BYTES {
                            f(origin, Message::TooBig(m.size))
                        } else {
                            f(origin, Message::Raw(&m.contents))
                        }
                    }
                    None => true,
                };
                let mut current: Option<Pending> = None;
                let mut line = Vec::with_capacity(128);
                loop {
                    line.clear();
                    // A line longer than the bound is cut: the message is too big anyway.
                    let read_bytes =
                        read_line(&mut reader, &mut line, MAX_MESSAGE_BYTES as usize + 1)
                            .map_err(read)?;
                    if read_bytes == 0 {
                        emit(current.take());
                        return Ok(());
                    }
                    if line.starts_with(b"From ") {
                        if !emit(current.replace(Pending::default())) {
                            return Ok(());
                        }
                        continue;
                    }
                    // Text before the first `From ` line is no message.
                    let Some(message) = current.as_mut() else {
                        continue;
                    };
                    message.size += read_bytes as u64;
                    if message.size > MAX_MESSAGE_BYTES {
                        message.contents = Vec::new();
                        continue;
                    }
                    // mboxrd: `>From `, `>>From `... lose one `>`.
                    let quotes = line.iter().take_while(|&&b| b == b'>').count();
                    if quotes > 0 && line[quotes..].starts_with(b"From ") {
                        message.contents.extend_from_slice(&line[1..]);
                    } else {
                        message.contents.extend_from_slice(&line);
                    }
                }
            }
        }
    }

    /// Moves the Maildir file of a message set aside to the [`SET_ASIDE_FOLDER`] of this
    /// Maildir, so the next import does not read it again. Returns the folder.
    pub(crate) fn set_aside(&self, file: &Path) -> std::io::Result<PathBuf> {
        let Mailbox::Maildir(dir) = self else {
            return Err(std::io::Error::other("an mbox message cannot be moved"));
        };
        let folder = dir.join(SET_ASIDE_FOLDER);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(folder.join(sub))?;
        }
        let name = file
            .file_name()
            .ok_or_else(|| std::io::Error::other("no file name"))?;
        std::fs::rename(file, folder.join("cur").join(name))?;
        Ok(folder)
    }
}

/// An mbox message being read.
#[derive(Default)]
struct Pending {
    contents: Vec<u8>,
    /// Bytes of the message in the file (the contents stop growing past the bound).
    size: u64,
}

/// Reads one line (through `\n`, or to the end of the file) into `line`, keeping at most `cap`
/// bytes of it; returns how many bytes it consumed (0 at the end of the file).
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, cap: usize) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = cap.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        reader.consume(n);
        consumed += n;
        if done {
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_is_split_at_from_lines_and_unquoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        std::fs::write(
            &path,
            "From a  Mon Nov 23 10:05:12 2026\nSubject: one\n\n>From here\n>>From there\n\n\
             From b  Mon Nov 23 10:05:12 2026\nSubject: two\n\nbody",
        )
        .unwrap();
        let mut seen = Vec::new();
        Mailbox::open(&path)
            .unwrap()
            .for_each(|origin, message| {
                let Message::Raw(raw) = message else {
                    panic!("too big")
                };
                seen.push((origin.label, String::from_utf8(raw.to_vec()).unwrap()));
                true
            })
            .unwrap();
        let labels: Vec<&str> = seen
            .iter()
            .map(|(l, _)| l.rsplit('#').next().unwrap())
            .collect();
        assert_eq!(labels, ["1", "2"]);
        assert_eq!(seen[0].1, "Subject: one\n\nFrom here\n>From there\n\n");
        assert_eq!(seen[1].1, "Subject: two\n\nbody");
    }

    #[test]
    fn a_line_is_read_whole_but_kept_only_up_to_the_cap() {
        let mut reader = BufReader::with_capacity(4, &b"abcdefghij\nxyz"[..]);
        let mut line = Vec::new();
        assert_eq!(read_line(&mut reader, &mut line, 3).unwrap(), 11);
        assert_eq!(line, b"abc");
        line.clear();
        assert_eq!(read_line(&mut reader, &mut line, 100).unwrap(), 3);
        assert_eq!(line, b"xyz");
        line.clear();
        assert_eq!(read_line(&mut reader, &mut line, 100).unwrap(), 0);
    }
}
