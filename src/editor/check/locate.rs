//! Where a problem comes from: the line of an offset, the files a message is built from (the
//! file, its layouts and includes) and searches along them, so that a problem seen in rendered
//! output is reported at the source line an editor has to change.

use std::collections::BTreeMap;

use super::scan::{FileScan, Found};

/// 1-based line of a byte offset.
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// `file`, the layouts it extends and the files they include, in that order.
pub(crate) fn chain(file: &str, sources: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut todo = vec![file.to_string()];
    while let Some(f) = todo.pop() {
        if out.contains(&f) {
            continue;
        }
        if let Some(src) = sources.get(&f) {
            let scan = FileScan::new(src);
            for (target, _) in scan.extends.iter().chain(scan.includes.iter()).rev() {
                todo.push(target.clone());
            }
        }
        out.push(f);
    }
    out
}

/// The first file and line of `file`'s chain where an expression matches `pred`.
pub(crate) fn locate_in_chain(
    file: &str,
    sources: &BTreeMap<String, String>,
    pred: impl Fn(&Found) -> bool,
) -> Option<(String, usize)> {
    for f in chain(file, sources) {
        if let Some(src) = sources.get(&f) {
            if let Some(found) = FileScan::new(src).found.iter().find(|x| pred(x)) {
                return Some((f, line_of(src, found.offset())));
            }
        }
    }
    None
}

/// The first file and line of `file`'s chain whose text contains `needle`.
pub(crate) fn locate_text(
    file: &str,
    sources: &BTreeMap<String, String>,
    needle: &str,
) -> Option<(String, usize)> {
    for f in chain(file, sources) {
        if let Some(src) = sources.get(&f) {
            if let Some(at) = src.find(needle) {
                return Some((f, line_of(src, at)));
            }
        }
    }
    None
}
