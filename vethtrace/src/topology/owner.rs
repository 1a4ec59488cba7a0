//! Who owns a network namespace, best effort and never failing: a representative process (pid,
//! comm), the container it runs in (id from /proc/PID/cgroup, for docker, containerd, cri-o and
//! podman layouts), the docker container name, and the Kubernetes pod name and namespace when
//! the runtime's state files reveal them.
//!
//! Owns: the cgroup-path and runtime-file parsers (pure, unit-tested) and the best-effort file
//! reads around them. Anything unreadable is simply left out.

use std::{fs, path::PathBuf};

use serde_json::Value;

use super::model::Owner;

/// Where runtimes keep per-container state whose JSON names the container or its pod.
fn state_files(runtime: Option<&str>, id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if matches!(runtime, None | Some("docker")) {
        out.push(PathBuf::from(format!(
            "/var/lib/docker/containers/{id}/config.v2.json"
        )));
    }
    if matches!(runtime, None | Some("containerd") | Some("docker")) {
        // containerd keeps one directory per containerd namespace (k8s.io, moby, default, …).
        for base in [
            "/run/containerd/io.containerd.runtime.v2.task",
            "/run/containerd/io.containerd.runtime.v1.linux",
        ] {
            if let Ok(rd) = fs::read_dir(base) {
                for ns in rd.flatten() {
                    out.push(ns.path().join(id).join("config.json"));
                }
            }
        }
    }
    if matches!(runtime, None | Some("cri-o") | Some("podman")) {
        for base in ["/run/containers/storage", "/var/lib/containers/storage"] {
            out.push(PathBuf::from(format!(
                "{base}/overlay-containers/{id}/userdata/config.json"
            )));
        }
    }
    out
}

/// The owner of a namespace from its processes (ascending pids). `None` when it has none.
pub fn owner_of(pids: &[u32]) -> Option<Owner> {
    let &pid = pids.first()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default();
    let mut owner = Owner {
        pid,
        comm,
        ..Default::default()
    };
    // The lowest pid is usually the container's init; look a few further in case it is not
    // (e.g. a host process that joined the namespace).
    let found = pids.iter().take(4).find_map(|p| {
        fs::read_to_string(format!("/proc/{p}/cgroup"))
            .ok()
            .and_then(|text| container_of_cgroup(&text))
    });
    if let Some((runtime, id)) = found {
        for file in state_files(runtime.as_deref(), &id) {
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            let names = names_of_state(&text);
            owner.container_name = owner.container_name.or(names.container_name);
            owner.pod_name = owner.pod_name.or(names.pod_name);
            owner.pod_namespace = owner.pod_namespace.or(names.pod_namespace);
        }
        owner.runtime = runtime;
        owner.container_id = Some(id);
    }
    Some(owner)
}

/// Names found in a runtime's state file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StateNames {
    pub container_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

/// Reads names out of docker's config.v2.json or an OCI config.json with CRI annotations.
pub fn names_of_state(json: &str) -> StateNames {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return StateNames::default();
    };
    let s = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    // docker: {"Name": "/web", "Config": {"Labels": {...}}}; OCI: {"annotations": {...}}.
    let labels = [v.pointer("/Config/Labels"), v.get("annotations")];
    let label = |keys: &[&str]| {
        labels
            .iter()
            .flatten()
            .find_map(|l| keys.iter().find_map(|k| s(l.get(*k))))
    };
    StateNames {
        container_name: s(v.get("Name"))
            .map(|n| n.trim_start_matches('/').to_string())
            .or_else(|| {
                label(&[
                    "io.kubernetes.cri.container-name",
                    "io.kubernetes.container.name",
                ])
            }),
        pod_name: label(&["io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"]),
        pod_namespace: label(&[
            "io.kubernetes.pod.namespace",
            "io.kubernetes.cri.sandbox-namespace",
        ]),
    }
}

/// The container a process runs in, from its /proc/PID/cgroup text: (runtime, 64-hex id).
///
/// Layouts: `/docker/<id>`, `/system.slice/docker-<id>.scope`, `…/cri-containerd-<id>.scope`,
/// `…/crio-<id>.scope`, `…/libpod-<id>.scope`, and the cgroupfs driver's `/kubepods/…/pod<uid>/<id>`.
pub fn container_of_cgroup(text: &str) -> Option<(Option<String>, String)> {
    const PREFIXES: &[(&str, &str)] = &[
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate().rev() {
            let part = part.trim_end_matches(".scope");
            if part.starts_with("crio-conmon-") {
                break;
            }
            for (prefix, runtime) in PREFIXES {
                if let Some(id) = part.strip_prefix(prefix) {
                    if is_container_id(id) {
                        return Some((Some((*runtime).to_string()), id.to_string()));
                    }
                }
            }
            if is_container_id(part) {
                let above = &parts[..i];
                let runtime = if above.iter().any(|p| p.contains("docker")) {
                    Some("docker".to_string())
                } else if above.iter().any(|p| p.contains("libpod")) {
                    Some("podman".to_string())
                } else {
                    None
                };
                return Some((runtime, part.to_string()));
            }
        }
    }
    None
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";

    #[test]
    fn docker_cgroup_v1_and_v2() {
        let v1 = format!("12:pids:/docker/{ID}\n11:cpu:/docker/{ID}\n");
        assert_eq!(
            container_of_cgroup(&v1),
            Some((Some("docker".into()), ID.into()))
        );
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            container_of_cgroup(&v2),
            Some((Some("docker".into()), ID.into()))
        );
    }

    #[test]
    fn kubernetes_layouts() {
        let containerd = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            container_of_cgroup(&containerd),
            Some((Some("containerd".into()), ID.into()))
        );
        let crio = format!("0::/kubepods.slice/kubepods-pod99.slice/crio-{ID}.scope\n");
        assert_eq!(
            container_of_cgroup(&crio),
            Some((Some("cri-o".into()), ID.into()))
        );
        let cgroupfs = format!("0::/kubepods/besteffort/pod1234-5678/{ID}\n");
        assert_eq!(container_of_cgroup(&cgroupfs), Some((None, ID.into())));
        let conmon = format!("0::/machine.slice/crio-conmon-{ID}.scope\n");
        assert_eq!(container_of_cgroup(&conmon), None);
    }

    #[test]
    fn host_processes_have_no_container() {
        assert_eq!(container_of_cgroup("0::/init.scope\n"), None);
        assert_eq!(
            container_of_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(container_of_cgroup(""), None);
    }

    #[test]
    fn docker_config_names() {
        let json = r#"{"ID":"x","Name":"/web","Config":{"Labels":{"io.kubernetes.pod.name":"nginx-1","io.kubernetes.pod.namespace":"default"}}}"#;
        let n = names_of_state(json);
        assert_eq!(n.container_name.as_deref(), Some("web"));
        assert_eq!(n.pod_name.as_deref(), Some("nginx-1"));
        assert_eq!(n.pod_namespace.as_deref(), Some("default"));
    }

    #[test]
    fn oci_config_cri_annotations() {
        let json = r#"{"ociVersion":"1.0","annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-name":"redis-0","io.kubernetes.cri.sandbox-namespace":"db"}}"#;
        let n = names_of_state(json);
        assert_eq!(n.container_name, None);
        assert_eq!(n.pod_name.as_deref(), Some("redis-0"));
        assert_eq!(n.pod_namespace.as_deref(), Some("db"));
        assert_eq!(names_of_state("not json"), StateNames::default());
    }

    #[test]
    fn owner_of_self_names_our_comm() {
        let me = std::process::id();
        let o = owner_of(&[me]).expect("owner");
        assert_eq!(o.pid, me);
        assert!(!o.comm.is_empty());
        assert_eq!(owner_of(&[]), None);
    }
}
