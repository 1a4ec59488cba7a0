//! Loading the eBPF object with its load-time configuration, and choosing kernel features by
//! trying them: the drop layer is tp_btf skb:kfree_skb when the kernel has BTF and allows it,
//! and otherwise absent (reported, never fatal).

use anyhow::{Context, Result};
use aya::{
    programs::{BtfTracePoint, SchedClassifier},
    Btf, Ebpf, EbpfLoader,
};
use vethtrace_common::{config_flag, names, Config, FilterInsn, MAX_FILTER_INSNS};

use crate::{btf::DropReasons, ebpf_object};

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Compiled filter (see `filter`); empty matches everything.
    pub filter: Vec<FilterInsn>,
    /// Record drops from skb:kfree_skb.
    pub drops: bool,
    /// Copy the first `SNAP_LEN` bytes of every packet after its record (for `-w`).
    pub snapshots: bool,
    /// Record drops only in namespaces registered with [`register_netns`] (the traced ones).
    pub netns_filter: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size); default 4 MiB.
    pub ring_bytes: Option<u32>,
}

/// How drops are observed on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropLayer {
    /// tp_btf skb:kfree_skb is attached.
    KfreeSkb,
    /// Not requested.
    Off,
    /// Requested but unavailable, with the reason.
    Unavailable(String),
}

impl std::fmt::Display for DropLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropLayer::KfreeSkb => f.write_str("drops via tp_btf skb:kfree_skb"),
            DropLayer::Off => f.write_str("drops off"),
            DropLayer::Unavailable(why) => write!(f, "drops unavailable ({why})"),
        }
    }
}

/// The loaded programs and maps. Dropping it unloads everything still held by it.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub drop_layer: DropLayer,
    /// Names of `enum skb_drop_reason` on this kernel (empty without BTF).
    pub drop_reasons: DropReasons,
}

/// Loads the object, writes the configuration, loads both tc programs and, when asked, attaches
/// the drop program (a global tracepoint, not tied to a namespace).
pub fn load(opts: &LoadOptions) -> Result<Loaded> {
    let bytes = ebpf_object::bytes()?;
    if opts.filter.len() > MAX_FILTER_INSNS {
        anyhow::bail!(
            "the filter compiles to {} instructions, more than the {MAX_FILTER_INSNS} the kernel side evaluates: simplify it",
            opts.filter.len()
        );
    }
    // Offsets are needed by every program: the device's namespace is only reachable through
    // `skb->dev`. Without BTF there is no way to name namespaces, so it is fatal.
    let kernel_btf = crate::btf::KernelBtf::load()?;
    let mut config = Config {
        filter_len: opts.filter.len() as u32,
        offsets: kernel_btf.offsets()?,
        ..Config::default()
    };
    config.filter[..opts.filter.len()].copy_from_slice(&opts.filter);
    if opts.netns_filter {
        config.flags |= config_flag::NETNS_FILTER;
    }
    if opts.snapshots {
        config.flags |= config_flag::SNAP;
    }
    let mut drop_reasons = DropReasons::default();
    let mut drop_layer = if opts.drops {
        match kernel_btf.drop_reasons() {
            Ok(reasons) => {
                config.flags |= config_flag::DROPS;
                drop_reasons = reasons;
                DropLayer::KfreeSkb
            }
            Err(e) => DropLayer::Unavailable(format!("{e:#}")),
        }
    } else {
        DropLayer::Off
    };

    let mut loader = EbpfLoader::new();
    loader.override_global(names::CONFIG_GLOBAL, &config, true);
    if let Some(size) = opts.ring_bytes {
        loader.map_max_entries(names::EVENTS_MAP, size);
    }
    let mut ebpf = loader
        .load(bytes)
        .context("load the eBPF object (is this Linux ≥ 5.8 with BPF ring buffers?)")?;

    for name in [names::TC_INGRESS_PROG, names::TC_EGRESS_PROG] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("the eBPF object has no program {name}: rebuild it"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("the kernel rejected {name}"))?;
    }

    if drop_layer == DropLayer::KfreeSkb {
        if let Err(e) = attach_kfree_skb(&mut ebpf) {
            drop_layer = DropLayer::Unavailable(format!("{e:#}"));
        }
    }
    Ok(Loaded {
        ebpf,
        drop_layer,
        drop_reasons,
    })
}

fn attach_kfree_skb(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs().context("read the kernel BTF")?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(names::KFREE_SKB_PROG)
        .context("the eBPF object has no drop program: rebuild it")?
        .try_into()?;
    prog.load("kfree_skb", &btf)
        .context("load tp_btf/kfree_skb")?;
    prog.attach().context("attach tp_btf/kfree_skb")?;
    Ok(())
}

/// Adds a traced namespace to the drop program's namespace filter.
pub fn register_netns(ebpf: &mut Ebpf, cookie: u64) -> Result<()> {
    let map = ebpf
        .map_mut(names::NETNS_MAP)
        .context("the eBPF object has no NETNS map: rebuild it")?;
    let mut netns: aya::maps::HashMap<_, u64, u8> = aya::maps::HashMap::try_from(map)?;
    netns
        .insert(cookie, 1, 0)
        .context("register a namespace for drops")?;
    Ok(())
}
