//! Loading the eBPF object with its load-time configuration, and choosing kernel features by
//! trying them: the drop layer is tp_btf skb:kfree_skb when the kernel has BTF and allows it,
//! and the netfilter layer (which chain and verdict dropped a packet) is fentry/fexit
//! nft_do_chain when nf_tables is in the kernel's BTF and both programs load and attach; each
//! is otherwise absent (reported, never fatal).

use anyhow::{Context, Result};
use aya::{
    programs::{BtfTracePoint, FEntry, FExit, ProgramError, SchedClassifier},
    Btf, Ebpf, EbpfLoader,
};
use vethtrace_common::{config_flag, names, Config, FilterInsn, NfOffsets, MAX_FILTER_INSNS};

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
    /// Attach the device tracepoints (net:netif_receive_skb, net:net_dev_queue), which record
    /// the interfaces registered in the `HOOKS` map (`--attach-mode tracepoints`), instead of
    /// loading the tc programs. Loading fails when they cannot be attached.
    pub device_tracepoints: bool,
    /// With `device_tracepoints`, load the tc ingress program too: upper devices are traced,
    /// and netif_receive_skb does not fire for them (see `upper`), so their ingress is hooked
    /// with it. (Hot attach loads it when the first one appears.)
    pub tc_ingress: bool,
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

/// Environment variable choosing the netfilter layer: `off` skips it, `all` records every
/// verdict (accepts too); unset or anything else records `NF_DROP` verdicts.
pub const NETFILTER_ENV: &str = "VETHTRACE_NETFILTER";

/// What the netfilter layer is asked to record (see [`NETFILTER_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetfilterMode {
    /// Not attached.
    Off,
    /// `NF_DROP` verdicts only.
    #[default]
    Drops,
    /// Every verdict of every base chain the packet crosses.
    All,
}

impl NetfilterMode {
    /// The mode a value of [`NETFILTER_ENV`] asks for.
    pub fn from_env_value(v: Option<&str>) -> Self {
        match v.map(str::trim) {
            Some("off" | "0" | "no") => NetfilterMode::Off,
            Some("all") => NetfilterMode::All,
            _ => NetfilterMode::Drops,
        }
    }

    fn from_env() -> Self {
        Self::from_env_value(std::env::var(NETFILTER_ENV).ok().as_deref())
    }
}

/// How netfilter verdicts are observed on this kernel. The layer goes with the drop layer
/// (it says which chain dropped what the drop layer sees freed), so it is requested whenever
/// drops are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetfilterLayer {
    /// fentry/fexit nft_do_chain are attached (every nftables base chain, iptables-nft
    /// included).
    NftDoChain(NetfilterMode),
    /// Not requested (no drops, or `VETHTRACE_NETFILTER=off`).
    Off,
    /// Requested but unavailable, with the reason; tracing goes on without it.
    Unavailable(String),
}

impl std::fmt::Display for NetfilterLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetfilterLayer::NftDoChain(NetfilterMode::All) => {
                f.write_str("netfilter verdicts (all) via fentry/fexit nft_do_chain")
            }
            NetfilterLayer::NftDoChain(_) => {
                f.write_str("netfilter verdicts via fentry/fexit nft_do_chain")
            }
            NetfilterLayer::Off => f.write_str("netfilter layer off"),
            NetfilterLayer::Unavailable(why) => write!(f, "netfilter layer unavailable ({why})"),
        }
    }
}

/// The loaded programs and maps. Dropping it unloads everything still held by it.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub drop_layer: DropLayer,
    pub netfilter_layer: NetfilterLayer,
    /// Names of `enum skb_drop_reason` on this kernel (empty without BTF).
    pub drop_reasons: DropReasons,
    /// How the tc programs read the skb's device: the kfunc, or probe reads.
    pub device_reads: crate::kfunc::Patched,
}

/// Loads the object, writes the configuration, loads both tc programs and, when asked, attaches
/// the drop program (a global tracepoint, not tied to a namespace).
pub fn load(opts: &LoadOptions) -> Result<Loaded> {
    load_with(opts, DeviceReads::Best)
}

/// How the tc programs should read the skb's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceReads {
    /// The kfunc when the kernel has it (what `load` does).
    Best,
    /// Probe reads even when the kfunc exists (tests of the fallback older kernels take).
    ProbeReads,
    /// The kfunc call patched with this BTF id (tests: a wrong id makes the kernel refuse it).
    KfuncId(u32),
}

/// [`load`], choosing how the tc programs read the skb's device. When the kernel refuses the
/// tc programs with the kfunc call in them (it knows the kfunc but cannot call it: no JIT, or
/// an architecture whose JIT cannot call kfuncs), they are loaded again with probe reads.
pub fn load_with(opts: &LoadOptions, device_reads: DeviceReads) -> Result<Loaded> {
    match load_once(opts, device_reads) {
        Err(e) if device_reads != DeviceReads::ProbeReads && tc_rejected(&e) => {
            load_once(opts, DeviceReads::ProbeReads).map_err(|_| e)
        }
        loaded => loaded,
    }
}

/// Whether loading failed because the kernel refused a tc program.
fn tc_rejected(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.to_string()
            .starts_with("the kernel rejected vethtrace_tc")
    })
}

fn load_once(opts: &LoadOptions, device_reads: DeviceReads) -> Result<Loaded> {
    let bytes = ebpf_object::bytes()?;
    if opts.filter.len() > MAX_FILTER_INSNS {
        anyhow::bail!(
            "the filter compiles to {} instructions, more than the {MAX_FILTER_INSNS} the kernel side evaluates: simplify it",
            opts.filter.len()
        );
    }
    let Planned {
        config,
        drop_reasons,
        mut drop_layer,
        mut netfilter_layer,
        kfunc_id,
    } = plan(opts, device_reads)?;
    let (object, device_reads) = crate::kfunc::patch(bytes, kfunc_id)?;

    // EbpfLoader::new parses the kernel's BTF itself (for CO-RE relocations) and keeps that
    // parse until it is dropped: load in a scope so it is freed before the next parse.
    let mut ebpf = {
        let mut loader = EbpfLoader::new();
        loader.override_global(names::CONFIG_GLOBAL, &config, true);
        if let Some(size) = opts.ring_bytes {
            loader.map_max_entries(names::EVENTS_MAP, size);
        }
        loader
            .load(object.bytes())
            .context("load the eBPF object (is this Linux ≥ 5.8 with BPF ring buffers?)")?
    };

    // With the device tracepoints only upper devices' ingress is attached to tc: the tc
    // programs are not loaded otherwise, which saves their verification (the longest part of
    // a load).
    let tc_programs: &[&str] = if opts.device_tracepoints && opts.tc_ingress {
        &[names::TC_INGRESS_PROG]
    } else if opts.device_tracepoints {
        &[]
    } else {
        &[names::TC_INGRESS_PROG, names::TC_EGRESS_PROG]
    };
    for &name in tc_programs {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("the eBPF object has no program {name}: rebuild it"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("the kernel rejected {name}"))?;
    }

    // The tracing programs resolve their attach points in the kernel's BTF: one parse for
    // all of them, dropped once they are attached.
    let wants_btf = drop_layer == DropLayer::KfreeSkb
        || matches!(netfilter_layer, NetfilterLayer::NftDoChain(_))
        || opts.device_tracepoints;
    if wants_btf {
        match Btf::from_sys_fs().context("read the kernel BTF") {
            Ok(btf) => {
                if opts.device_tracepoints {
                    attach_device_tracepoints(&mut ebpf, &btf)?;
                }
                if drop_layer == DropLayer::KfreeSkb {
                    if let Err(e) = attach_kfree_skb(&mut ebpf, &btf) {
                        drop_layer = DropLayer::Unavailable(format!("{e:#}"));
                    }
                }
                if matches!(netfilter_layer, NetfilterLayer::NftDoChain(_)) {
                    if let Err(e) = attach_nft_do_chain(&mut ebpf, &btf) {
                        netfilter_layer = NetfilterLayer::Unavailable(format!("{e:#}"));
                    }
                }
            }
            Err(e) if opts.device_tracepoints => return Err(e),
            Err(e) => {
                let why = format!("{e:#}");
                if drop_layer == DropLayer::KfreeSkb {
                    drop_layer = DropLayer::Unavailable(why.clone());
                }
                if matches!(netfilter_layer, NetfilterLayer::NftDoChain(_)) {
                    netfilter_layer = NetfilterLayer::Unavailable(why);
                }
            }
        }
    }
    drop(object);
    return_freed_heap();
    Ok(Loaded {
        ebpf,
        drop_layer,
        netfilter_layer,
        drop_reasons,
        device_reads,
    })
}

/// Gives heap freed after a one-time parse back to the kernel. The BTF parses in [`load`]
/// (ours and aya's two) are all freed when it returns (heaptrack: under 1 MiB is still live
/// once a 400-hook trace is running), but glibc keeps freed pages mapped, and resident,
/// unless they are at the top of the heap: a trace sat at 43 MiB RSS of which 26 MiB was such
/// heap (with btf-rs, since replaced). `malloc_trim` releases the free pages of every arena.
pub fn return_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns pages of free chunks to the kernel; it does not touch
    // memory in use and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the kernel's BTF said, before anything is loaded.
struct Planned {
    config: Config,
    drop_reasons: DropReasons,
    drop_layer: DropLayer,
    netfilter_layer: NetfilterLayer,
    /// BTF id of the kfunc the tc programs call, if the kernel has it and it is wanted.
    kfunc_id: Option<u32>,
}

/// The load-time configuration, the drop reasons' names and the layers to try. Our reading
/// of the kernel's BTF (the 5.5 MB file and an index of it) lives only for this call.
fn plan(opts: &LoadOptions, device_reads: DeviceReads) -> Result<Planned> {
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
    let drop_layer = if opts.drops {
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
    let nf_mode = if opts.drops {
        NetfilterMode::from_env()
    } else {
        NetfilterMode::Off
    };
    let netfilter_layer = plan_netfilter(nf_mode, || kernel_btf.nf_offsets(), &mut config);
    let kfunc_id = match device_reads {
        DeviceReads::Best => kernel_btf.function_id(vethtrace_common::kfunc::NAME),
        DeviceReads::ProbeReads => None,
        DeviceReads::KfuncId(id) => Some(id),
    };
    Ok(Planned {
        config,
        drop_reasons,
        drop_layer,
        netfilter_layer,
        kfunc_id,
    })
}

fn attach_kfree_skb(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(names::KFREE_SKB_PROG)
        .context("the eBPF object has no drop program: rebuild it")?
        .try_into()?;
    prog.load("kfree_skb", btf)
        .context("load tp_btf/kfree_skb")?;
    prog.attach().context("attach tp_btf/kfree_skb")?;
    Ok(())
}

/// Whether loading failed because the device tracepoints could not be loaded or attached
/// (or the kernel's BTF they need could not be read), as opposed to anything else.
pub fn device_tracepoints_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let m = c.to_string();
        m.ends_with("(device tracepoints)") || m.starts_with("read the kernel BTF")
    })
}

/// The device tracepoints: tp_btf net:netif_receive_skb (ingress) and net:net_dev_queue
/// (egress), attached once for every device of the machine.
fn attach_device_tracepoints(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    for (name, tracepoint) in [
        (names::DEV_INGRESS_PROG, "netif_receive_skb"),
        (names::DEV_EGRESS_PROG, "net_dev_queue"),
    ] {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("the eBPF object has no program {name}: rebuild it"))?
            .try_into()?;
        prog.load(tracepoint, btf)
            .with_context(|| format!("load tp_btf/{tracepoint} (device tracepoints)"))?;
        prog.attach()
            .with_context(|| format!("attach tp_btf/{tracepoint} (device tracepoints)"))?;
    }
    Ok(())
}

/// The netfilter layer `mode` asks for, given the offsets the kernel's BTF yields: the
/// offsets and flags go into `config` when they were found, else the layer is unavailable
/// and `config` is left as it was (the program then never records anything).
fn plan_netfilter(
    mode: NetfilterMode,
    offsets: impl FnOnce() -> Result<NfOffsets>,
    config: &mut Config,
) -> NetfilterLayer {
    if mode == NetfilterMode::Off {
        return NetfilterLayer::Off;
    }
    match offsets() {
        Ok(nf) => {
            config.nf = nf;
            config.flags |= config_flag::NETFILTER;
            if mode == NetfilterMode::All {
                config.flags |= config_flag::NETFILTER_ALL;
            }
            NetfilterLayer::NftDoChain(mode)
        }
        Err(e) => NetfilterLayer::Unavailable(format!("{e:#}")),
    }
}

/// Loads and attaches fexit then fentry nft_do_chain (an fexit alone records nothing).
/// Failing here (no trampolines on this kernel or architecture, a verifier rejection) only
/// costs the netfilter layer: whatever was attached is unloaded again.
fn attach_nft_do_chain(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    let attached = attach_nft_exit(ebpf, btf).and_then(|()| attach_nft_entry(ebpf, btf));
    if attached.is_err() {
        // Unloading also detaches; a program that never loaded has nothing to undo.
        let exit: Option<&mut FExit> = ebpf
            .program_mut(names::NFT_DO_CHAIN_PROG)
            .and_then(|p| p.try_into().ok());
        if let Some(p) = exit {
            let _ = p.unload();
        }
        let entry: Option<&mut FEntry> = ebpf
            .program_mut(names::NFT_DO_CHAIN_ENTRY_PROG)
            .and_then(|p| p.try_into().ok());
        if let Some(p) = entry {
            let _ = p.unload();
        }
    }
    attached
}

fn attach_nft_exit(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    let prog: &mut FExit = ebpf
        .program_mut(names::NFT_DO_CHAIN_PROG)
        .context("the eBPF object has no netfilter program: rebuild it")?
        .try_into()?;
    prog.load("nft_do_chain", btf)
        .map_err(|e| load_error("fexit/nft_do_chain", e))?;
    prog.attach().context("attach fexit/nft_do_chain")?;
    Ok(())
}

fn attach_nft_entry(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    let prog: &mut FEntry = ebpf
        .program_mut(names::NFT_DO_CHAIN_ENTRY_PROG)
        .context("the eBPF object has no netfilter program: rebuild it")?
        .try_into()?;
    prog.load("nft_do_chain", btf)
        .map_err(|e| load_error("fentry/nft_do_chain", e))?;
    prog.attach().context("attach fentry/nft_do_chain")?;
    Ok(())
}

/// Why a trampoline program did not load, in one readable reason. EPERM with an empty
/// verifier log is the kernel refusing fentry/fexit outright, before looking at the program
/// (as some hypervisors' kernels do even for root), not something about this program.
fn load_error(what: &str, e: ProgramError) -> anyhow::Error {
    match &e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } if io_error.raw_os_error() == Some(libc::EPERM)
            && verifier_log.to_string().trim().is_empty() =>
        {
            anyhow::anyhow!(
                "the kernel refuses {what} before verifying it (EPERM): no fentry/fexit here"
            )
        }
        _ => anyhow::Error::new(e).context(format!("load {what}")),
    }
}

/// Adds a traced namespace to the drop and netfilter programs' namespace filter.
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

/// Removes a namespace registered with [`register_netns`] (it is gone). Best effort: an
/// entry left behind only takes a slot.
pub fn unregister_netns(ebpf: &mut Ebpf, cookie: u64) {
    if let Some(map) = ebpf.map_mut(names::NETNS_MAP) {
        if let Ok(mut netns) = aya::maps::HashMap::<_, u64, u8>::try_from(map) {
            let _ = netns.remove(&cookie);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netfilter_mode_from_the_environment_value() {
        assert_eq!(NetfilterMode::from_env_value(None), NetfilterMode::Drops);
        assert_eq!(
            NetfilterMode::from_env_value(Some("")),
            NetfilterMode::Drops
        );
        assert_eq!(
            NetfilterMode::from_env_value(Some("off")),
            NetfilterMode::Off
        );
        assert_eq!(NetfilterMode::from_env_value(Some("0")), NetfilterMode::Off);
        assert_eq!(
            NetfilterMode::from_env_value(Some("all")),
            NetfilterMode::All
        );
        assert_eq!(
            NetfilterMode::from_env_value(Some("drops")),
            NetfilterMode::Drops
        );
    }

    #[test]
    fn a_missing_netfilter_offset_degrades_to_unavailable_and_leaves_the_config_alone() {
        let mut c = Config::default();
        let layer = plan_netfilter(
            NetfilterMode::Drops,
            || Err(anyhow::anyhow!("the kernel's BTF has no nft_do_chain")),
            &mut c,
        );
        assert_eq!(
            layer.to_string(),
            "netfilter layer unavailable (the kernel's BTF has no nft_do_chain)"
        );
        assert_eq!(c, Config::default());
        // Found: offsets and flags are set.
        let nf = NfOffsets {
            valid: 1,
            chain_name: 88,
            ..Default::default()
        };
        let layer = plan_netfilter(NetfilterMode::All, || Ok(nf), &mut c);
        assert_eq!(layer, NetfilterLayer::NftDoChain(NetfilterMode::All));
        assert_eq!(c.nf, nf);
        assert_eq!(c.flags, config_flag::NETFILTER | config_flag::NETFILTER_ALL);
        // Off: the offsets are not even looked up.
        let mut c = Config::default();
        let layer = plan_netfilter(NetfilterMode::Off, || unreachable!(), &mut c);
        assert_eq!(layer, NetfilterLayer::Off);
        assert_eq!(c.flags, 0);
    }

    #[test]
    fn layers_say_how_they_work_or_why_not() {
        assert_eq!(
            NetfilterLayer::NftDoChain(NetfilterMode::Drops).to_string(),
            "netfilter verdicts via fentry/fexit nft_do_chain"
        );
        assert_eq!(
            NetfilterLayer::NftDoChain(NetfilterMode::All).to_string(),
            "netfilter verdicts (all) via fentry/fexit nft_do_chain"
        );
        assert_eq!(
            NetfilterLayer::Unavailable("no fexit".into()).to_string(),
            "netfilter layer unavailable (no fexit)"
        );
        assert_eq!(NetfilterLayer::Off.to_string(), "netfilter layer off");
    }

    #[test]
    fn only_a_refusal_of_the_device_tracepoints_counts_as_one() {
        let refused = anyhow::anyhow!("Permission denied")
            .context("attach tp_btf/net_dev_queue (device tracepoints)");
        assert!(device_tracepoints_refused(&refused));
        let no_btf = anyhow::anyhow!("No such file").context("read the kernel BTF");
        assert!(device_tracepoints_refused(&no_btf));
        let other =
            anyhow::anyhow!("Invalid argument").context("the kernel rejected vethtrace_kfree_skb");
        assert!(!device_tracepoints_refused(&other));
    }
}
