//! VRRP notify scripts through the shared hook-script runner (`control::script`): a lone
//! priority-255 instance becomes MASTER at once and runs `notify_master` and `notify` (with
//! `INSTANCE NAME STATE PRIORITY` and the `TAPVS_VRRP_*` environment). The real-server and
//! quorum scripts are tested with the health checks (`tests/health.rs`).

mod common;

use std::time::Duration;

use common::lab::{self, Lab};
use tapvs_lab::netns::{precheck, wait_until};

#[test]
fn vrrp_notify_scripts_run_on_becoming_master() {
    if !precheck() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tapvs-vrrp-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (master, all) = (dir.join("master"), dir.join("all"));
    let config = format!(
        "{}\n[[vrrp]]\nname = \"VI_T\"\nport = \"ext\"\nvirtual_router_id = 77\npriority = 255\n\
         state = \"MASTER\"\nvirtual_addresses = [\"{}\"]\n\
         notify_master = \"echo $TAPVS_VRRP_INSTANCE $TAPVS_VRRP_STATE > {}\"\n\
         notify = \"echo >> {}\"\n",
        lab::base_config(1),
        lab::VIP,
        master.display(),
        all.display(),
    );
    let mut lab = Lab::build(1).unwrap();
    lab.start(&config).expect("start tapvs");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            read(&master) == "VI_T MASTER\n" && read(&all) == "INSTANCE VI_T MASTER 255\n"
        }),
        "master: {:?} all: {:?}",
        read(&master),
        read(&all)
    );
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
