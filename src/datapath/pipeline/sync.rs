//! Connection sync (IPVS sync protocol v1) in the pipeline. Master side: after a packet
//! updates a connection, [`Pipeline::sync_note`] decides as IPVS's `ip_vs_sync_conn_needed`
//! does whether the backup must hear of it (TCP: entering ESTABLISHED, FIN_WAIT, CLOSE_WAIT,
//! TIME_WAIT or CLOSE, and in ESTABLISHED every `SYNC_PERIOD` client packets at
//! `SYNC_THRESHOLD`; UDP at the threshold) and appends a [`SyncConn`] to a preallocated,
//! bounded buffer the worker drains each round (no allocation; a full buffer counts).

use modes::wire::ipvs_sync::{flags, SyncConn};

use super::Pipeline;
use crate::datapath::conn::Xmit;
use crate::datapath::tcp_state::State;

/// Updates one pipeline buffers between two worker rounds.
pub(crate) const SYNC_OUT_MAX: usize = 1024;
/// IPVS `sync_threshold` (first value).
pub const SYNC_THRESHOLD: u32 = 3;
/// IPVS `sync_threshold` (second value, the period).
pub const SYNC_PERIOD: u32 = 50;

/// The sync state number of a state (IPVS's TCP numbers; UDP's one state is 0).
pub fn sync_state(s: State) -> u16 {
    match s {
        State::Udp => 0,
        s => s as u16,
    }
}

impl Pipeline {
    /// After a packet moved connection `slot` from state `old`: queues a sync update when IPVS
    /// would send one.
    pub(crate) fn sync_note(&mut self, slot: u32, old: State) {
        let c = self.table.get(slot);
        if c.one_packet {
            return;
        }
        let periodic = c.in_pkts % SYNC_PERIOD == SYNC_THRESHOLD;
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
        let (fwd, fullnat) = match c.xmit {
            Xmit::Nat => (flags::MASQ, None),
            Xmit::Dr => (flags::DROUTE, None),
            Xmit::Tun { .. } => (flags::TUNNEL, None),
            Xmit::FullNat { lip, lport, .. } => (flags::FULLNAT, Some((lip, lport))),
        };
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
        if self.sync_out.len() < SYNC_OUT_MAX {
            self.sync_out.push(entry);
        } else {
            self.sync_overflow += 1;
        }
    }

    /// The sync updates gathered since the last call, and how many were lost to a full
    /// buffer (reset).
    pub fn drain_sync(&mut self) -> (std::vec::Drain<'_, SyncConn>, u64) {
        let lost = std::mem::take(&mut self.sync_overflow);
        (self.sync_out.drain(..), lost)
    }
}
