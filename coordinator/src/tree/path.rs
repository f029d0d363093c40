//! Path rules of the namespace: absolute, `/`-separated, no empty, `.` or
//! `..` components, no control characters, bounded length.

use super::TreeError;

pub const MAX_PATH_BYTES: usize = 4096;

pub fn validate(path: &str) -> Result<(), TreeError> {
    let bad = |why: &str| Err(TreeError::InvalidArgument(format!("invalid path {path:?}: {why}")));
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("longer than 4096 bytes");
    }
    if !path.starts_with('/') {
        return bad("must start with '/'");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad("must not end with '/'");
    }
    for component in path[1..].split('/') {
        if component.is_empty() {
            return bad("empty component");
        }
        if component == "." || component == ".." {
            return bad("'.' and '..' are not allowed");
        }
        if component.chars().any(|c| c.is_control()) {
            return bad("control characters are not allowed");
        }
    }
    Ok(())
}

/// Parent of a valid, non-root path.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Last component of a valid, non-root path.
pub fn name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") }
}

/// True when `path` is `prefix` itself or lies below it.
pub fn is_under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["/", "/a", "/a/b", "/brokers/ids/1", "/a-b_c.d"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/..", "/a\0b", "/a\nb"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert!(validate(&format!("/{}", "x".repeat(MAX_PATH_BYTES))).is_err());
    }

    #[test]
    fn parents_names_prefixes() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(name("/a/b/c"), "c");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/ab", "/"));
    }
}
