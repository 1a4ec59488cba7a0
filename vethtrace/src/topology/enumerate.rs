//! Finding every network namespace on the machine: ip-netns names (`/run/netns/*`), docker's
//! (`/var/run/docker/netns/*`), any other nsfs bind mount in /proc/self/mountinfo (CNI's `cni-…`),
//! and the namespace of every process (`/proc/*/ns/net`). Namespaces are deduplicated by identity
//! (device and inode of the nsfs file).
//!
//! Owns: the listing and the mountinfo parser. Does not enter namespaces or name them.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Directories whose entries are namespace bind mounts.
const NETNS_DIRS: &[&str] = &[
    "/run/netns",
    "/var/run/netns",
    "/var/run/docker/netns",
    "/run/docker/netns",
];
/// Directories whose entries are ip-netns names.
const IP_NETNS_DIRS: &[&str] = &["/run/netns", "/var/run/netns"];

/// One network namespace found, before it is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub dev: u64,
    pub inode: u64,
    /// Bind mounts of this namespace, ip-netns ones first.
    pub mounts: Vec<PathBuf>,
    /// The ip-netns name, when it has one.
    pub netns_name: Option<String>,
    /// Processes in it, ascending.
    pub pids: Vec<u32>,
    /// The namespace of PID 1 (or ours, when PID 1's cannot be read).
    pub is_host: bool,
}

impl Found {
    /// A path to enter it by: a bind mount, else a process's namespace file.
    pub fn path(&self) -> PathBuf {
        if self.is_host {
            let pid1 = Path::new("/proc/1/ns/net");
            if identity(pid1) == Some((self.dev, self.inode)) {
                return pid1.to_path_buf();
            }
            if identity(&crate::netns::current()) == Some((self.dev, self.inode)) {
                return crate::netns::current();
            }
        }
        if let Some(m) = self.mounts.first() {
            return m.clone();
        }
        match self.pids.first() {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            // Cannot happen (a namespace is found through a mount or a process); reading it
            // fails the identity check and it is skipped.
            None => crate::netns::current(),
        }
    }
}

/// Lists every network namespace, host first, then by inode.
pub fn enumerate() -> Vec<Found> {
    let mut all: BTreeMap<(u64, u64), Found> = BTreeMap::new();
    let mut add_mount = |path: PathBuf| {
        if !is_nsfs(&path) {
            return;
        }
        let Some(id) = identity(&path) else { return };
        let entry = all.entry(id).or_insert_with(|| Found {
            dev: id.0,
            inode: id.1,
            ..Default::default()
        });
        let ip_name = ip_netns_name(&path);
        if entry.mounts.iter().any(|m| same_file(m, &path)) {
            return;
        }
        if ip_name.is_some() {
            if entry.netns_name.is_none() {
                entry.netns_name = ip_name;
            }
            entry.mounts.insert(0, path);
        } else {
            entry.mounts.push(path);
        }
    };
    for dir in NETNS_DIRS {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            add_mount(e.path());
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/self/mountinfo") {
        for p in nsfs_mounts(&text) {
            add_mount(p);
        }
    }
    for pid in pids() {
        let Some(id) = identity(Path::new(&format!("/proc/{pid}/ns/net"))) else {
            continue;
        };
        all.entry(id)
            .or_insert_with(|| Found {
                dev: id.0,
                inode: id.1,
                ..Default::default()
            })
            .pids
            .push(pid);
    }
    let host = identity(Path::new("/proc/1/ns/net")).or_else(|| identity(&crate::netns::current()));
    let mut out: Vec<Found> = all
        .into_values()
        .map(|mut f| {
            f.pids.sort_unstable();
            f.is_host = Some((f.dev, f.inode)) == host;
            f
        })
        .collect();
    out.sort_by_key(|f| (!f.is_host, f.inode));
    out
}

/// (device, inode) of a namespace file, following the /proc magic link.
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `path` is an nsfs file (a mounted namespace, not the empty placeholder `ip netns`
/// leaves behind when a mount is gone).
fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || fs::canonicalize(a)
            .ok()
            .zip(fs::canonicalize(b).ok())
            .is_some_and(|(x, y)| x == y)
}

/// The ip-netns name of a bind mount under /run/netns.
fn ip_netns_name(path: &Path) -> Option<String> {
    let parent = path.parent()?;
    IP_NETNS_DIRS
        .iter()
        .any(|d| parent == Path::new(d))
        .then(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .flatten()
}

/// Numeric entries of /proc.
fn pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Mount points of network-namespace nsfs mounts in a mountinfo text.
///
/// A line reads `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER`;
/// for a namespace bind mount ROOT is `net:[INODE]` and FSTYPE `nsfs`.
pub fn nsfs_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            let root = fields.get(3)?;
            let mount = fields.get(4)?;
            (*fstype == "nsfs" && root.starts_with("net:")).then(|| PathBuf::from(unescape(mount)))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nsfs_net_mounts_only() {
        let text = "\
25 1 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
612 28 0:4 net:[4026532712] /run/netns/busybox rw shared:270 - nsfs nsfs rw
613 28 0:4 net:[4026532800] /run/netns/cni-1234\\040x rw - nsfs nsfs rw
614 28 0:4 mnt:[4026532900] /run/mntns/a rw - nsfs nsfs rw
615 30 0:4 net:[4026532712] /var/run/docker/netns/abc rw shared:1 master:2 - nsfs nsfs rw
";
        let got = nsfs_mounts(text);
        assert_eq!(
            got,
            vec![
                PathBuf::from("/run/netns/busybox"),
                PathBuf::from("/run/netns/cni-1234 x"),
                PathBuf::from("/var/run/docker/netns/abc"),
            ]
        );
    }

    #[test]
    fn unescape_leaves_plain_text_alone() {
        assert_eq!(unescape("/a/b"), "/a/b");
        assert_eq!(unescape("/a\\011b"), "/a\tb");
        assert_eq!(unescape("/a\\01"), "/a\\01");
    }

    #[test]
    fn ip_netns_names_come_from_run_netns_only() {
        assert_eq!(
            ip_netns_name(Path::new("/run/netns/ns01")).as_deref(),
            Some("ns01")
        );
        assert_eq!(ip_netns_name(Path::new("/var/run/docker/netns/ab")), None);
    }

    #[test]
    fn our_own_namespace_is_found_and_is_host_or_not_but_present() {
        let me = identity(&crate::netns::current());
        let all = enumerate();
        if let Some((dev, ino)) = me {
            assert!(all.iter().any(|f| f.dev == dev && f.inode == ino));
        }
    }
}
