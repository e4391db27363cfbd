//! Settings of the IPVS connection-sync daemon (protocol v1), shared by the `[sync]` config
//! section and `tapvsadm --start-daemon`: which roles run (master, backup, or both at once),
//! the port (ipvsadm's `--mcast-interface`), `--syncid`, `--sync-maxlen`, `--mcast-group`,
//! `--mcast-port`; with validation that names the field. Pure; the daemon itself is
//! `control::sync`.

use std::net::Ipv4Addr;

use serde::Deserialize;

/// The `[sync]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    #[serde(default)]
    master: bool,
    #[serde(default)]
    backup: bool,
    mcast_interface: Option<String>,
    #[serde(default)]
    syncid: u32,
    sync_maxlen: Option<u32>,
    mcast_group: Option<String>,
    mcast_port: Option<u32>,
    #[serde(default)]
    refresh_period: u32,
}

/// One role's settings (ipvsadm keeps them per role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    /// Index of the port sync datagrams leave from / arrive on.
    pub port: usize,
    /// Sync id: 0 sends 0 and accepts every id; otherwise only that id.
    pub syncid: u8,
    /// Largest sync message (UDP payload) in bytes.
    pub maxlen: u16,
    /// Multicast group (or a unicast peer address).
    pub group: Ipv4Addr,
    /// UDP port.
    pub mcast_port: u16,
}

/// The validated `[sync]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncConfig {
    /// The master role, if started.
    pub master: Option<SyncSettings>,
    /// The backup role, if started.
    pub backup: Option<SyncSettings>,
    /// Master: re-sync a connection on a client packet when its last update is this many
    /// seconds old (IPVS's `sync_refresh_period`, 0 = off, the default).
    pub refresh_period: u32,
}

/// Default group, 224.0.0.81.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// Default UDP port, 8848.
pub const DEFAULT_PORT: u16 = 8848;

/// Checks one role's values. `ports`: names and MTUs; `port` a name or `None` for the first.
/// Errors are (field suffix, problem).
pub fn settings(
    ports: &[(String, u32)],
    port: Option<&str>,
    syncid: u32,
    maxlen: Option<u32>,
    group: Option<&str>,
    mcast_port: Option<u32>,
) -> Result<SyncSettings, (&'static str, String)> {
    let idx = match port {
        None => 0,
        Some(p) => ports
            .iter()
            .position(|(n, _)| n == p)
            .ok_or(("mcast_interface", format!("no port named {p:?}")))?,
    };
    let mtu = ports
        .get(idx)
        .map(|p| p.1)
        .ok_or(("mcast_interface", "there is no port".to_string()))?;
    let syncid = u8::try_from(syncid).map_err(|_| ("syncid", "must be 0..=255".to_string()))?;
    let max_payload = mtu.saturating_sub(28);
    let maxlen = maxlen.unwrap_or(max_payload);
    if !(44..=max_payload).contains(&maxlen) {
        return Err((
            "sync_maxlen",
            format!("must be 44..={max_payload} (the port's MTU less IP and UDP headers)"),
        ));
    }
    let group = match group {
        None => DEFAULT_GROUP,
        Some(g) => {
            let ip: Ipv4Addr = g
                .parse()
                .map_err(|_| ("mcast_group", format!("{g:?} is not an IPv4 address")))?;
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_loopback() {
                return Err(("mcast_group", format!("{ip} cannot be a sync destination")));
            }
            ip
        }
    };
    let mcast_port = match mcast_port {
        None => DEFAULT_PORT,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(("mcast_port", "must be 1..=65535".to_string()))?,
    };
    Ok(SyncSettings {
        port: idx,
        syncid,
        maxlen: maxlen as u16,
        group,
        mcast_port,
    })
}

/// Validates the section; errors are (field path, problem).
pub fn validate(raw: &RawSync, ports: &[(String, u32)]) -> Result<SyncConfig, (String, String)> {
    if !raw.master && !raw.backup {
        return Ok(SyncConfig::default());
    }
    let s = settings(
        ports,
        raw.mcast_interface.as_deref(),
        raw.syncid,
        raw.sync_maxlen,
        raw.mcast_group.as_deref(),
        raw.mcast_port,
    )
    .map_err(|(f, m)| (format!("sync.{f}"), m))?;
    if raw.refresh_period > 86_400 {
        return Err((
            "sync.refresh_period".into(),
            "must be 0..=86400 seconds".into(),
        ));
    }
    Ok(SyncConfig {
        master: raw.master.then_some(s),
        backup: raw.backup.then_some(s),
        refresh_period: raw.refresh_period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<(String, u32)> {
        vec![("ext".into(), 1500), ("int".into(), 9000)]
    }

    #[test]
    fn defaults_and_errors() {
        let s = settings(&ports(), None, 0, None, None, None).unwrap();
        assert_eq!(
            s,
            SyncSettings {
                port: 0,
                syncid: 0,
                maxlen: 1472,
                group: DEFAULT_GROUP,
                mcast_port: 8848
            }
        );
        let s = settings(
            &ports(),
            Some("int"),
            7,
            Some(1000),
            Some("239.1.1.1"),
            Some(9000),
        )
        .unwrap();
        assert_eq!(
            (s.port, s.syncid, s.maxlen, s.mcast_port),
            (1, 7, 1000, 9000)
        );
        let e = |p: Option<&str>, id, ml, g: Option<&str>, mp| {
            settings(&ports(), p, id, ml, g, mp).unwrap_err().0
        };
        assert_eq!(e(Some("x"), 0, None, None, None), "mcast_interface");
        assert_eq!(e(None, 256, None, None, None), "syncid");
        assert_eq!(e(None, 0, Some(1473), None, None), "sync_maxlen");
        assert_eq!(e(None, 0, Some(10), None, None), "sync_maxlen");
        assert_eq!(e(None, 0, None, Some("x"), None), "mcast_group");
        assert_eq!(e(None, 0, None, Some("0.0.0.0"), None), "mcast_group");
        assert_eq!(e(None, 0, None, None, Some(0)), "mcast_port");
        let raw: RawSync = toml::from_str("master = true\nbackup = true\nsyncid = 300\n").unwrap();
        assert_eq!(validate(&raw, &ports()).unwrap_err().0, "sync.syncid");
        let raw: RawSync = toml::from_str("backup = true\n").unwrap();
        let c = validate(&raw, &ports()).unwrap();
        assert!(c.master.is_none() && c.backup.is_some());
        assert_eq!(
            validate(&RawSync::default(), &ports()).unwrap(),
            SyncConfig::default()
        );
    }
}
