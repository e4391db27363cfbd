//! The VRRP state machine of one instance (RFC 3768 §6.4, RFC 5798 §6.4, with
//! keepalived's choices), pure: driven by the time passed in (milliseconds of
//! a monotonic clock) and by events (start, a valid advert, timer expiry,
//! fault, a new effective priority, stop). Each call returns an [`Output`]:
//! an advert to send now (with its priority) and the state entered, if any.
//! The caller sends, runs notify scripts, announces addresses and calls
//! [`Instance::poll`] at [`Instance::next_deadline`].
//!
//! Timers: `Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time`,
//! skew v2 `(256 − priority) / 256` s, v3 `(256 − priority) × Master_Adver_Interval / 256`.
//! Initial state MASTER is taken as keepalived does: BACKUP with a master-down
//! timer of zero, so a higher-priority master's advert still wins; priority
//! 255 (address owner) becomes MASTER at once.

use std::net::IpAddr;

/// The state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or stopped.
    Init,
    /// Watching the master.
    Backup,
    /// Owning the addresses and advertising.
    Master,
    /// A tracked port or service is down: neither advertising nor listening.
    Fault,
}

impl State {
    /// Every state, in the order of [`State::index`].
    pub const ALL: [State; 4] = [State::Init, State::Backup, State::Master, State::Fault];

    /// keepalived's name: INIT, BACKUP, MASTER, FAULT.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }

    /// Dense index (also the value of the state gauge): 0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What the state machine needs to know about its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// VRRP version, 2 or 3.
    pub version: u8,
    /// Configured priority (1..=255).
    pub priority: u8,
    /// Advertisement interval, centiseconds (v2: a multiple of 100).
    pub advert_int_cs: u16,
    /// Initial state MASTER (else BACKUP).
    pub initial_master: bool,
    /// Preemption (false = `nopreempt`).
    pub preempt: bool,
    /// `preempt_delay`, milliseconds.
    pub preempt_delay_ms: u64,
    /// The address adverts are sent from (ties between equal priorities go
    /// to the greater address; IPv6: the port's link-local address).
    pub primary: IpAddr,
}

/// A validated advert, as the state machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    /// IP source of the advert (IPv6: a link-local address).
    pub src: IpAddr,
    /// Its priority.
    pub priority: u8,
    /// Its interval, centiseconds.
    pub adver_int_cs: u16,
}

/// The result of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Output {
    /// Send an advert now with this priority.
    pub advert: Option<u8>,
    /// The state entered.
    pub became: Option<State>,
}

/// One VRRP instance's state machine.
#[derive(Debug, Clone)]
pub struct Instance {
    p: Params,
    state: State,
    /// Effective priority (configured ± tracking).
    prio: u8,
    /// Master_Adver_Interval, centiseconds.
    master_int_cs: u16,
    /// Master-down timer (BACKUP).
    down_at: Option<u64>,
    /// Advert timer (MASTER).
    advert_at: Option<u64>,
    /// Until when a lower-priority master is still accepted (preempt_delay).
    preempt_until: Option<u64>,
}

impl Instance {
    /// A stopped instance.
    pub fn new(p: Params) -> Self {
        let prio = p.priority;
        let master_int_cs = p.advert_int_cs;
        Instance {
            p,
            state: State::Init,
            prio,
            master_int_cs,
            down_at: None,
            advert_at: None,
            preempt_until: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The effective priority.
    pub fn priority(&self) -> u8 {
        self.prio
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.p
    }

    /// Master_Adver_Interval in milliseconds.
    pub fn master_adver_int_ms(&self) -> u64 {
        u64::from(self.master_int_cs) * 10
    }

    /// Skew_Time in milliseconds for the effective priority.
    pub fn skew_ms(&self) -> u64 {
        let inv = 256 - u64::from(self.prio);
        if self.p.version == 3 {
            inv * self.master_adver_int_ms() / 256
        } else {
            inv * 1000 / 256
        }
    }

    /// Master_Down_Interval in milliseconds.
    pub fn master_down_ms(&self) -> u64 {
        3 * self.master_adver_int_ms() + self.skew_ms()
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.state {
            State::Backup => self.down_at,
            State::Master => self.advert_at,
            State::Init | State::Fault => None,
        }
    }

    /// The master-down deadline while BACKUP.
    pub fn down_at(&self) -> Option<u64> {
        (self.state == State::Backup)
            .then_some(self.down_at)
            .flatten()
    }

    fn advert_ms(&self) -> u64 {
        u64::from(self.p.advert_int_cs) * 10
    }

    fn enter_master(&mut self, now: u64) -> Output {
        self.state = State::Master;
        self.down_at = None;
        self.preempt_until = None;
        self.advert_at = Some(now + self.advert_ms());
        Output {
            advert: Some(self.prio),
            became: Some(State::Master),
        }
    }

    fn enter_backup(&mut self, now: u64, down_ms: u64) -> Output {
        let was = self.state;
        self.state = State::Backup;
        self.advert_at = None;
        self.down_at = Some(now + down_ms);
        Output {
            advert: None,
            became: (was != State::Backup).then_some(State::Backup),
        }
    }

    /// Starts the instance (from INIT; otherwise nothing happens).
    pub fn start(&mut self, now: u64) -> Output {
        if self.state != State::Init {
            return Output::default();
        }
        self.master_int_cs = self.p.advert_int_cs;
        if self.p.preempt_delay_ms > 0 {
            self.preempt_until = Some(now + self.p.preempt_delay_ms);
        }
        if self.prio == 255 {
            return self.enter_master(now);
        }
        let down = if self.p.initial_master {
            0
        } else {
            self.master_down_ms()
        };
        self.enter_backup(now, down)
    }

    /// Handles the timers due at `now`.
    pub fn poll(&mut self, now: u64) -> Output {
        match self.state {
            State::Backup if self.down_at.is_some_and(|t| now >= t) => self.enter_master(now),
            State::Master if self.advert_at.is_some_and(|t| now >= t) => {
                self.advert_at = Some(now + self.advert_ms());
                Output {
                    advert: Some(self.prio),
                    became: None,
                }
            }
            _ => Output::default(),
        }
    }

    /// Handles a validated advert (same VRID, authentication and interval
    /// checked by the caller).
    pub fn advert(&mut self, now: u64, a: &Advert) -> Output {
        match self.state {
            State::Init | State::Fault => Output::default(),
            State::Backup => {
                if a.priority == 0 {
                    // The master stops: take over after Skew_Time.
                    self.down_at = Some(now + self.skew_ms());
                    return Output::default();
                }
                let lower = a.priority < self.prio;
                let accept = !self.p.preempt || !lower || self.preempt_delayed(now);
                if accept {
                    if !lower {
                        self.preempt_until = None;
                    }
                    if self.p.version == 3 && a.adver_int_cs > 0 {
                        self.master_int_cs = a.adver_int_cs;
                    }
                    self.down_at = Some(now + self.master_down_ms());
                }
                Output::default()
            }
            State::Master => {
                if a.priority == 0 {
                    self.advert_at = Some(now + self.advert_ms());
                    return Output {
                        advert: Some(self.prio),
                        became: None,
                    };
                }
                let higher =
                    a.priority > self.prio || (a.priority == self.prio && a.src > self.p.primary);
                if higher {
                    if self.p.version == 3 && a.adver_int_cs > 0 {
                        self.master_int_cs = a.adver_int_cs;
                    }
                    let down = self.master_down_ms();
                    self.enter_backup(now, down)
                } else if a.src == self.p.primary {
                    // Our own advert looped back: nothing to do.
                    Output::default()
                } else {
                    // A lower-priority master: assert ourselves at once (keepalived).
                    self.advert_at = Some(now + self.advert_ms());
                    Output {
                        advert: Some(self.prio),
                        became: None,
                    }
                }
            }
        }
    }

    /// True while `preempt_delay` still holds a lower-priority master in
    /// place (the delay starts at start-up or at the first such advert).
    fn preempt_delayed(&mut self, now: u64) -> bool {
        if self.p.preempt_delay_ms == 0 {
            return false;
        }
        let until = *self
            .preempt_until
            .get_or_insert(now + self.p.preempt_delay_ms);
        now < until
    }

    /// A tracked object went down (`true`) or came back (`false`). Entering
    /// FAULT from MASTER sends priority 0; leaving FAULT enters BACKUP with
    /// a full master-down timer.
    pub fn set_fault(&mut self, now: u64, fault: bool) -> Output {
        match (self.state, fault) {
            (State::Fault, false) => {
                let down = self.master_down_ms();
                self.enter_backup(now, down)
            }
            (State::Backup | State::Master, true) => {
                let advert = (self.state == State::Master).then_some(0);
                self.state = State::Fault;
                self.down_at = None;
                self.advert_at = None;
                Output {
                    advert,
                    became: Some(State::Fault),
                }
            }
            _ => Output::default(),
        }
    }

    /// Sets the effective priority (tracking weights); clamped to 1..=254
    /// unless it is the configured 255. A master advertises it at once.
    pub fn set_priority(&mut self, now: u64, prio: u8) -> Output {
        let prio = if prio == 255 && self.p.priority == 255 {
            255
        } else {
            prio.clamp(1, 254)
        };
        if prio == self.prio {
            return Output::default();
        }
        self.prio = prio;
        if self.state == State::Master {
            self.advert_at = Some(now + self.advert_ms());
            return Output {
                advert: Some(prio),
                became: None,
            };
        }
        Output::default()
    }

    /// Whether a BACKUP's master-down timer has run out: it would become MASTER at its next
    /// [`poll`](Self::poll). A sync group holds such a member until every member may go
    /// (`vrrp::group`); an advert it accepts re-arms the timer and clears this.
    pub fn due_master(&self, now: u64) -> bool {
        self.state == State::Backup && self.down_at.is_some_and(|t| now >= t)
    }

    /// Leaves MASTER for BACKUP because a sync-group member did (keepalived's forced backup):
    /// priority 0 is sent so the peer takes over after its Skew_Time, and the master-down
    /// timer starts afresh. Nothing happens in another state.
    pub fn leave_master(&mut self, now: u64) -> Output {
        if self.state != State::Master {
            return Output::default();
        }
        let down = self.master_down_ms();
        let mut out = self.enter_backup(now, down);
        out.advert = Some(0);
        out
    }

    /// Stops the instance: a master sends priority 0 so its backup takes
    /// over after Skew_Time.
    pub fn stop(&mut self) -> Output {
        let advert = (self.state == State::Master).then_some(0);
        let was = self.state;
        self.state = State::Init;
        self.down_at = None;
        self.advert_at = None;
        Output {
            advert,
            became: (was != State::Init).then_some(State::Init),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn params(version: u8, priority: u8) -> Params {
        Params {
            version,
            priority,
            advert_int_cs: 100,
            initial_master: false,
            preempt: true,
            preempt_delay_ms: 0,
            primary: ME.into(),
        }
    }

    fn adv(src: Ipv4Addr, priority: u8) -> Advert {
        Advert {
            src: src.into(),
            priority,
            adver_int_cs: 100,
        }
    }

    fn became(o: Output) -> Option<State> {
        o.became
    }

    #[test]
    fn skew_and_master_down_as_rfc_and_keepalived() {
        // v2: (256-prio)/256 s. Priority 128, advert 1 s → 3.5 s (keepalived's man page).
        let i = Instance::new(params(2, 128));
        assert_eq!(i.skew_ms(), 500);
        assert_eq!(i.master_down_ms(), 3500);
        let i = Instance::new(params(2, 100));
        assert_eq!(i.skew_ms(), 609);
        assert_eq!(i.master_down_ms(), 3609);
        assert_eq!(Instance::new(params(2, 255)).skew_ms(), 3);
        assert_eq!(Instance::new(params(2, 1)).skew_ms(), 996);
        // v3: (256-prio) × Master_Adver_Interval / 256; interval 2 s, priority 192 → 0.5 s.
        let mut p = params(3, 192);
        p.advert_int_cs = 200;
        let i = Instance::new(p);
        assert_eq!(i.skew_ms(), 500);
        assert_eq!(i.master_down_ms(), 6500);
        // v3 with a sub-second interval.
        let mut p = params(3, 100);
        p.advert_int_cs = 50;
        assert_eq!(Instance::new(p).master_down_ms(), 1500 + 304);
    }

    #[test]
    fn backup_start_becomes_master_after_master_down() {
        let mut i = Instance::new(params(2, 100));
        assert_eq!(i.state(), State::Init);
        assert_eq!(i.next_deadline(), None);
        let o = i.start(1000);
        assert_eq!(o.became, Some(State::Backup));
        assert_eq!(o.advert, None);
        assert_eq!(i.next_deadline(), Some(1000 + 3609));
        assert_eq!(i.poll(4608), Output::default());
        let o = i.poll(4609);
        assert_eq!(
            o,
            Output {
                advert: Some(100),
                became: Some(State::Master)
            }
        );
        // Adverts every advert_int.
        assert_eq!(i.next_deadline(), Some(5609));
        assert_eq!(i.poll(5608).advert, None);
        assert_eq!(i.poll(5609).advert, Some(100));
        assert_eq!(i.next_deadline(), Some(6609));
        assert_eq!(i.start(7000), Output::default(), "start is once");
    }

    #[test]
    fn initial_master_takes_over_at_once_unless_outbid() {
        let mut p = params(2, 100);
        p.initial_master = true;
        let mut i = Instance::new(p.clone());
        assert_eq!(i.start(0).became, Some(State::Backup));
        assert_eq!(i.next_deadline(), Some(0));
        assert_eq!(i.poll(0).became, Some(State::Master));
        // A higher advert before the first poll keeps it BACKUP.
        let mut i = Instance::new(p);
        i.start(0);
        i.advert(0, &adv(LOW, 200));
        assert_eq!(i.next_deadline(), Some(3000 + 609));
        assert_eq!(i.poll(1).became, None);
    }

    #[test]
    fn owner_is_master_at_once() {
        let mut i = Instance::new(params(2, 255));
        let o = i.start(5);
        assert_eq!(o.became, Some(State::Master));
        assert_eq!(o.advert, Some(255));
    }

    #[test]
    fn backup_resets_on_higher_or_equal_and_ignores_lower_with_preempt() {
        let mut i = Instance::new(params(2, 100));
        i.start(0);
        i.advert(1000, &adv(LOW, 150));
        assert_eq!(i.next_deadline(), Some(1000 + 3609));
        i.advert(2000, &adv(LOW, 100));
        assert_eq!(i.next_deadline(), Some(2000 + 3609));
        // Lower priority: discarded, the timer runs out, we preempt.
        i.advert(3000, &adv(HIGH, 50));
        assert_eq!(i.next_deadline(), Some(2000 + 3609));
        assert_eq!(became(i.poll(5609)), Some(State::Master));
    }

    #[test]
    fn nopreempt_backup_accepts_a_lower_master() {
        let mut p = params(2, 200);
        p.preempt = false;
        let mut i = Instance::new(p);
        i.start(0);
        for t in (1000..20_000).step_by(1000) {
            i.advert(t, &adv(LOW, 50));
            assert_eq!(i.poll(t).became, None);
        }
        assert_eq!(i.state(), State::Backup);
        // The lower master goes silent: we take over.
        assert_eq!(became(i.poll(19_000 + 3000 + 218)), Some(State::Master));
    }

    #[test]
    fn preempt_delay_holds_then_preempts() {
        let mut p = params(2, 200);
        p.preempt_delay_ms = 10_000;
        let mut i = Instance::new(p);
        i.start(0);
        let mut t = 1000;
        while t < 10_000 {
            i.advert(t, &adv(LOW, 50));
            assert_eq!(i.poll(t).became, None, "t={t}");
            t += 1000;
        }
        // From 10 s on the lower master's adverts are discarded.
        i.advert(10_000, &adv(LOW, 50));
        i.advert(11_000, &adv(LOW, 50));
        assert_eq!(i.next_deadline(), Some(9000 + 3218));
        assert_eq!(became(i.poll(12_218)), Some(State::Master));
    }

    #[test]
    fn preempt_delay_restarts_when_a_lower_master_is_first_seen() {
        let mut p = params(2, 200);
        p.preempt_delay_ms = 5000;
        let mut i = Instance::new(p);
        i.start(0);
        // A higher master for a while clears the start-up delay.
        i.advert(1000, &adv(HIGH, 250));
        // Later a lower master: the delay counts from now.
        i.advert(20_000, &adv(LOW, 50));
        assert_eq!(i.next_deadline(), Some(20_000 + 3218));
        i.advert(24_000, &adv(LOW, 50));
        assert_eq!(i.next_deadline(), Some(24_000 + 3218));
        i.advert(25_000, &adv(LOW, 50));
        assert_eq!(i.next_deadline(), Some(24_000 + 3218));
    }

    #[test]
    fn priority_zero_means_takeover_after_skew() {
        let mut i = Instance::new(params(2, 100));
        i.start(0);
        i.advert(1000, &adv(LOW, 150));
        i.advert(1500, &adv(LOW, 0));
        assert_eq!(i.next_deadline(), Some(1500 + 609));
        assert_eq!(became(i.poll(2109)), Some(State::Master));
    }

    #[test]
    fn master_yields_to_higher_and_ties_by_address() {
        let mut i = Instance::new(params(2, 100));
        i.start(0);
        i.poll(3609);
        assert_eq!(i.state(), State::Master);
        // Equal priority from a smaller address: we stay and assert ourselves.
        let o = i.advert(4000, &adv(LOW, 100));
        assert_eq!(o.advert, Some(100));
        assert_eq!(i.state(), State::Master);
        assert_eq!(i.next_deadline(), Some(5000));
        // Our own advert looped back: nothing.
        assert_eq!(i.advert(4100, &adv(ME, 100)), Output::default());
        // Equal priority from a greater address: we yield.
        let o = i.advert(4500, &adv(HIGH, 100));
        assert_eq!(o.became, Some(State::Backup));
        assert_eq!(o.advert, None);
        assert_eq!(i.next_deadline(), Some(4500 + 3609));
        // Back to master; a higher priority from a smaller address wins too.
        i.poll(8109);
        assert_eq!(i.state(), State::Master);
        assert_eq!(became(i.advert(9000, &adv(LOW, 101))), Some(State::Backup));
    }

    #[test]
    fn master_answers_priority_zero_with_an_advert() {
        let mut i = Instance::new(params(2, 255));
        i.start(0);
        let o = i.advert(300, &adv(LOW, 0));
        assert_eq!(o.advert, Some(255));
        assert_eq!(i.next_deadline(), Some(1300));
    }

    #[test]
    fn v3_backup_learns_the_master_interval() {
        let mut i = Instance::new(params(3, 100));
        i.start(0);
        i.advert(
            1000,
            &Advert {
                src: LOW.into(),
                priority: 200,
                adver_int_cs: 200,
            },
        );
        assert_eq!(i.master_adver_int_ms(), 2000);
        // 3 × 2 s + (156 × 2 s / 256 = 1218 ms).
        assert_eq!(i.next_deadline(), Some(1000 + 6000 + 1218));
        // A v3 master yielding learns it too.
        let mut p = params(3, 100);
        p.initial_master = true;
        let mut m = Instance::new(p);
        m.start(0);
        m.poll(0);
        m.advert(
            10,
            &Advert {
                src: LOW.into(),
                priority: 101,
                adver_int_cs: 50,
            },
        );
        assert_eq!(m.next_deadline(), Some(10 + 1500 + 304));
        // A v2 instance never does (a mismatch is rejected before the state machine).
        let mut v2 = Instance::new(params(2, 100));
        v2.start(0);
        v2.advert(
            1000,
            &Advert {
                src: LOW.into(),
                priority: 200,
                adver_int_cs: 200,
            },
        );
        assert_eq!(v2.master_adver_int_ms(), 1000);
    }

    #[test]
    fn fault_from_master_sends_priority_zero_and_recovers_as_backup() {
        let mut i = Instance::new(params(2, 255));
        i.start(0);
        let o = i.set_fault(100, true);
        assert_eq!(
            o,
            Output {
                advert: Some(0),
                became: Some(State::Fault)
            }
        );
        assert_eq!(i.next_deadline(), None);
        // Adverts and polls change nothing in FAULT.
        assert_eq!(i.advert(200, &adv(LOW, 10)), Output::default());
        assert_eq!(i.poll(1_000_000), Output::default());
        assert_eq!(i.set_fault(300, true), Output::default());
        let o = i.set_fault(400, false);
        assert_eq!(o.became, Some(State::Backup));
        assert_eq!(i.next_deadline(), Some(400 + 3003));
        // From BACKUP: FAULT without an advert.
        let mut b = Instance::new(params(2, 100));
        b.start(0);
        assert_eq!(
            b.set_fault(1, true),
            Output {
                advert: None,
                became: Some(State::Fault)
            }
        );
        // Not started: nothing.
        let mut n = Instance::new(params(2, 100));
        assert_eq!(n.set_fault(1, true), Output::default());
    }

    #[test]
    fn stop_sends_priority_zero_only_from_master() {
        let mut i = Instance::new(params(2, 255));
        i.start(0);
        assert_eq!(
            i.stop(),
            Output {
                advert: Some(0),
                became: Some(State::Init)
            }
        );
        assert_eq!(i.stop(), Output::default());
        let mut b = Instance::new(params(2, 100));
        b.start(0);
        assert_eq!(b.stop().advert, None);
        assert_eq!(b.state(), State::Init);
        // It can start again.
        assert_eq!(b.start(10).became, Some(State::Backup));
    }

    #[test]
    fn tracking_priority_changes_adverts_and_skew() {
        let mut i = Instance::new(params(2, 150));
        i.start(0);
        i.poll(3000 + 414);
        assert_eq!(i.state(), State::Master);
        assert_eq!(i.set_priority(5000, 100).advert, Some(100));
        assert_eq!(i.priority(), 100);
        assert_eq!(i.set_priority(5001, 100), Output::default());
        assert_eq!(i.poll(6000).advert, Some(100));
        // A lowered master now yields to 120.
        assert_eq!(became(i.advert(6100, &adv(LOW, 120))), Some(State::Backup));
        assert_eq!(i.skew_ms(), 609);
        // Clamping: never 0 or 255 for a non-owner.
        i.set_priority(7000, 0);
        assert_eq!(i.priority(), 1);
        i.set_priority(7000, 255);
        assert_eq!(i.priority(), 254);
    }

    #[test]
    fn due_master_and_forced_leave() {
        let mut i = Instance::new(params(2, 100));
        assert!(!i.due_master(0), "not started");
        i.start(0);
        assert!(!i.due_master(3608));
        assert!(i.due_master(3609));
        // An accepted advert re-arms the timer.
        i.advert(3700, &adv(LOW, 150));
        assert!(!i.due_master(3701));
        assert_eq!(i.leave_master(3702), Output::default(), "only from MASTER");
        assert_eq!(became(i.poll(3700 + 3609)), Some(State::Master));
        assert!(!i.due_master(10_000), "a master is not due");
        let o = i.leave_master(8000);
        assert_eq!(
            o,
            Output {
                advert: Some(0),
                became: Some(State::Backup)
            }
        );
        assert_eq!(i.next_deadline(), Some(8000 + 3609));
    }

    /// Exhaustive over states × events: the invariants hold after any event
    /// (a deadline exactly in BACKUP and MASTER; adverts only from MASTER or
    /// as priority 0 on leaving it).
    #[test]
    fn invariants_over_random_event_sequences() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for version in [2, 3] {
            for run in 0..200 {
                let mut p = params(version, 1 + (rnd() % 255) as u8);
                p.initial_master = run % 2 == 0;
                p.preempt = run % 3 != 0;
                p.preempt_delay_ms = if run % 5 == 0 { 3000 } else { 0 };
                let mut i = Instance::new(p);
                let mut now = 0u64;
                for _ in 0..300 {
                    now += rnd() % 700;
                    let before = i.state();
                    let o = match rnd() % 8 {
                        0 => i.start(now),
                        1 | 2 => i.poll(now),
                        3 => i.advert(
                            now,
                            &Advert {
                                src: [LOW, HIGH][(rnd() % 2) as usize].into(),
                                priority: (rnd() % 256) as u8,
                                adver_int_cs: 100,
                            },
                        ),
                        4 => i.set_fault(now, rnd() % 2 == 0),
                        5 => i.set_priority(now, (rnd() % 256) as u8),
                        6 => i.leave_master(now),
                        _ => {
                            if rnd() % 10 == 0 {
                                i.stop()
                            } else {
                                i.poll(now)
                            }
                        }
                    };
                    let s = i.state();
                    match s {
                        State::Backup | State::Master => assert!(i.next_deadline().is_some()),
                        State::Init | State::Fault => assert!(i.next_deadline().is_none()),
                    }
                    if let Some(pr) = o.advert {
                        assert!(
                            s == State::Master || (pr == 0 && before == State::Master),
                            "{before:?} → {s:?} sent {pr}"
                        );
                    }
                    if let Some(b) = o.became {
                        assert_eq!(b, s);
                        assert_ne!(b, before);
                    } else {
                        assert_eq!(before, s);
                    }
                    if s == State::Master && before != State::Master {
                        assert_eq!(o.advert, Some(i.priority()), "an advert on taking over");
                    }
                }
            }
        }
    }
}
