//! The folder or file of returned mail: a Maildir (`cur/` and `new/`, one file per message) or
//! an mbox file (messages after `From ` lines, read one at a time by `mail-parser`'s iterator).

use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::BounceError;

/// Where the returned mail is.
#[derive(Debug, Clone)]
pub enum Mailbox {
    Maildir(PathBuf),
    Mbox(PathBuf),
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
        mut f: impl FnMut(String, &[u8]) -> bool,
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
                        let raw = std::fs::read(&path).map_err(|source| BounceError::Read {
                            path: path.clone(),
                            source,
                        })?;
                        if !f(path.display().to_string(), &raw) {
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
                let reader = BufReader::new(std::fs::File::open(file).map_err(read)?);
                let messages = mail_parser::mailbox::mbox::MessageIterator::new(reader);
                for (n, message) in messages.enumerate() {
                    let message = message.map_err(read)?;
                    let origin = format!("{}#{}", file.display(), n + 1);
                    if !f(origin, message.contents()) {
                        return Ok(());
                    }
                }
                Ok(())
            }
        }
    }
}
