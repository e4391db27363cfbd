//! VRRP sync groups (keepalived's `vrrp_sync_group`), pure: the rule that makes the members of
//! a group move together, given each member's state, whether its master-down timer has run out
//! ([`crate::vrrp::Instance::due_master`]) and whether one of its own tracked objects is down.
//! [`reconcile`] answers with the steps to take; the HA thread (`control::vrrp`) carries them
//! out on the members' state machines and calls it again until it answers nothing.
//!
//! The rules, as keepalived applies them:
//! - one member's fault is the group's: every member goes FAULT (a master sends priority 0),
//!   and they leave FAULT together when no member's own tracking is down;
//! - a member that is not MASTER while another is (it heard a better master, or it was not
//!   ready yet) makes the masters leave MASTER (priority 0, so their peers take over at once);
//! - a member becomes MASTER only together with the others: a member whose master-down timer
//!   ran out waits (stays BACKUP) until every other member is MASTER or has run out too, and
//!   then all of them take over. A member that keeps hearing a better master so holds its whole
//!   group in BACKUP (keepalived's "prefer backup to avoid thrashing").

use super::fsm::State;

/// What the group logic needs to know about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its state.
    pub state: State,
    /// BACKUP with its master-down timer run out (it wants MASTER).
    pub due: bool,
    /// One of its own tracked objects puts it in FAULT.
    pub fault: bool,
}

/// What one member must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Enter (`true`) or leave (`false`) FAULT: `Instance::set_fault`.
    Fault(bool),
    /// Take over now: `Instance::poll` (its timer has run out).
    Master,
    /// Leave MASTER with priority 0: `Instance::leave_master`.
    Backup,
}

/// The steps (member index, step) that bring the group in line; empty when it is.
pub fn reconcile(members: &[Member]) -> Vec<(usize, Step)> {
    let mut steps = Vec::new();
    let fault = members.iter().any(|m| m.fault);
    for (i, m) in members.iter().enumerate() {
        match (m.state, fault) {
            (State::Backup | State::Master, true) => steps.push((i, Step::Fault(true))),
            (State::Fault, false) => steps.push((i, Step::Fault(false))),
            _ => {}
        }
    }
    if !steps.is_empty() || fault {
        return steps;
    }
    let master = |m: &Member| m.state == State::Master;
    let ready = |m: &Member| master(m) || (m.state == State::Backup && m.due);
    if members.iter().any(master) {
        let lagging = members
            .iter()
            .any(|m| matches!(m.state, State::Backup | State::Fault) && !ready(m));
        if lagging {
            steps.extend(
                members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| master(m))
                    .map(|(i, _)| (i, Step::Backup)),
            );
            return steps;
        }
    }
    if members.iter().all(ready) {
        steps.extend(
            members
                .iter()
                .enumerate()
                .filter(|(_, m)| !master(m))
                .map(|(i, _)| (i, Step::Master)),
        );
    }
    steps
}

/// The group's state, for its notify scripts and logs: FAULT when a member is, MASTER when all
/// are, INIT when a member is not running, else BACKUP.
pub fn state(members: &[Member]) -> State {
    if members.iter().any(|m| m.state == State::Fault) {
        State::Fault
    } else if members.iter().all(|m| m.state == State::Master) {
        State::Master
    } else if members.iter().any(|m| m.state == State::Init) {
        State::Init
    } else {
        State::Backup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(state: State, due: bool, fault: bool) -> Member {
        Member { state, due, fault }
    }

    const B: Member = Member {
        state: State::Backup,
        due: false,
        fault: false,
    };
    const DUE: Member = Member {
        state: State::Backup,
        due: true,
        fault: false,
    };
    const M: Member = Member {
        state: State::Master,
        due: false,
        fault: false,
    };

    #[test]
    fn one_fault_faults_all_and_they_recover_together() {
        let g = [m(State::Fault, false, true), M, B];
        assert_eq!(
            reconcile(&g),
            vec![(1, Step::Fault(true)), (2, Step::Fault(true))]
        );
        // Still faulty: nothing more to do.
        let g = [
            m(State::Fault, false, true),
            m(State::Fault, false, false),
            m(State::Fault, false, false),
        ];
        assert_eq!(reconcile(&g), vec![]);
        assert_eq!(state(&g), State::Fault);
        // The member's own fault cleared: all leave FAULT.
        let g = [m(State::Fault, false, false); 3];
        assert_eq!(
            reconcile(&g),
            vec![
                (0, Step::Fault(false)),
                (1, Step::Fault(false)),
                (2, Step::Fault(false))
            ]
        );
        // A fault on a member still in BACKUP (its own step comes from its tracking).
        let g = [m(State::Backup, false, true), M];
        assert_eq!(
            reconcile(&g),
            vec![(0, Step::Fault(true)), (1, Step::Fault(true))]
        );
    }

    #[test]
    fn one_member_leaving_master_takes_the_others_with_it() {
        // The second member heard a better master and went BACKUP.
        let g = [M, B, M];
        assert_eq!(reconcile(&g), vec![(0, Step::Backup), (2, Step::Backup)]);
        assert_eq!(state(&g), State::Backup);
        // All BACKUP and not due: nothing.
        assert_eq!(reconcile(&[B, B]), vec![]);
    }

    #[test]
    fn master_only_together() {
        // One member due, the other not yet: it waits.
        assert_eq!(reconcile(&[DUE, B]), vec![]);
        // Both due: both take over.
        assert_eq!(
            reconcile(&[DUE, DUE]),
            vec![(0, Step::Master), (1, Step::Master)]
        );
        // The others are MASTER already: the due one joins them.
        assert_eq!(reconcile(&[M, DUE, M]), vec![(1, Step::Master)]);
        assert_eq!(reconcile(&[M, M]), vec![]);
        assert_eq!(state(&[M, M]), State::Master);
        // A member not started holds the group back.
        let init = m(State::Init, false, false);
        assert_eq!(reconcile(&[DUE, init]), vec![]);
        assert_eq!(state(&[DUE, init]), State::Init);
    }

    /// Applied until it answers nothing, from any combination of member states, the group ends
    /// consistent: all FAULT when one member is faulty, else never a MASTER beside a member that
    /// is not MASTER.
    #[test]
    fn reconcile_converges_to_a_consistent_group() {
        let states = [State::Backup, State::Master, State::Fault];
        let mut all = Vec::new();
        for a in 0..18 {
            for b in 0..18 {
                let mk = |x: usize| m(states[x % 3], (x / 3) % 2 == 1 && x % 3 == 0, x / 6 == 1);
                all.push(vec![mk(a), mk(b), mk((a + b) % 18)]);
            }
        }
        for start in all {
            let mut g = start.clone();
            for round in 0.. {
                assert!(round < 4, "no convergence from {start:?}");
                let steps = reconcile(&g);
                if steps.is_empty() {
                    break;
                }
                for (i, s) in steps {
                    let x = &mut g[i];
                    match s {
                        Step::Fault(true) => x.state = State::Fault,
                        Step::Fault(false) => {
                            x.state = State::Backup;
                            x.due = false;
                        }
                        Step::Master => {
                            assert!(x.due, "only a due member takes over: {start:?}");
                            x.state = State::Master;
                            x.due = false;
                        }
                        Step::Backup => x.state = State::Backup,
                    }
                }
            }
            if g.iter().any(|x| x.fault) {
                assert!(
                    g.iter().all(|x| x.state == State::Fault),
                    "{start:?} → {g:?}"
                );
            } else if g.iter().any(|x| x.state == State::Master) {
                assert!(
                    g.iter().all(|x| x.state == State::Master),
                    "{start:?} → {g:?}"
                );
            }
        }
    }
}
