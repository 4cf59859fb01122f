//! Network namespaces for partition tests (needs root and iproute2's `ip`).
//!
//! ```text
//!  hub namespace: bridge br0 10.77.0.254/24   <- the test's client threads run here
//!    ├─ vn1 ══ veth ══ eth0 10.77.0.1   namespace of node 1
//!    ├─ vn2 ══ veth ══ eth0 10.77.0.2   namespace of node 2
//!    └─ ...
//! ```
//!
//! Everything lives in namespaces this harness creates (named `rrkv-<pid>-<n>-…`, so parallel
//! runs do not collide); nothing in the caller's own namespace changes, and the subnet exists
//! only inside them. A partition between node sets A and B adds, in each node's namespace, a
//! blackhole route to every address on the other side: packets across the cut are dropped by
//! the sender (new connections fail, established ones go silent), while the hub, and so every
//! client, still reaches every node. Healing deletes the routes. Dropping a [`NetLab`] deletes
//! its namespaces (and with them the veths and the bridge), also when a test panics; labs left
//! by a killed test process are swept at the next start.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const SUBNET: &str = "10.77.0";
const PREFIX: &str = "rrkv-";

/// A set of network namespaces: one hub and one per node.
pub struct NetLab {
    name: String,
    hub: String,
    nodes: Vec<String>,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
    /// Blackhole routes in place: (node whose namespace holds it, node it cuts off).
    cuts: Vec<(usize, usize)>,
    /// The calling thread's namespace before [`NetLab::enter_hub`].
    original: Option<File>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn setns(file: &File) -> Result<(), String> {
    // SAFETY: setns on a descriptor we own; it changes only the calling thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(format!("setns: {}", std::io::Error::last_os_error()))
    }
}

/// Deletes labs whose test process is gone (killed before its guards ran).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

impl NetLab {
    /// Creates the hub and `n` node namespaces, wired as in the module docs.
    pub fn create(n: usize) -> Result<NetLab, String> {
        static LABS: AtomicUsize = AtomicUsize::new(0);
        sweep_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = NetLab {
            hub: format!("{name}-hub"),
            nodes: (1..=n).map(|i| format!("{name}-n{i}")).collect(),
            name,
            created: Vec::new(),
            cuts: Vec::new(),
            original: None,
        };
        // On an error `lab` is dropped, deleting what was made so far.
        let hub = lab.hub.clone();
        ip(&["netns", "add", &hub])?;
        lab.created.push(hub.clone());
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{SUBNET}.254/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, node) in lab.nodes.clone().iter().enumerate() {
            let id = i + 1;
            ip(&["netns", "add", node])?;
            lab.created.push(node.clone());
            let veth = format!("vn{id}");
            ip(&[
                "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                node,
            ])?;
            ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&["-n", node, "link", "set", "lo", "up"])?;
            let address = format!("{}/24", lab.address(id));
            ip(&["-n", node, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", node, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    /// The lab's name (the prefix of its namespaces).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Node `id`'s address.
    pub fn address(&self, id: usize) -> String {
        format!("{SUBNET}.{id}")
    }

    /// Node `id`'s namespace, for [`super::NodeProcess::netns`].
    pub fn node_netns(&self, id: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.nodes[id - 1])
    }

    /// Moves the calling thread (and threads it spawns later) into the hub namespace, until
    /// the lab is dropped on this thread.
    pub fn enter_hub(&mut self) -> Result<(), String> {
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("opening this thread's namespace: {e}"))?;
        let hub = File::open(PathBuf::from("/run/netns").join(&self.hub))
            .map_err(|e| format!("opening the hub namespace: {e}"))?;
        setns(&hub)?;
        self.original = Some(original);
        Ok(())
    }

    /// Cuts every node in `a` off from every node in `b` (both directions).
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                for (from, to) in [(x, y), (y, x)] {
                    if self.cuts.contains(&(from, to)) {
                        continue;
                    }
                    let route = format!("{}/32", self.address(to));
                    let ns = &self.nodes[from - 1];
                    ip(&["-n", ns, "route", "add", "blackhole", &route]).expect("cutting");
                    self.cuts.push((from, to));
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        for (from, to) in std::mem::take(&mut self.cuts) {
            let route = format!("{}/32", self.address(to));
            let ns = &self.nodes[from - 1];
            ip(&["-n", ns, "route", "del", "blackhole", &route]).expect("healing");
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if let Some(original) = self.original.take() {
            if let Err(e) = setns(&original) {
                eprintln!("leaving the hub namespace: {e}");
            }
        }
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("cleaning up: {e}");
            }
        }
    }
}
