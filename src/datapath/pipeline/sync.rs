//! Connection sync (IPVS sync protocol v1) in the pipeline. Master side: after a packet
//! updates a connection, [`Pipeline::sync_note`] decides as IPVS's `ip_vs_sync_conn_needed`
//! does whether the backup must hear of it (TCP: entering ESTABLISHED, FIN_WAIT, CLOSE_WAIT,
//! TIME_WAIT or CLOSE, and in ESTABLISHED every `SYNC_PERIOD` client packets at
//! `SYNC_THRESHOLD`; UDP at the threshold) and appends a [`SyncConn`] to a preallocated,
//! bounded buffer the worker drains each round (no allocation; a full buffer counts).
//! Persistence templates go the same way ([`Pipeline::sync_template`]): when a connection they
//! control is created or synced and the template is due ([`Template::sync_due`]: never sent, or
//! a quarter of its timeout ago), as IPVS's template entries (flag `TEMPLATE`, client port 0,
//! state NONE, the persistence timeout). Backup side: [`Pipeline::sync_apply`] creates or
//! refreshes connections, and installs templates in the shared table.

use std::net::IpAddr;

use modes::wire::ipvs_sync::{flags, SyncConn};

use super::Pipeline;
use crate::datapath::conn::Xmit;
use crate::datapath::persist::{Template, TemplateKey};
use crate::datapath::tcp_state::State;

/// Updates one pipeline buffers between two worker rounds.
pub(crate) const SYNC_OUT_MAX: usize = 1024;
/// IPVS `sync_threshold` (first value).
pub const SYNC_THRESHOLD: u32 = 3;
/// IPVS `sync_threshold` (second value, the period; the connection table counts client
/// packets modulo it).
pub const SYNC_PERIOD: u32 = crate::datapath::conn::SYNC_PERIOD as u32;

/// The sync state number of a state (IPVS's TCP numbers; UDP's one state is 0).
pub fn sync_state(s: State) -> u16 {
    match s {
        State::Udp => 0,
        s => s as u16,
    }
}

impl Pipeline {
    /// After a packet moved connection `slot` from state `old`: queues a sync update when IPVS
    /// would send one. `input`: the packet came from the client (only those count towards the
    /// threshold, as IPVS's `in_pkts`).
    pub(crate) fn sync_note(&mut self, slot: u32, old: State, input: bool, refresh: u32) {
        let now = self.now;
        let c = self.table.get(slot);
        if c.one_packet() {
            return;
        }
        let periodic = input
            && (u32::from(c.in_pkts) == SYNC_THRESHOLD
                || (refresh > 0
                    && u32::from((now as u16).wrapping_sub(c.synced_at)) >= refresh.min(0xffff)));
        let needed = if c.proto == 6 {
            let synced_states = matches!(
                c.state,
                State::Established
                    | State::FinWait
                    | State::CloseWait
                    | State::TimeWait
                    | State::Close
            );
            synced_states && (c.state != old || (c.state == State::Established && periodic))
        } else {
            periodic
        };
        if !needed {
            return;
        }
        let (fwd, fullnat) = fwd_flags(c.xmit);
        let entry = SyncConn {
            protocol: c.proto,
            flags: fwd,
            state: sync_state(c.state),
            cport: c.cport,
            vport: c.vport,
            dport: c.dport,
            fwmark: 0,
            timeout: self.table.timeouts().of(c.state),
            caddr: c.caddr,
            vaddr: c.vaddr,
            daddr: c.daddr,
            fullnat,
        };
        if entry.family().is_none() {
            // NAT64 (IPv6 client, IPv4 real server): sync v1 has one family per entry.
            self.c.sync_skipped_v6 += 1;
            return;
        }
        let template = c.template.as_ref().filter(|t| t.sync_due(now)).cloned();
        if self.sync_out.len() < SYNC_OUT_MAX {
            self.sync_out.push(entry);
            self.table.get_mut(slot).synced_at = now as u16;
        } else {
            self.sync_overflow += 1;
        }
        if let Some(t) = template {
            self.push_template(&t, fwd);
        }
    }

    /// Master: queues template `t` (of a connection with transmitter `xmit`) when it is due.
    /// Called when a persistent connection is created; [`Pipeline::sync_note`] covers the
    /// connections synced later.
    pub(crate) fn sync_template(&mut self, t: &Template, xmit: Xmit) {
        if t.sync_due(self.now) {
            self.push_template(t, fwd_flags(xmit).0);
        }
    }

    fn push_template(&mut self, t: &Template, fwd: u32) {
        let entry = template_entry(&t.key, t.dest.addr(), t.dest.port(), t.timeout, fwd);
        if entry.family().is_none() {
            self.c.sync_skipped_v6 += 1;
            return;
        }
        if self.sync_out.len() >= SYNC_OUT_MAX {
            self.sync_overflow += 1;
            return;
        }
        self.sync_out.push(entry);
    }

    /// The sync updates gathered since the last call, and how many were lost to a full
    /// buffer (reset).
    pub fn drain_sync(&mut self) -> (std::vec::Drain<'_, SyncConn>, u64) {
        let lost = std::mem::take(&mut self.sync_overflow);
        (self.sync_out.drain(..), lost)
    }
}

/// The forwarding-method flag of a transmitter, and FullNAT's local address and port.
fn fwd_flags(x: Xmit) -> (u32, Option<(IpAddr, u16)>) {
    match x {
        Xmit::Nat => (flags::MASQ, None),
        Xmit::Dr => (flags::DROUTE, None),
        Xmit::Tun { .. } => (flags::TUNNEL, None),
        Xmit::FullNat { lip, lport, .. } => (flags::FULLNAT, Some((lip, lport))),
    }
}

/// A persistence template as IPVS syncs it: flag `TEMPLATE` with the forwarding method, the
/// masked client address and port 0, the service's virtual address and port (0 for an
/// all-ports service), the real server, state NONE, the persistence timeout.
pub fn template_entry(
    key: &TemplateKey,
    daddr: IpAddr,
    dport: u16,
    timeout: u32,
    fwd: u32,
) -> SyncConn {
    SyncConn {
        protocol: key.proto,
        flags: flags::TEMPLATE | fwd,
        state: sync_state(State::None),
        cport: 0,
        vport: key.vport,
        dport,
        fwmark: 0,
        timeout,
        caddr: key.client,
        vaddr: key.vaddr,
        daddr,
        fullnat: None,
    }
}

/// Why a synced entry was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncDrop {
    /// No such service here (for a template: no such persistent service).
    UnknownService,
    /// The service has no such real server (or a different forwarding method).
    UnknownDest,
    /// Not TCP/UDP, one-packet scheduling, an unknown state number.
    Unsupported,
    /// No route to the real server.
    NoRoute,
    /// The table is full, or a FullNAT local port is not free here.
    NoRoom,
}

impl Pipeline {
    /// Backup side: creates or refreshes the connection `e` describes, with its real server,
    /// state and timeout, without scheduling (as IPVS's `ip_vs_proc_conn`). The worker calls
    /// this for entries the HA thread routed to it (the owner steering would pick).
    pub fn sync_apply(&mut self, env: &super::Env, e: &SyncConn) -> Result<(), SyncDrop> {
        self.now_ms = env.now_ms;
        self.now = (env.now_ms / 1000) as u32;
        if !matches!(e.protocol, 6 | 17) || e.flags & flags::ONE_PACKET != 0 {
            return Err(SyncDrop::Unsupported);
        }
        if e.flags & flags::TEMPLATE != 0 {
            return self.sync_template_apply(env, e);
        }
        let state = if e.protocol == 17 {
            State::Udp
        } else {
            *State::ALL
                .get(usize::from(e.state))
                .filter(|s| **s != State::Udp)
                .ok_or(SyncDrop::Unsupported)?
        };
        let key =
            crate::datapath::conn::FlowKey::new(e.protocol, e.caddr, e.cport, e.vaddr, e.vport);
        if let Some(found) = self.table.lookup(&key) {
            self.table
                .set_synced(found.slot, state, e.timeout, self.now);
            return Ok(());
        }
        let snap = env.snap;
        let (svc, i, want) = find_dest(snap, e)?;
        let (out, hop) = snap.router.lookup(e.daddr).ok_or(SyncDrop::NoRoute)?;
        let tun_src = match want {
            modes::Forward::Tun => snap.ports[out]
                .source_for_ip(e.daddr)
                .ok_or(SyncDrop::NoRoute)?,
            _ if e.daddr.is_ipv6() => std::net::Ipv6Addr::UNSPECIFIED.into(),
            _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
        };
        let fullnat = want == modes::Forward::FullNat;
        let nc = crate::datapath::conn::NewConn {
            proto: e.protocol,
            caddr: e.caddr,
            cport: e.cport,
            vaddr: e.vaddr,
            vport: e.vport,
            daddr: e.daddr,
            dport: e.dport,
            fwd: want,
            out: out as u8,
            hop,
            tun_src,
            // The handshake is over on the master: TOA went (or not) there.
            toa: crate::datapath::conn::Toa::Off,
            dest_id: svc.dest_ids[i],
            dest: svc.dests[i].clone(),
            template: None,
            one_packet: false,
            local_pool: fullnat.then(|| svc.local_addresses.clone()),
        };
        let given = if fullnat {
            let (ip, port) = e.fullnat.ok_or(SyncDrop::Unsupported)?;
            Some((ip, port))
        } else {
            None
        };
        let slot = self
            .table
            .insert_local(nc, given, self.now)
            .map_err(|_| SyncDrop::NoRoom)?;
        self.table.set_synced(slot, state, e.timeout, self.now);
        Ok(())
    }

    /// Backup side of a template: installs or refreshes it in the shared table (a persistent
    /// service with that real server must exist here).
    fn sync_template_apply(&mut self, env: &super::Env, e: &SyncConn) -> Result<(), SyncDrop> {
        let (svc, i, _) = find_dest(env.snap, e)?;
        if svc.persistent.is_none() {
            return Err(SyncDrop::UnknownService);
        }
        let key = TemplateKey {
            proto: e.protocol,
            client: e.caddr,
            vaddr: e.vaddr,
            vport: svc.vport,
        };
        env.templates
            .install(key, svc.dests[i].clone(), e.timeout, self.now);
        Ok(())
    }
}

/// The service, the index of the real server and the forwarding method a synced entry names.
fn find_dest<'s>(
    snap: &'s crate::datapath::service::Snapshot,
    e: &SyncConn,
) -> Result<(&'s crate::datapath::service::Service, usize, modes::Forward), SyncDrop> {
    let svc = snap
        .service(e.protocol, e.vaddr, e.vport)
        .ok_or(SyncDrop::UnknownService)?;
    let want = match e.flags & flags::FWD_MASK {
        flags::MASQ => modes::Forward::Nat,
        flags::DROUTE => modes::Forward::Dr,
        flags::TUNNEL => modes::Forward::Tun,
        flags::FULLNAT => modes::Forward::FullNat,
        _ => return Err(SyncDrop::Unsupported),
    };
    let i = svc
        .dests
        .iter()
        .enumerate()
        .position(|(i, d)| {
            d.addr() == e.daddr && (d.port() == e.dport || d.port() == 0) && svc.forward[i] == want
        })
        .ok_or(SyncDrop::UnknownDest)?;
    Ok((svc, i, want))
}
