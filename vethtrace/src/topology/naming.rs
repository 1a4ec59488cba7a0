//! Display names of namespaces, in order of preference: `host` for PID 1's, the ip-netns name,
//! the pod name, the container name, `pid:<pid>(<comm>)`, `netns:<inode>`. Names are made
//! unique by appending `@<inode>` to all but the first holder of a name.
//!
//! Owns: that precedence, as pure functions.

use std::collections::HashSet;

use super::model::Owner;

/// The preferred name of one namespace.
pub fn display_name(
    is_host: bool,
    netns_name: Option<&str>,
    owner: Option<&Owner>,
    inode: u64,
) -> String {
    if is_host {
        return "host".to_string();
    }
    if let Some(n) = netns_name {
        return n.to_string();
    }
    if let Some(o) = owner {
        if let Some(p) = &o.pod_name {
            return p.clone();
        }
        if let Some(c) = &o.container_name {
            return c.clone();
        }
        return format!("pid:{}({})", o.pid, o.comm);
    }
    format!("netns:{inode}")
}

/// Makes names unique in place: a repeated name gets `@<inode>` appended.
pub fn dedupe(names: &mut [(String, u64)]) {
    let mut seen = HashSet::new();
    for (name, inode) in names.iter_mut() {
        if !seen.insert(name.clone()) {
            *name = format!("{name}@{inode}");
            seen.insert(name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pod: Option<&str>, container: Option<&str>) -> Owner {
        Owner {
            pid: 42,
            comm: "sleep".into(),
            pod_name: pod.map(Into::into),
            container_name: container.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn precedence() {
        let o = owner(Some("web-0"), Some("app"));
        assert_eq!(display_name(true, Some("x"), Some(&o), 1), "host");
        assert_eq!(display_name(false, Some("ns01"), Some(&o), 1), "ns01");
        assert_eq!(display_name(false, None, Some(&o), 1), "web-0");
        assert_eq!(
            display_name(false, None, Some(&owner(None, Some("app"))), 1),
            "app"
        );
        assert_eq!(
            display_name(false, None, Some(&owner(None, None)), 1),
            "pid:42(sleep)"
        );
        assert_eq!(
            display_name(false, None, None, 4026532000),
            "netns:4026532000"
        );
    }

    #[test]
    fn duplicates_get_the_inode() {
        let mut names = vec![
            ("web".to_string(), 1),
            ("web".to_string(), 2),
            ("db".to_string(), 3),
        ];
        dedupe(&mut names);
        assert_eq!(names[0].0, "web");
        assert_eq!(names[1].0, "web@2");
        assert_eq!(names[2].0, "db");
    }
}
