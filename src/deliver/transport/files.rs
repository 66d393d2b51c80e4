//! The file transport: one `.eml` per email.

/// Writes `stem.eml` through a temporary file renamed into place, readable by its owner only
/// (unix): it holds the recipient's address and name.
///
/// The temporary file is always a new one (exclusive create, which follows no symlink): a stale
/// one left by a crash, or a symlink or a world-writable file someone put in its place, is
/// removed first, never written through nor kept with its mode.
pub(super) async fn write_eml(
    dir: &std::path::Path,
    stem: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{stem}.eml.tmp"));
    let path = dir.join(format!("{stem}.eml"));
    let bytes = bytes.to_vec();
    // One blocking task for open, write and rename, as `tokio::fs::write` does for its part.
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        // Removes a symlink itself, not what it points at.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&tmp)?.write_all(&bytes)?;
        // A symlink at `path` is replaced, not followed.
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}
