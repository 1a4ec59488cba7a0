//! Entering network namespaces. Ifindexes and interface names are per namespace, so attaching,
//! resolving names and reading netlink all happen on a thread that has entered the target
//! namespace with setns(2). The calling thread never changes namespace; a TCX link created from
//! the worker thread keeps working after that thread exits.

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

/// Where a namespace can be opened from: `/run/netns/NAME`, `/proc/PID/ns/net`, or a bind mount.
pub type NetnsPath = PathBuf;

/// The path of an ip-netns name.
pub fn named(name: &str) -> NetnsPath {
    Path::new("/run/netns").join(name)
}

/// The namespace the current process started in (`/proc/1/ns/net` is the root namespace when
/// we run in it; this is ours, which is what "host" means to the user).
pub fn current() -> NetnsPath {
    PathBuf::from("/proc/self/ns/net")
}

/// Runs `f` on a fresh thread that has entered the namespace at `path`, and returns its result.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let ns =
        File::open(path).with_context(|| format!("open network namespace {}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| {
                format!(
                    "enter network namespace {} (setns needs CAP_SYS_ADMIN)",
                    path.display()
                )
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("thread inside {} panicked", path.display())))
    })
}

/// Runs `f` in each namespace in turn on one worker thread (cheaper than a thread per
/// namespace when there are hundreds). Results come back in the order of `paths`; a namespace
/// that cannot be entered yields its error in place.
pub fn run_in_each<T, F>(paths: &[NetnsPath], mut f: F) -> Vec<Result<T>>
where
    T: Send,
    F: FnMut(&Path) -> Result<T> + Send,
{
    std::thread::scope(|s| {
        s.spawn(move || {
            paths
                .iter()
                .map(|p| {
                    let ns = File::open(p)
                        .with_context(|| format!("open network namespace {}", p.display()))?;
                    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| {
                        format!(
                            "enter network namespace {} (setns needs CAP_SYS_ADMIN)",
                            p.display()
                        )
                    })?;
                    f(p)
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap_or_else(|_| vec![])
    })
}

/// The inode number of a namespace file: the identity `ip netns identify` and `lsns` use.
pub fn inode(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .ino())
}

/// The netns cookie of the calling thread's namespace: what `bpf_get_netns_cookie` returns for
/// packets in it. Read with SO_NETNS_COOKIE on a throwaway socket.
pub fn cookie_of_current() -> Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: plain socket(2); the fd is owned by the File-like wrapper below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SO_NETNS_COOKIE");
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("getsockopt(SO_NETNS_COOKIE) needs Linux 5.14 or newer");
    }
    Ok(cookie)
}

/// Whether an error means a namespace went away while we were using it: its file is gone
/// (ENOENT), its process is gone (ESRCH), or its ip-netns mount was removed, leaving a plain
/// file that setns(2) refuses (EINVAL).
pub fn vanished(e: &anyhow::Error) -> bool {
    use nix::errno::Errno;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|n| matches!(n, libc::ENOENT | libc::ESRCH | libc::EINVAL))
            || c.downcast_ref::<Errno>()
                .is_some_and(|n| matches!(n, Errno::ENOENT | Errno::ESRCH | Errno::EINVAL))
    })
}
