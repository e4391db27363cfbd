//! VRRP (RFC 3768 v2, RFC 5798 v3) as keepalived implements it, pure: the
//! state machine of one instance ([`fsm`]) and the validation of received
//! adverts with keepalived's reject reasons ([`check`]), the sync-group rule that moves
//! members together ([`group`]), and the `[[vrrp]]` and `[[vrrp_sync_group]]` configuration
//! sections ([`config`]). No I/O and no
//! clock: the control side (`control::vrrp`) feeds them time, adverts and
//! faults, and sends what they ask for.

pub mod check;
pub mod config;
pub mod fsm;
pub mod group;

pub use check::{validate, Checked, Expect, Reject};
pub use fsm::{Advert, Instance, Output, Params, State};
