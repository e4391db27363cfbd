//! Direct routing (`ipvsadm -g`): the IP packet goes to the real server
//! unchanged (it owns the VIP on a non-ARPing interface); only the Ethernet
//! addresses are rewritten. TTL, checksums and the vnet header stay as they
//! are.

use crate::wire::ethernet::EthernetAddress;

/// Rewrites the frame's MACs: source `src_mac` (the appliance), destination
/// `dst_mac` (the real server). No-op on a frame shorter than the Ethernet
/// header.
#[inline]
pub fn forward(frame: &mut [u8], src_mac: EthernetAddress, dst_mac: EthernetAddress) {
    crate::nat::set_macs(frame, src_mac, dst_mac);
}
