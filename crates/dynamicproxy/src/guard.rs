//! Requests refused before routing: banned client addresses, missing or
//! blocked `User-Agent`, blocked `Referer`, and the per-client-address rate
//! limit (governor's GCRA, keyed by address, bounded memory).
//!
//! [`Guard`] is the compiled `[limits]` section; it lives in the reloadable
//! [`Settings`](crate::Settings). The rate limiter's state lives in
//! [`ClientLimiter`], outside the settings, so a reload that keeps the quota
//! keeps every client's budget.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::HeaderMap;
use http::header;
use ipnet::IpNet;
use regex::RegexSet;

use crate::config::LimitSettings;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client address is banned (403).
    BannedIp,
    /// No `User-Agent` (403).
    NoUserAgent,
    /// The `User-Agent` matches a block (403).
    BlockedUserAgent,
    /// The `Referer` matches a block (403).
    BlockedReferer,
}

impl Refusal {
    /// The text shown on the 403 page.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::BannedIp => "Requests from your address are blocked",
            Refusal::NoUserAgent => "Requests must have a user agent",
            Refusal::BlockedUserAgent => "Requests with this user agent are blocked",
            Refusal::BlockedReferer => "Requests with this referer are blocked",
        }
    }
}

/// The compiled `[limits]` rules.
#[derive(Debug, Clone)]
pub struct Guard {
    /// `(rate per second, burst)`; `None`: no rate limit.
    pub rate: Option<(NonZeroU32, NonZeroU32)>,
    /// Tracked clients at most.
    pub max_tracked_clients: usize,
    require_user_agent: bool,
    user_agents: Option<RegexSet>,
    referers: Option<RegexSet>,
    banned: Vec<IpNet>,
}

fn regex_set(key: &str, patterns: &[String]) -> Result<Option<RegexSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    regex::RegexSetBuilder::new(patterns)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map(Some)
        .map_err(|e| format!("{key}: {e}"))
}

impl Guard {
    /// Compiles `limits`; errors name the key.
    pub fn new(limits: &LimitSettings) -> Result<Self, String> {
        let rate = match (
            NonZeroU32::new(limits.rate_per_second),
            NonZeroU32::new(limits.burst),
        ) {
            (None, _) => None,
            (Some(r), Some(b)) => Some((r, b)),
            (Some(_), None) => {
                return Err("limits.burst: must be at least 1 with a rate limit".into());
            }
        };
        let mut banned = Vec::new();
        for s in &limits.banned_ips {
            let s = s.trim();
            let net = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("limits.banned_ips: {s:?} is not an IP address or CIDR network")
                })?;
            banned.push(net);
        }
        Ok(Guard {
            rate,
            max_tracked_clients: limits.max_tracked_clients.max(1),
            require_user_agent: limits.require_user_agent,
            user_agents: regex_set("limits.block_user_agents", &limits.block_user_agents)?,
            referers: regex_set("limits.block_referers", &limits.block_referers)?,
            banned,
        })
    }

    /// Checks the client address and the request headers.
    pub fn check(&self, peer: IpAddr, headers: &HeaderMap) -> Result<(), Refusal> {
        let peer = peer.to_canonical();
        if self.banned.iter().any(|n| n.contains(&peer)) {
            return Err(Refusal::BannedIp);
        }
        let ua = headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        let ua = ua.as_deref().map(str::trim).unwrap_or("");
        if self.require_user_agent && ua.is_empty() {
            return Err(Refusal::NoUserAgent);
        }
        if let Some(set) = &self.user_agents
            && set.is_match(ua)
        {
            return Err(Refusal::BlockedUserAgent);
        }
        if let Some(set) = &self.referers
            && let Some(r) = headers.get(header::REFERER)
            && set.is_match(&String::from_utf8_lossy(r.as_bytes()))
        {
            return Err(Refusal::BlockedReferer);
        }
        Ok(())
    }
}

/// The rate limiter's key: the client address; IPv6 clients by their /64,
/// which one host normally holds whole.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(masked.into())
        }
        v4 => v4,
    }
}

struct Limiter {
    rate: (NonZeroU32, NonZeroU32),
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

/// The per-client token buckets, rebuilt only when the quota changes.
#[derive(Default)]
pub struct ClientLimiter {
    current: ArcSwapOption<Limiter>,
    checks: AtomicU64,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientLimiter")
    }
}

impl ClientLimiter {
    /// Counts a request of `peer` under `guard`'s quota; `Err(wait)` when
    /// it is over, with the time until it would be allowed.
    pub fn check(&self, guard: &Guard, peer: IpAddr) -> Result<(), Duration> {
        let Some(rate) = guard.rate else {
            if self.current.load().is_some() {
                self.current.store(None);
            }
            return Ok(());
        };
        let mut current = self.current.load_full();
        if current.as_ref().is_none_or(|l| l.rate != rate) {
            let fresh = Arc::new(Limiter {
                rate,
                limiter: DefaultKeyedRateLimiter::keyed(
                    Quota::per_second(rate.0).allow_burst(rate.1),
                ),
            });
            self.current.store(Some(fresh.clone()));
            current = Some(fresh);
        }
        let Some(l) = current else { return Ok(()) };
        // Bounded memory: now and then forget clients whose bucket is full
        // again; if that is not enough, start everyone afresh.
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        if n % 4096 == 4095 || l.limiter.len() > guard.max_tracked_clients {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
            if l.limiter.len() > guard.max_tracked_clients {
                tracing::warn!(
                    clients = l.limiter.len(),
                    "rate limiter tracks too many clients; resetting it"
                );
                self.current.store(None);
            }
        }
        l.limiter
            .check_key(&client_key(peer))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.current.load().as_ref().map_or(0, |l| l.limiter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_bans() {
        let g = Guard::new(&LimitSettings {
            block_user_agents: vec!["(?i)badbot".into()],
            block_referers: vec!["spam\\.example".into()],
            banned_ips: vec!["192.0.2.0/24".into(), "2001:db8::1".into()],
            ..Default::default()
        })
        .unwrap();
        let mut h = HeaderMap::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(g.check(ip, &h), Err(Refusal::NoUserAgent));
        h.insert(header::USER_AGENT, "Mozilla BadBot/1".parse().unwrap());
        assert_eq!(g.check(ip, &h), Err(Refusal::BlockedUserAgent));
        h.insert(header::USER_AGENT, "curl/8".parse().unwrap());
        assert_eq!(g.check(ip, &h), Ok(()));
        h.insert(header::REFERER, "https://spam.example/x".parse().unwrap());
        assert_eq!(g.check(ip, &h), Err(Refusal::BlockedReferer));
        h.remove(header::REFERER);
        for banned in ["192.0.2.9", "::ffff:192.0.2.9", "2001:db8::1"] {
            assert_eq!(
                g.check(banned.parse().unwrap(), &h),
                Err(Refusal::BannedIp),
                "{banned}"
            );
        }
        assert!(
            Guard::new(&LimitSettings {
                banned_ips: vec!["nope".into()],
                ..Default::default()
            })
            .unwrap_err()
            .starts_with("limits.banned_ips:")
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let g = Guard::new(&LimitSettings {
            max_tracked_clients: 10,
            ..Default::default()
        })
        .unwrap();
        let l = ClientLimiter::default();
        for i in 0..100u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            assert!(l.check(&g, ip).is_ok());
        }
        assert!(l.tracked() <= 11, "{}", l.tracked());
    }
}
