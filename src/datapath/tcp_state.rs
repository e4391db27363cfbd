//! The IPVS TCP connection state machine, kept as data: the states, their default timeouts, and
//! one transition table per direction (client to server, server to client, and client to server
//! when replies bypass the director, as in DR and TUN), indexed by the packet's most significant
//! flag with the priority RST > SYN > FIN > ACK.
//!
//! The tables reproduce the behaviour of Linux IPVS's normal (not `secure_tcp`) state tables as
//! described in `shared/reference/lvs.md` §1.4.

/// An IPVS TCP state (and the single UDP state, kept beside them for the table's counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// No state yet.
    None = 0,
    /// ESTABLISHED: the only state counted as an active connection.
    Established = 1,
    /// SYN_SENT.
    SynSent = 2,
    /// SYN_RECV.
    SynRecv = 3,
    /// FIN_WAIT.
    FinWait = 4,
    /// TIME_WAIT.
    TimeWait = 5,
    /// CLOSE.
    Close = 6,
    /// CLOSE_WAIT.
    CloseWait = 7,
    /// LAST_ACK.
    LastAck = 8,
    /// LISTEN.
    Listen = 9,
    /// SYNACK.
    SynAck = 10,
    /// UDP (the one state of a UDP connection).
    Udp = 11,
}

/// Number of states, UDP included.
pub const STATE_COUNT: usize = 12;

impl State {
    /// All states in index order.
    pub const ALL: [State; STATE_COUNT] = [
        State::None,
        State::Established,
        State::SynSent,
        State::SynRecv,
        State::FinWait,
        State::TimeWait,
        State::Close,
        State::CloseWait,
        State::LastAck,
        State::Listen,
        State::SynAck,
        State::Udp,
    ];

    /// The name `ipvsadm -L -c` prints.
    pub fn name(self) -> &'static str {
        match self {
            State::None => "NONE",
            State::Established => "ESTABLISHED",
            State::SynSent => "SYN_SENT",
            State::SynRecv => "SYN_RECV",
            State::FinWait => "FIN_WAIT",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
            State::Listen => "LISTEN",
            State::SynAck => "SYNACK",
            State::Udp => "UDP",
        }
    }

    /// Whether IPVS counts a connection in this state as active (otherwise inactive).
    pub fn is_active(self) -> bool {
        self == State::Established
    }

    /// Whether a connection in this state counts towards a service's `conn_limit`: every
    /// state until a FIN or RST was seen (FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT and
    /// LAST_ACK do not), so a closed connection lingering in TIME_WAIT frees its place.
    pub fn is_open(self) -> bool {
        !matches!(
            self,
            State::FinWait | State::TimeWait | State::Close | State::CloseWait | State::LastAck
        )
    }
}

/// Which way a packet goes relative to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to real server.
    Input = 0,
    /// Real server to client (through the director).
    Output = 1,
    /// Client to real server on a connection whose replies bypass the director.
    InputOnly = 2,
}

const ES: State = State::Established;
const SS: State = State::SynSent;
const SR: State = State::SynRecv;
const FW: State = State::FinWait;
const TW: State = State::TimeWait;
const CL: State = State::Close;
const CW: State = State::CloseWait;
const LA: State = State::LastAck;
const LI: State = State::Listen;

/// `TABLE[dir][event][state]`, events ordered SYN, FIN, ACK, RST; columns are the TCP states
/// NONE, ES, SS, SR, FW, TW, CL, CW, LA, LI, SA.
const TABLE: [[[State; 11]; 4]; 3] = [
    // Input: client -> server.
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR], // syn
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW], // fin
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES], // ack
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR], // rst
    ],
    // Output: server -> client.
    [
        [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR], // syn
        [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW], // fin
        [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES], // ack
        [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL], // rst
    ],
    // Input only: client -> server, replies not seen.
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR], // syn
        [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW], // fin
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES], // ack
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL], // rst
    ],
];

/// TCP flag bits as they appear in the header's flag byte.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The transition [`TABLE`] row of a flag byte's most significant flag (RST > SYN > FIN >
/// ACK), or `None` for a packet with none of them.
const fn event_of(tcp_flags: u8) -> Option<usize> {
    if tcp_flags & flags::RST != 0 {
        Some(3)
    } else if tcp_flags & flags::SYN != 0 {
        Some(0)
    } else if tcp_flags & flags::FIN != 0 {
        Some(1)
    } else if tcp_flags & flags::ACK != 0 {
        Some(2)
    } else {
        None
    }
}

/// The four flag bits that drive the state machine (FIN, SYN, RST, ACK) packed into 4 bits:
/// FIN, SYN, RST stay in bits 0–2 and ACK (bit 4) moves to bit 3.
#[inline(always)]
const fn flag_index(tcp_flags: u8) -> usize {
    ((tcp_flags & 0x07) | ((tcp_flags >> 1) & 0x08)) as usize
}

/// [`TABLE`] expanded to `NEXT[dir][flag_index(flags)][state]` over every state (UDP and
/// flag-less packets map a state to itself), so [`next`] is one load with no branches.
const NEXT: [[[State; STATE_COUNT]; 16]; 3] = {
    let mut t = [[[State::None; STATE_COUNT]; 16]; 3];
    let mut d = 0;
    while d < 3 {
        let mut i = 0;
        while i < 16 {
            // Rebuild a flag byte with exactly the bits index `i` stands for.
            let f = (i as u8 & 0x07) | ((i as u8 & 0x08) << 1);
            let event = event_of(f);
            let mut s = 0;
            while s < STATE_COUNT {
                t[d][i][s] = match event {
                    // TABLE has a column for every TCP state, all numbered before UDP.
                    Some(e) if s < State::Udp as usize => TABLE[d][e][s],
                    _ => State::ALL[s],
                };
                s += 1;
            }
            i += 1;
        }
        d += 1;
    }
    t
};

/// The next TCP state for a packet with `tcp_flags` going `dir` on a connection in `state`.
/// A packet with none of RST, SYN, FIN, ACK leaves the state unchanged; so does a UDP state.
#[inline]
pub fn next(state: State, dir: Dir, tcp_flags: u8) -> State {
    NEXT[dir as usize][flag_index(tcp_flags)][state as usize]
}

/// Per-state timeouts in seconds, indexed by `State as usize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts(pub [u32; STATE_COUNT]);

impl Timeouts {
    /// IPVS defaults with the three `ipvsadm --set` values (ESTABLISHED, FIN_WAIT, UDP).
    pub fn new(tcp: u32, tcp_fin: u32, udp: u32) -> Timeouts {
        let mut t = [0u32; STATE_COUNT];
        t[State::None as usize] = 2;
        t[State::Established as usize] = tcp;
        t[State::SynSent as usize] = 120;
        t[State::SynRecv as usize] = 60;
        t[State::FinWait as usize] = tcp_fin;
        t[State::TimeWait as usize] = 120;
        t[State::Close as usize] = 10;
        t[State::CloseWait as usize] = 60;
        t[State::LastAck as usize] = 30;
        t[State::Listen as usize] = 120;
        t[State::SynAck as usize] = 120;
        t[State::Udp as usize] = udp;
        Timeouts(t)
    }

    /// The timeout of `state`.
    #[inline]
    pub fn of(&self, state: State) -> u32 {
        self.0[state as usize]
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::new(900, 120, 300)
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;

    fn walk(steps: &[(Dir, u8)]) -> Vec<State> {
        let mut s = State::None;
        steps
            .iter()
            .map(|&(d, f)| {
                s = next(s, d, f);
                s
            })
            .collect()
    }

    #[test]
    fn nat_handshake_and_server_close() {
        use Dir::*;
        let states = walk(&[
            (Input, SYN),
            (Output, SYN | ACK),
            (Input, ACK),
            (Output, FIN | ACK),
            (Input, FIN | ACK),
            (Output, ACK),
        ]);
        assert_eq!(
            states,
            [SR, SR, ES, FW, TW, TW],
            "server-first close ends in TIME_WAIT"
        );
    }

    #[test]
    fn client_close_goes_through_close_wait() {
        use Dir::*;
        let s = walk(&[
            (Input, SYN),
            (Output, SYN | ACK),
            (Input, ACK),
            (Input, FIN | ACK),
        ]);
        assert_eq!(s.last(), Some(&CW));
        assert_eq!(next(CW, Output, FIN | ACK), TW);
    }

    #[test]
    fn rst_has_priority_and_closes() {
        assert_eq!(next(ES, Dir::Input, RST | ACK), CL);
        assert_eq!(next(ES, Dir::Output, RST | SYN), CL);
        assert_eq!(
            next(SR, Dir::Input, RST),
            SR,
            "RST in SYN_RECV from client is ignored"
        );
    }

    #[test]
    fn input_only_for_dr() {
        use Dir::*;
        let s = walk(&[(InputOnly, SYN), (InputOnly, ACK), (InputOnly, FIN | ACK)]);
        assert_eq!(s, [SR, ES, FW]);
    }

    #[test]
    fn flagless_and_udp_do_not_move() {
        assert_eq!(next(ES, Dir::Input, 0), ES);
        assert_eq!(next(State::Udp, Dir::Input, SYN), State::Udp);
    }

    /// The branchy definition [`next`] was expanded from.
    fn next_reference(state: State, dir: Dir, tcp_flags: u8) -> State {
        match (event_of(tcp_flags), state) {
            (None, s) | (_, s @ State::Udp) => s,
            (Some(e), s) => TABLE[dir as usize][e][s as usize],
        }
    }

    #[test]
    fn next_matches_the_table_for_every_input() {
        for dir in [Dir::Input, Dir::Output, Dir::InputOnly] {
            for s in State::ALL {
                for f in 0..=255u8 {
                    assert_eq!(
                        next(s, dir, f),
                        next_reference(s, dir, f),
                        "{s:?} {dir:?} {f:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn default_timeouts_match_ipvs() {
        let t = Timeouts::default();
        assert_eq!(t.of(ES), 900);
        assert_eq!(t.of(SR), 60);
        assert_eq!(t.of(FW), 120);
        assert_eq!(t.of(TW), 120);
        assert_eq!(t.of(CL), 10);
        assert_eq!(t.of(State::None), 2);
        assert_eq!(t.of(State::Udp), 300);
        assert!(ES.is_active() && !SR.is_active());
    }
}
