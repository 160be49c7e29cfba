//! The proxy's own pages: HTML error pages for the statuses it generates
//! (400, 403, 404, 429, 502, 503, 504), and `/favicon.ico` and
//! `/robots.txt` served when a backend answers 404 for them.
//!
//! Each comes from `pages.dir` when the file is there (`<status>.html`,
//! `favicon.ico`, `robots.txt`), otherwise from a built-in default. Files are
//! read once, when the settings are (re)loaded.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use crate::proxy::ProxyBody;

/// Statuses that have an error page.
pub const STATUSES: [u16; 7] = [400, 403, 404, 429, 502, 503, 504];

const FAVICON: &[u8] = include_bytes!("../assets/favicon.ico");
const ROBOTS: &str = "User-agent: *\nDisallow:\n";

/// The loaded pages.
#[derive(Debug, Default)]
pub struct Pages {
    /// Pages read from `pages.dir`, by status.
    custom: HashMap<u16, Bytes>,
    /// `favicon.ico` from `pages.dir`.
    favicon: Option<Bytes>,
    /// `robots.txt` from `pages.dir`.
    robots: Option<Bytes>,
}

fn read_optional(path: &Path) -> Result<Option<Bytes>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(Bytes::from(b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("pages.dir: {}: {e}", path.display())),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Pages {
    /// Reads the pages in `dir` (none: built-in pages only).
    pub fn load(dir: Option<&Path>) -> Result<Self, String> {
        let Some(dir) = dir else {
            return Ok(Pages::default());
        };
        if !dir.is_dir() {
            return Err(format!("pages.dir: {} is not a directory", dir.display()));
        }
        let mut custom = HashMap::new();
        for status in STATUSES {
            if let Some(b) = read_optional(&dir.join(format!("{status}.html")))? {
                custom.insert(status, b);
            }
        }
        Ok(Pages {
            custom,
            favicon: read_optional(&dir.join("favicon.ico"))?,
            robots: read_optional(&dir.join("robots.txt"))?,
        })
    }

    /// The error page for `status`; built-in pages show `message`.
    pub fn error(&self, status: StatusCode, message: &str) -> Response<ProxyBody> {
        let body = match self.custom.get(&status.as_u16()) {
            Some(b) => b.clone(),
            None => {
                let title = format!(
                    "{} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("Error")
                );
                Bytes::from(format!(
                    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n<p>{}</p>\n</body>\n</html>\n",
                    escape(message)
                ))
            }
        };
        let mut r = respond(status, "text/html; charset=utf-8", body);
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// The proxy's `/favicon.ico`.
    pub fn favicon(&self) -> Response<ProxyBody> {
        let body = self
            .favicon
            .clone()
            .unwrap_or_else(|| Bytes::from_static(FAVICON));
        respond(StatusCode::OK, "image/x-icon", body)
    }

    /// The proxy's `/robots.txt`.
    pub fn robots(&self) -> Response<ProxyBody> {
        let body = self
            .robots
            .clone()
            .unwrap_or_else(|| Bytes::from_static(ROBOTS.as_bytes()));
        respond(StatusCode::OK, "text/plain; charset=utf-8", body)
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
