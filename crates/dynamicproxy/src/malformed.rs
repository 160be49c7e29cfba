//! Requests nginx refuses as malformed and the proxy refuses alike, before
//! routing: a path that climbs above `/` once percent-decoded and
//! dot-segment-resolved or that holds a NUL, a host with an empty label,
//! and the request forms a reverse proxy has no business forwarding
//! (`CONNECT`, `OPTIONS *`). A backend behind the proxy then never sees a
//! request that today's edge would not have passed on.

use http::{Method, StatusCode};

/// Why a request was refused here: the status and the text of the page.
pub type Refused = (StatusCode, &'static str);

/// Checks the request target's form and path.
pub fn check_target(method: &Method, uri: &http::Uri) -> Result<(), Refused> {
    if method == Method::CONNECT {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported by this proxy",
        ));
    }
    let path = uri.path();
    if path == "*" {
        return Err((
            StatusCode::BAD_REQUEST,
            "The asterisk-form request target (OPTIONS *) is not forwarded",
        ));
    }
    check_path(path)
}

/// Percent-decodes `path` on the fly and resolves its dot segments: refuses
/// a NUL anywhere and a `..` that would climb above the root.
pub fn check_path(path: &str) -> Result<(), Refused> {
    const CLIMBS: Refused = (
        StatusCode::BAD_REQUEST,
        "The request path climbs above the root",
    );
    let bytes = path.as_bytes();
    // Depth below the root after the segments so far, and the current
    // segment's decoded form when it may still be "." or "..".
    let mut depth: usize = 0;
    let mut segment = [0u8; 3];
    let mut seg_len = 0usize;
    let mut i = 0;
    let end_segment = |seg: &[u8], depth: &mut usize| -> Result<(), Refused> {
        match seg {
            b"" | b"." => {}
            b".." => *depth = depth.checked_sub(1).ok_or(CLIMBS)?,
            _ => *depth += 1,
        }
        Ok(())
    };
    while i < bytes.len() {
        let mut b = bytes[i];
        i += 1;
        if b == b'%'
            && let Some(d) = bytes
                .get(i..i + 2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            b = d;
            i += 2;
        }
        match b {
            0 => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "The request path holds a NUL character",
                ));
            }
            b'/' => {
                let seg = if seg_len <= 2 {
                    &segment[..seg_len]
                } else {
                    b"x"
                };
                end_segment(seg, &mut depth)?;
                seg_len = 0;
            }
            _ => {
                if seg_len < segment.len() {
                    segment[seg_len] = b;
                }
                seg_len += 1;
            }
        }
    }
    let seg = if seg_len <= 2 {
        &segment[..seg_len]
    } else {
        b"x"
    };
    end_segment(seg, &mut depth)
}

/// Refuses a host (as sent, maybe with a port) with an empty label.
pub fn check_host_labels(host: &str) -> Result<(), Refused> {
    if host.starts_with('[') {
        return Ok(()); // an IPv6 literal
    }
    let bare = forge_core::schema::strip_port(host);
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    if bare.is_empty() || bare.split('.').any(str::is_empty) {
        return Err((StatusCode::BAD_REQUEST, "The host name has an empty label"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_climb_or_hold_nul_are_refused() {
        for ok in [
            "/",
            "/a/../b",
            "/a/./b/..",
            "/..a/b",
            "/a/%2e%2e",
            "/%zz",
            "/a/...",
            "",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E./x",
            "/a%2f..%2f..%2fb",
            "/a/%00",
            "/x%00.php",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_labels_are_refused() {
        for ok in ["a.b", "a.b.", "a.b:80", "[::1]:80", "localhost"] {
            assert!(check_host_labels(ok).is_ok(), "{ok}");
        }
        for bad in ["a..b", ".a.b", "a.b..", "a..b:80", ":80"] {
            assert!(check_host_labels(bad).is_err(), "{bad}");
        }
    }
}
