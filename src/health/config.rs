//! The health-check part of the TOML configuration, its validation, and the construction of
//! checkers and engines from it.
//!
//! Timing options (`delay_loop`, `connect_timeout`, `retry`, `delay_before_retry`, `warmup`,
//! `alpha`; times in seconds, fractions allowed) can be given at the virtual-service level
//! ([`ServiceHealthConfig`]), the real-server level ([`RealHealthConfig`]) and in each check
//! ([`CheckConfig`]); the most specific wins, then keepalived's defaults for the check type.
//! Every struct rejects unknown fields. Validation errors are `(field, message)` with the
//! field relative to the validated value (`url[1].status_code`, `check[0].misc_path`,
//! `health.quorum`), for the caller to prefix with its own path.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::engine::{RealServerHealth, Schedule, ServiceHealth, SplitMix64};
use super::http::{parse_digest, HttpGetChecker, StatusRanges, UrlCheck};
use super::misc::{split_command, MiscChecker};
use super::ping::PingChecker;
use super::tcp::TcpChecker;
use super::udp::{parse_hex, UdpChecker};
use super::{ssl, Checker};

/// A validation error: (field, message).
pub type FieldError = (String, String);

/// The longest time accepted for any timing option, in seconds (one year).
const MAX_SECS: f64 = 365.0 * 86400.0;

fn secs(field: &str, v: Option<f64>, min_exclusive_zero: bool) -> Result<(), FieldError> {
    let Some(v) = v else { return Ok(()) };
    let bad = !v.is_finite() || !(0.0..=MAX_SECS).contains(&v) || (min_exclusive_zero && v == 0.0);
    if bad {
        let need = if min_exclusive_zero { "> 0" } else { ">= 0" };
        return Err((
            field.to_string(),
            format!("must be a number of seconds {need} and at most {MAX_SECS}"),
        ));
    }
    Ok(())
}

fn dur(v: f64) -> Duration {
    Duration::from_secs_f64(v)
}

/// Timing options shared by the three levels, all optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// Seconds between checks.
    pub delay_loop: Option<f64>,
    /// Seconds a connection (and a whole HTTP exchange, UDP or ping wait) may take.
    pub connect_timeout: Option<f64>,
    /// Retries before an up server is declared down.
    pub retry: Option<u32>,
    /// Seconds before a retry.
    pub delay_before_retry: Option<f64>,
    /// Upper bound of the random delay before the first check (0: none).
    pub warmup: Option<f64>,
    /// Start down until a check passes.
    pub alpha: Option<bool>,
}

impl Timing {
    fn validate(&self) -> Result<(), FieldError> {
        secs("delay_loop", self.delay_loop, true)?;
        secs("connect_timeout", self.connect_timeout, true)?;
        secs("delay_before_retry", self.delay_before_retry, false)?;
        secs("warmup", self.warmup, false)
    }

    /// `self` where set, else `other`.
    fn or(self, other: Timing) -> Timing {
        Timing {
            delay_loop: self.delay_loop.or(other.delay_loop),
            connect_timeout: self.connect_timeout.or(other.connect_timeout),
            retry: self.retry.or(other.retry),
            delay_before_retry: self.delay_before_retry.or(other.delay_before_retry),
            warmup: self.warmup.or(other.warmup),
            alpha: self.alpha.or(other.alpha),
        }
    }
}

/// Health options of a virtual service (`[service.health]` or `health = { ... }`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceHealthConfig {
    /// Seconds between checks (default 60).
    pub delay_loop: Option<f64>,
    /// Default connect timeout of the checks, seconds (default 5).
    pub connect_timeout: Option<f64>,
    /// Default retries (default 1; MISC_CHECK 0).
    pub retry: Option<u32>,
    /// Default seconds before a retry (default 1; HTTP_GET/SSL_GET 3).
    pub delay_before_retry: Option<f64>,
    /// Default warmup bound, seconds (default `delay_loop`; 0 disables).
    pub warmup: Option<f64>,
    /// Real servers start down until their checks pass (default false).
    pub alpha: Option<bool>,
    /// Minimum live weight (default 1; 0 disables the quorum).
    pub quorum: Option<u64>,
    /// Quorum flap damper (default 0).
    pub hysteresis: Option<u64>,
    /// `ip` or `ip:port` used while quorum is lost (port default: the service's); IPv6 as
    /// `2001:db8::9` or `[2001:db8::9]:80`.
    pub sorry_server: Option<String>,
    /// Down real servers get weight 0 instead of being removed (default false).
    pub inhibit_on_failure: Option<bool>,
    /// Script run (`/bin/sh -c`) when the quorum is regained (keepalived's `quorum_up`).
    pub quorum_up: Option<String>,
    /// Script run when the quorum is lost (keepalived's `quorum_down`).
    pub quorum_down: Option<String>,
}

impl ServiceHealthConfig {
    fn timing(&self) -> Timing {
        Timing {
            delay_loop: self.delay_loop,
            connect_timeout: self.connect_timeout,
            retry: self.retry,
            delay_before_retry: self.delay_before_retry,
            warmup: self.warmup,
            alpha: self.alpha,
        }
    }

    /// Checks values; field names relative to this table.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.timing().validate()?;
        self.sorry_server()?;
        for (f, s) in [
            ("quorum_up", &self.quorum_up),
            ("quorum_down", &self.quorum_down),
        ] {
            if s.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err((f.into(), "must be a command (or be left out)".into()));
            }
        }
        Ok(())
    }

    /// The sorry server: address and optional port.
    pub fn sorry_server(&self) -> Result<Option<(std::net::IpAddr, Option<u16>)>, FieldError> {
        let Some(s) = &self.sorry_server else {
            return Ok(None);
        };
        let err = || {
            (
                "sorry_server".to_string(),
                format!(
                    "{s:?} is not an address or address:port (IPv6 as 2001:db8::9 or [2001:db8::9]:80)"
                ),
            )
        };
        if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            if sa.port() == 0 {
                return Err(err());
            }
            return Ok(Some((sa.ip(), Some(sa.port()))));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Some((ip, None)))
            .map_err(|_| err())
    }

    /// The quorum engine for the initial live weight.
    pub fn service_health(&self, live_weight: u64) -> ServiceHealth {
        ServiceHealth::new(
            self.quorum.unwrap_or(1),
            self.hysteresis.unwrap_or(0),
            live_weight,
        )
    }
}

/// Health options of a real server (`health = { ... }` in a `[[service.real]]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealHealthConfig {
    /// Overrides the service's `delay_loop`.
    pub delay_loop: Option<f64>,
    /// Overrides the service's `connect_timeout`.
    pub connect_timeout: Option<f64>,
    /// Overrides the service's `retry`.
    pub retry: Option<u32>,
    /// Overrides the service's `delay_before_retry`.
    pub delay_before_retry: Option<f64>,
    /// Overrides the service's `warmup`.
    pub warmup: Option<f64>,
    /// Overrides the service's `alpha`.
    pub alpha: Option<bool>,
    /// Overrides the service's `inhibit_on_failure`.
    pub inhibit_on_failure: Option<bool>,
}

impl RealHealthConfig {
    fn timing(&self) -> Timing {
        Timing {
            delay_loop: self.delay_loop,
            connect_timeout: self.connect_timeout,
            retry: self.retry,
            delay_before_retry: self.delay_before_retry,
            warmup: self.warmup,
            alpha: self.alpha,
        }
    }

    /// Checks values; field names relative to this table.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.timing().validate()
    }
}

/// Defines a check's config struct: its own fields plus the timing options.
macro_rules! check_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// Overrides `delay_loop` for this check.
            pub delay_loop: Option<f64>,
            /// Overrides `connect_timeout` for this check.
            pub connect_timeout: Option<f64>,
            /// Overrides `retry` for this check.
            pub retry: Option<u32>,
            /// Overrides `delay_before_retry` for this check.
            pub delay_before_retry: Option<f64>,
            /// Overrides `warmup` for this check.
            pub warmup: Option<f64>,
            /// Overrides `alpha` for this check.
            pub alpha: Option<bool>,
        }

        impl $name {
            fn timing(&self) -> Timing {
                Timing {
                    delay_loop: self.delay_loop,
                    connect_timeout: self.connect_timeout,
                    retry: self.retry,
                    delay_before_retry: self.delay_before_retry,
                    warmup: self.warmup,
                    alpha: self.alpha,
                }
            }
        }
    };
}

check_struct! {
    /// TCP_CHECK options.
    TcpCheckConfig {
        /// Address to connect to (default: the real server's).
        connect_ip: Option<IpAddr>,
        /// Port to connect to (default: the real server's).
        connect_port: Option<u16>,
    }
}

check_struct! {
    /// HTTP_GET and SSL_GET options.
    HttpCheckConfig {
        /// Address to connect to (default: the real server's).
        connect_ip: Option<IpAddr>,
        /// Port to connect to (default: the real server's).
        connect_port: Option<u16>,
        /// The URLs to fetch (at least one); all must pass.
        url: Vec<UrlConfig>,
        /// `Host` header for URLs without their own (default `ip:port`); SNI for SSL_GET.
        virtualhost: Option<String>,
        /// SSL_GET only: SNI name (default: `virtualhost`; none for an address).
        sni: Option<String>,
    }
}

check_struct! {
    /// UDP_CHECK options.
    UdpCheckConfig {
        /// Address to send to (default: the real server's).
        connect_ip: Option<IpAddr>,
        /// Port to send to (default: the real server's).
        connect_port: Option<u16>,
        /// Datagram payload as hex (default: empty).
        payload: Option<String>,
        /// Expected reply as hex; when set, only that reply passes.
        require_reply: Option<String>,
    }
}

check_struct! {
    /// PING_CHECK options.
    PingCheckConfig {
        /// Address to ping (default: the real server's).
        connect_ip: Option<IpAddr>,
    }
}

check_struct! {
    /// MISC_CHECK options.
    MiscCheckConfig {
        /// Program and arguments, split on whitespace (required).
        misc_path: Option<String>,
        /// Seconds the program may run (default: `delay_loop`).
        misc_timeout: Option<f64>,
        /// Exit codes 2..=255 set the weight to code - 2.
        misc_dynamic: bool,
    }
}

/// One URL of an HTTP_GET / SSL_GET check.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlConfig {
    /// Request path, starting with `/`.
    pub path: String,
    /// Expected MD5 of the body, 32 hex digits.
    #[serde(default)]
    pub digest: Option<String>,
    /// Accepted statuses: `200`, `"200-299"`, `"200-299, 404"` or a list of those
    /// (default 200-299).
    #[serde(default)]
    pub status_code: Option<StatusSpec>,
    /// `Host` header for this URL (default: the check's `virtualhost`, else `ip:port`).
    #[serde(default)]
    pub virtualhost: Option<String>,
}

/// A status code, a text of codes and ranges, or a list of those.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    /// A single code.
    Code(i64),
    /// Codes and ranges such as `200-299, 404`.
    Text(String),
    /// A list of codes and range texts.
    List(Vec<StatusItem>),
}

/// An element of a status list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StatusItem {
    /// A single code.
    Code(i64),
    /// Codes and ranges.
    Text(String),
}

impl StatusSpec {
    /// The ranges this spec denotes.
    pub fn ranges(&self) -> Result<StatusRanges, String> {
        let text = match self {
            StatusSpec::Code(c) => c.to_string(),
            StatusSpec::Text(t) => t.clone(),
            StatusSpec::List(l) => l
                .iter()
                .map(|i| match i {
                    StatusItem::Code(c) => c.to_string(),
                    StatusItem::Text(t) => t.clone(),
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        StatusRanges::parse(&text)
    }
}

/// One health check of a real server (`[[service.real.check]]`), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CheckConfig {
    /// TCP_CHECK.
    #[serde(alias = "TCP_CHECK")]
    Tcp(TcpCheckConfig),
    /// HTTP_GET.
    #[serde(alias = "HTTP_GET")]
    HttpGet(HttpCheckConfig),
    /// SSL_GET.
    #[serde(alias = "SSL_GET")]
    SslGet(HttpCheckConfig),
    /// UDP_CHECK.
    #[serde(alias = "UDP_CHECK")]
    Udp(UdpCheckConfig),
    /// PING_CHECK.
    #[serde(alias = "PING_CHECK")]
    Ping(PingCheckConfig),
    /// MISC_CHECK.
    #[serde(alias = "MISC_CHECK")]
    Misc(MiscCheckConfig),
}

impl CheckConfig {
    fn timing(&self) -> Timing {
        match self {
            CheckConfig::Tcp(c) => c.timing(),
            CheckConfig::HttpGet(c) | CheckConfig::SslGet(c) => c.timing(),
            CheckConfig::Udp(c) => c.timing(),
            CheckConfig::Ping(c) => c.timing(),
            CheckConfig::Misc(c) => c.timing(),
        }
    }

    /// keepalived's defaults for this type.
    fn defaults(&self) -> Timing {
        let (retry, dbr) = match self {
            CheckConfig::HttpGet(_) | CheckConfig::SslGet(_) => (1, 3.0),
            CheckConfig::Misc(_) => (0, 1.0),
            _ => (1, 1.0),
        };
        Timing {
            delay_loop: Some(60.0),
            connect_timeout: Some(5.0),
            retry: Some(retry),
            delay_before_retry: Some(dbr),
            warmup: None,
            alpha: Some(false),
        }
    }

    /// Checks values; field names relative to this check (`url[0].status_code`).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.timing().validate()?;
        let f = |field: &str, msg: String| Err((field.to_string(), msg));
        match self {
            CheckConfig::Tcp(_) | CheckConfig::Ping(_) => Ok(()),
            CheckConfig::HttpGet(c) | CheckConfig::SslGet(c) => {
                if c.sni.is_some() && matches!(self, CheckConfig::HttpGet(_)) {
                    return f("sni", "only valid for ssl_get".into());
                }
                if let Some(s) = &c.sni {
                    ssl::server_name(Some(s), std::net::Ipv4Addr::UNSPECIFIED.into())
                        .map_err(|e| ("sni".into(), e))?;
                }
                if let Some(h) = &c.virtualhost {
                    host_name(h).map_err(|e| ("virtualhost".to_string(), e))?;
                }
                if c.url.is_empty() {
                    return f("url", "at least one url is required".into());
                }
                for (i, u) in c.url.iter().enumerate() {
                    if !u.path.starts_with('/')
                        || u.path
                            .chars()
                            .any(|ch| ch.is_whitespace() || ch.is_control())
                    {
                        return f(
                            &format!("url[{i}].path"),
                            format!("{:?}: must start with / and contain no spaces", u.path),
                        );
                    }
                    if let Some(d) = &u.digest {
                        parse_digest(d).map_err(|e| (format!("url[{i}].digest"), e))?;
                    }
                    if let Some(s) = &u.status_code {
                        s.ranges()
                            .map_err(|e| (format!("url[{i}].status_code"), e))?;
                    }
                    if let Some(h) = &u.virtualhost {
                        host_name(h).map_err(|e| (format!("url[{i}].virtualhost"), e))?;
                    }
                }
                Ok(())
            }
            CheckConfig::Udp(c) => {
                if let Some(p) = &c.payload {
                    parse_hex(p).map_err(|e| ("payload".to_string(), e))?;
                }
                if let Some(p) = &c.require_reply {
                    parse_hex(p).map_err(|e| ("require_reply".to_string(), e))?;
                }
                Ok(())
            }
            CheckConfig::Misc(c) => {
                if c.connect_timeout.is_some() {
                    return f(
                        "connect_timeout",
                        "not used by misc (use misc_timeout)".into(),
                    );
                }
                secs("misc_timeout", c.misc_timeout, true)?;
                match c.misc_path.as_deref().and_then(split_command) {
                    Some(_) => Ok(()),
                    None => f("misc_path", "required: the program to run".into()),
                }
            }
        }
    }

    /// The resolved timing of this check on a real server of a service.
    pub fn resolve(&self, service: &ServiceHealthConfig, real: &RealHealthConfig) -> Resolved {
        let t = self
            .timing()
            .or(real.timing())
            .or(service.timing())
            .or(self.defaults());
        let delay_loop = dur(t.delay_loop.unwrap_or(60.0));
        Resolved {
            schedule: Schedule {
                delay_loop,
                retry: t.retry.unwrap_or(1),
                delay_before_retry: dur(t.delay_before_retry.unwrap_or(1.0)),
                warmup: t.warmup.map_or(delay_loop, dur),
                alpha: t.alpha.unwrap_or(false),
            },
            connect_timeout: dur(t.connect_timeout.unwrap_or(5.0)),
        }
    }

    /// Builds the checker for the real server at `real` (validate first). Fails when the
    /// destination port would be 0 (all-ports service without `connect_port`).
    pub fn build(&self, real: SocketAddr, r: &Resolved) -> Result<Box<dyn Checker>, FieldError> {
        self.validate()?;
        let to = r.connect_timeout;
        let dst = |ip: Option<IpAddr>, port: Option<u16>| -> Result<SocketAddr, FieldError> {
            let port = port.unwrap_or(real.port());
            if port == 0 {
                return Err((
                    "connect_port".into(),
                    "required: the real server has no port".into(),
                ));
            }
            Ok(SocketAddr::new(ip.unwrap_or(real.ip()), port))
        };
        Ok(match self {
            CheckConfig::Tcp(c) => {
                Box::new(TcpChecker::new(dst(c.connect_ip, c.connect_port)?, to))
            }
            CheckConfig::HttpGet(c) | CheckConfig::SslGet(c) => {
                let d = dst(c.connect_ip, c.connect_port)?;
                let urls = c
                    .url
                    .iter()
                    .map(|u| UrlCheck {
                        path: u.path.clone(),
                        host: u
                            .virtualhost
                            .clone()
                            .or_else(|| c.virtualhost.clone())
                            .unwrap_or_else(|| d.to_string()),
                        status: u
                            .status_code
                            .as_ref()
                            .and_then(|s| s.ranges().ok())
                            .unwrap_or_default(),
                        digest: u.digest.as_deref().and_then(|d| parse_digest(d).ok()),
                    })
                    .collect();
                if matches!(self, CheckConfig::SslGet(_)) {
                    let sni = c.sni.as_deref().or(c.virtualhost.as_deref());
                    let sni = sni.filter(|s| s.parse::<IpAddr>().is_err() && !s.contains(':'));
                    Box::new(ssl::ssl_get(d, to, urls, sni).map_err(|e| ("sni".to_string(), e))?)
                } else {
                    Box::new(HttpGetChecker::new(d, to, urls))
                }
            }
            CheckConfig::Udp(c) => Box::new(UdpChecker::new(
                dst(c.connect_ip, c.connect_port)?,
                to,
                c.payload
                    .as_deref()
                    .map(parse_hex)
                    .transpose()
                    .map_err(|e| ("payload".to_string(), e))?
                    .unwrap_or_default(),
                c.require_reply
                    .as_deref()
                    .map(parse_hex)
                    .transpose()
                    .map_err(|e| ("require_reply".to_string(), e))?,
            )),
            CheckConfig::Ping(c) => {
                Box::new(PingChecker::new(c.connect_ip.unwrap_or(real.ip()), to))
            }
            CheckConfig::Misc(c) => {
                let argv = c
                    .misc_path
                    .as_deref()
                    .and_then(split_command)
                    .unwrap_or_default();
                let timeout = c.misc_timeout.map_or(r.schedule.delay_loop, dur);
                Box::new(MiscChecker::new(argv, timeout, c.misc_dynamic))
            }
        })
    }
}

fn host_name(h: &str) -> Result<(), String> {
    if h.is_empty() || h.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err(format!("{h:?} is not a host name"));
    }
    Ok(())
}

/// A check's resolved timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// When it runs.
    pub schedule: Schedule,
    /// Its connect (and I/O) timeout.
    pub connect_timeout: Duration,
}

/// Validates and builds the health engine of one real server at `addr` with configured
/// `weight`. Errors name `health.<field>` or `check[i].<field>`.
pub fn real_server_health(
    service: &ServiceHealthConfig,
    real: &RealHealthConfig,
    checks: &[CheckConfig],
    addr: SocketAddr,
    weight: u32,
    now: Instant,
    rng: &mut SplitMix64,
) -> Result<RealServerHealth, FieldError> {
    real.validate()
        .map_err(|(f, m)| (format!("health.{f}"), m))?;
    let mut checkers = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        let r = c.resolve(service, real);
        let checker = c
            .build(addr, &r)
            .map_err(|(f, m)| (format!("check[{i}].{f}"), m))?;
        checkers.push((checker, r.schedule));
    }
    let inhibit = real
        .inhibit_on_failure
        .or(service.inhibit_on_failure)
        .unwrap_or(false);
    Ok(RealServerHealth::new(checkers, weight, inhibit, now, rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Real {
        #[serde(default)]
        health: RealHealthConfig,
        #[serde(default)]
        check: Vec<CheckConfig>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Svc {
        #[serde(default)]
        health: ServiceHealthConfig,
        real: Vec<Real>,
    }

    fn parse(s: &str) -> Result<Svc, String> {
        toml::from_str(s).map_err(|e| e.to_string())
    }

    const FULL: &str = r#"
health = { delay_loop = 6, quorum = 2, hysteresis = 1, sorry_server = "172.16.0.9:80", alpha = true, inhibit_on_failure = true }

[[real]]
health = { retry = 3, connect_timeout = 2.5 }
[[real.check]]
type = "tcp"
connect_port = 8080
[[real.check]]
type = "http_get"
virtualhost = "www.example"
url = [
  { path = "/health", status_code = "200-299, 304" },
  { path = "/index.html", digest = "444bcb3a3fcf8389296c49467f27e1d6", status_code = [200, "301-302"] },
]
[[real.check]]
type = "ssl_get"
sni = "secure.example"
url = [{ path = "/", status_code = 200 }]
[[real.check]]
type = "udp"
payload = "0001"
require_reply = "cafe"
[[real.check]]
type = "ping"
[[real.check]]
type = "misc"
misc_path = "/usr/local/bin/check --fast"
misc_timeout = 3
misc_dynamic = true
[[real.check]]
type = "TCP_CHECK"
delay_loop = 1.5
"#;

    #[test]
    fn full_schema_parses_and_builds() {
        let s = parse(FULL).unwrap();
        s.health.validate().unwrap();
        assert_eq!(
            s.health.sorry_server().unwrap(),
            Some(("172.16.0.9".parse().unwrap(), Some(80)))
        );
        let r = &s.real[0];
        assert_eq!(r.check.len(), 7);
        for c in &r.check {
            c.validate().unwrap();
        }
        // Check > real > service > type defaults.
        let res = r.check[0].resolve(&s.health, &r.health);
        assert_eq!(res.connect_timeout, Duration::from_millis(2500));
        assert_eq!(res.schedule.retry, 3);
        assert_eq!(res.schedule.delay_loop, Duration::from_secs(6));
        assert_eq!(res.schedule.warmup, Duration::from_secs(6));
        assert_eq!(res.schedule.delay_before_retry, Duration::from_secs(1));
        assert!(res.schedule.alpha);
        let http = r.check[1].resolve(&s.health, &r.health);
        assert_eq!(http.schedule.delay_before_retry, Duration::from_secs(3));
        let last = r.check[6].resolve(&s.health, &r.health);
        assert_eq!(last.schedule.delay_loop, Duration::from_millis(1500));

        let addr: SocketAddr = "172.16.0.2:80".parse().unwrap();
        let mut rng = SplitMix64::new(1);
        let h = real_server_health(
            &s.health,
            &r.health,
            &r.check,
            addr,
            1,
            Instant::now(),
            &mut rng,
        )
        .unwrap();
        assert!(!h.is_up()); // alpha
        let names: Vec<&str> = h.status().iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "TCP_CHECK",
                "HTTP_GET",
                "SSL_GET",
                "UDP_CHECK",
                "PING_CHECK",
                "MISC_CHECK",
                "TCP_CHECK"
            ]
        );
        let q = s.health.service_health(0);
        assert!(!q.has_quorum());
    }

    #[test]
    fn defaults_are_keepalived_ones() {
        let s = parse("[[real]]\n[[real.check]]\ntype = \"misc\"\nmisc_path = \"true\"\n[[real.check]]\ntype = \"tcp\"\n").unwrap();
        let r = &s.real[0];
        let misc = r.check[0].resolve(&s.health, &r.health);
        assert_eq!(misc.schedule.retry, 0);
        assert_eq!(misc.schedule.delay_loop, Duration::from_secs(60));
        let tcp = r.check[1].resolve(&s.health, &r.health);
        assert_eq!(
            tcp,
            Resolved {
                schedule: Schedule::default(),
                connect_timeout: Duration::from_secs(5)
            }
        );
        let q = s.health.service_health(1);
        assert_eq!((q.quorum, q.hysteresis, q.has_quorum()), (1, 0, true));
    }

    fn check_err(toml_check: &str) -> FieldError {
        let s = parse(&format!("[[real]]\n[[real.check]]\n{toml_check}\n")).unwrap();
        s.real[0].check[0].validate().unwrap_err()
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(check_err("type = \"misc\"").0, "misc_path");
        assert_eq!(
            check_err("type = \"misc\"\nmisc_path = \"  \"").0,
            "misc_path"
        );
        assert_eq!(
            check_err("type = \"misc\"\nmisc_path = \"x\"\nconnect_timeout = 1").0,
            "connect_timeout"
        );
        assert_eq!(check_err("type = \"http_get\"").0, "url");
        assert_eq!(
            check_err("type = \"http_get\"\nurl = [{ path = \"/\" }, { path = \"/x\", status_code = \"299-200\" }]").0,
            "url[1].status_code"
        );
        assert_eq!(
            check_err("type = \"http_get\"\nurl = [{ path = \"/\", status_code = 999 }]").0,
            "url[0].status_code"
        );
        assert_eq!(
            check_err("type = \"http_get\"\nurl = [{ path = \"/\", digest = \"abc\" }]").0,
            "url[0].digest"
        );
        assert_eq!(
            check_err("type = \"http_get\"\nurl = [{ path = \"x\" }]").0,
            "url[0].path"
        );
        assert_eq!(
            check_err("type = \"http_get\"\nsni = \"a.b\"\nurl = [{ path = \"/\" }]").0,
            "sni"
        );
        assert_eq!(check_err("type = \"udp\"\npayload = \"xyz\"").0, "payload");
        assert_eq!(
            check_err("type = \"udp\"\nrequire_reply = \"0\"").0,
            "require_reply"
        );
        assert_eq!(check_err("type = \"tcp\"\ndelay_loop = 0").0, "delay_loop");
        assert_eq!(
            check_err("type = \"tcp\"\nconnect_timeout = -1").0,
            "connect_timeout"
        );
        assert_eq!(check_err("type = \"tcp\"\nwarmup = 1e300").0, "warmup");

        let bad = ServiceHealthConfig {
            sorry_server: Some("nope".into()),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "sorry_server");
    }

    #[test]
    fn serde_rejects_unknown_types_and_fields() {
        assert!(parse("[[real]]\n[[real.check]]\ntype = \"smtp\"\n").is_err());
        assert!(parse("[[real]]\n[[real.check]]\ntype = \"tcp\"\nbogus = 1\n").is_err());
        assert!(parse("[[real]]\n[[real.check]]\ntype = \"ping\"\nconnect_port = 1\n").is_err());
        assert!(parse("[[real]]\n[[real.check]]\nconnect_port = 1\n").is_err());
        assert!(parse("health = { bogus = 1 }\n[[real]]\n").is_err());
        assert!(parse("[[real]]\nhealth = { quorum = 1 }\n").is_err());
        assert!(parse(
            "[[real]]\n[[real.check]]\ntype = \"http_get\"\nurl = [{ path = \"/\", x = 1 }]\n"
        )
        .is_err());
    }

    #[test]
    fn build_needs_a_port_and_reports_the_check_index() {
        let s =
            parse("[[real]]\n[[real.check]]\ntype = \"ping\"\n[[real.check]]\ntype = \"tcp\"\n")
                .unwrap();
        let r = &s.real[0];
        let addr: SocketAddr = "172.16.0.2:0".parse().unwrap();
        let e = real_server_health(
            &s.health,
            &r.health,
            &r.check,
            addr,
            1,
            Instant::now(),
            &mut SplitMix64::new(1),
        )
        .unwrap_err();
        assert_eq!(e.0, "check[1].connect_port");
    }
}
