//! Two-instruction BPF programs (`r0 = ret; exit`) loaded and attached with raw bpf(2) calls,
//! so tests can put a foreign program on an interface without a compiler or object file.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
pub const PROG_TYPE_SCHED_CLS: u32 = 3;
pub const PROG_TYPE_XDP: u32 = 6;
pub const ATTACH_XDP: u32 = 37;
pub const ATTACH_TCX_INGRESS: u32 = 46;
/// Big enough for the bpf_attr variants used here; the rest stays zero.
const ATTR_SIZE: usize = 128;

fn sys_bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> io::Result<OwnedFd> {
    let fd = sys_bpf_raw(cmd, attr)?;
    // SAFETY: the kernel returned a new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// bpf(2) for commands that return a number rather than a descriptor.
fn sys_bpf_raw(cmd: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed buffer laid out as the bpf_attr variant for `cmd`, and the
    // size passed is its length; the kernel reads no further.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE as u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// BPF_PROG_TEST_RUN of `prog` on `data`, `repeat` times: (return value, mean ns per run as
/// the kernel reports it). For programs loaded here (aya only runs the ones it loaded).
pub fn test_run(prog: &OwnedFd, data: &[u8], repeat: u32) -> io::Result<(u32, u32)> {
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut attr = [0u8; ATTR_SIZE];
    // bpf_attr.test: prog_fd, retval, data_size_in, data_size_out, data_in, data_out, repeat,
    // duration. `data` outlives the call; data_out stays null.
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 8, &(data.len() as u32).to_ne_bytes());
    put(&mut attr, 16, &(data.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 32, &repeat.to_ne_bytes());
    sys_bpf_raw(BPF_PROG_TEST_RUN, &mut attr)?;
    let word = |at: usize| u32::from_ne_bytes([attr[at], attr[at + 1], attr[at + 2], attr[at + 3]]);
    Ok((word(4), word(36)))
}

fn put(attr: &mut [u8; ATTR_SIZE], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Loads `r0 = ret; exit` as a `prog_type` program named `name` (at most 15 bytes).
pub fn load(prog_type: u32, expected_attach: u32, ret: i32, name: &str) -> io::Result<OwnedFd> {
    let insns = [insn(0xb7, 0, 0, 0, ret), insn(0x95, 0, 0, 0, 0)];
    load_insns(prog_type, expected_attach, &insns, name)
}

/// One instruction: opcode, dst and src registers, offset, immediate.
pub fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = op;
    i[1] = (src << 4) | (dst & 0x0f);
    i[2..4].copy_from_slice(&off.to_ne_bytes());
    i[4..8].copy_from_slice(&imm.to_ne_bytes());
    i
}

/// Loads a program made of `insns`.
pub fn load_insns(
    prog_type: u32,
    expected_attach: u32,
    insns: &[[u8; 8]],
    name: &str,
) -> io::Result<OwnedFd> {
    let code: Vec<u8> = insns.concat();
    let license = b"GPL\0";
    let mut attr = [0u8; ATTR_SIZE];
    put(&mut attr, 0, &prog_type.to_ne_bytes());
    put(&mut attr, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(code.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, &name.as_bytes()[..name.len().min(15)]);
    put(&mut attr, 68, &expected_attach.to_ne_bytes());
    sys_bpf(BPF_PROG_LOAD, &mut attr)
}

/// A tc program that drops IPv4 ICMP (TC_ACT_SHOT) and passes everything else on
/// (TC_ACT_UNSPEC): the "foreign" program of the coexistence tests, standing in for a CNI's.
pub fn drop_ipv4_icmp(name: &str) -> io::Result<OwnedFd> {
    const DATA: i16 = 76; // offsetof(struct __sk_buff, data)
    const DATA_END: i16 = 80;
    let insns = [
        insn(0x61, 2, 1, DATA, 0),     // r2 = skb->data
        insn(0x61, 3, 1, DATA_END, 0), // r3 = skb->data_end
        insn(0xbf, 4, 2, 0, 0),        // r4 = r2
        insn(0x07, 4, 0, 0, 24),       // r4 += 24 (Ethernet + IPv4 up to the protocol byte)
        insn(0xb7, 0, 0, 0, -1),       // r0 = TC_ACT_UNSPEC
        insn(0x2d, 4, 3, 5, 0),        // if r4 > r3 goto exit
        insn(0x69, 5, 2, 12, 0),       // r5 = *(u16 *)(r2 + 12): ethertype
        insn(0x55, 5, 0, 3, 0x0008),   // if r5 != htons(0x0800) goto exit
        insn(0x71, 5, 2, 23, 0),       // r5 = *(u8 *)(r2 + 23): IPv4 protocol
        insn(0x55, 5, 0, 1, 1),        // if r5 != IPPROTO_ICMP goto exit
        insn(0xb7, 0, 0, 0, 2),        // r0 = TC_ACT_SHOT
        insn(0x95, 0, 0, 0, 0),        // exit
    ];
    load_insns(PROG_TYPE_SCHED_CLS, 0, &insns, name)
}

/// A tc program that drops IPv4 UDP to destination port `port` (TC_ACT_SHOT) and passes
/// everything else on (TC_ACT_UNSPEC): a CNI's network policy closing one port, in the
/// coexistence tests. Only option-less IPv4 headers (IHL 5, all the tests send) are looked into;
/// anything else passes.
pub fn drop_udp_dport(name: &str, port: u16) -> io::Result<OwnedFd> {
    const DATA: i16 = 76; // offsetof(struct __sk_buff, data)
    const DATA_END: i16 = 80;
    // What a native-endian load of these big-endian header fields reads.
    let be16 = |v: u16| i32::from(u16::from_ne_bytes(v.to_be_bytes()));
    let insns = [
        insn(0x61, 2, 1, DATA, 0),         // r2 = skb->data
        insn(0x61, 3, 1, DATA_END, 0),     // r3 = skb->data_end
        insn(0xb7, 0, 0, 0, -1),           // r0 = TC_ACT_UNSPEC
        insn(0xbf, 4, 2, 0, 0),            // r4 = r2
        insn(0x07, 4, 0, 0, 38),           // r4 += 38 (Ethernet + IPv4 + UDP up to dport's end)
        insn(0x2d, 4, 3, 9, 0),            // if r4 > r3 goto exit
        insn(0x69, 5, 2, 12, 0),           // r5 = *(u16 *)(r2 + 12): ethertype
        insn(0x55, 5, 0, 7, be16(0x0800)), // if r5 != IPv4 goto exit
        insn(0x71, 5, 2, 14, 0),           // r5 = *(u8 *)(r2 + 14): version and IHL
        insn(0x55, 5, 0, 5, 0x45),         // if r5 != (4, 5) goto exit
        insn(0x71, 5, 2, 23, 0),           // r5 = *(u8 *)(r2 + 23): IPv4 protocol
        insn(0x55, 5, 0, 3, 17),           // if r5 != IPPROTO_UDP goto exit
        insn(0x69, 5, 2, 36, 0),           // r5 = *(u16 *)(r2 + 36): UDP destination port
        insn(0x55, 5, 0, 1, be16(port)),   // if r5 != port goto exit
        insn(0xb7, 0, 0, 0, 2),            // r0 = TC_ACT_SHOT
        insn(0x95, 0, 0, 0, 0),            // exit
    ];
    load_insns(PROG_TYPE_SCHED_CLS, 0, &insns, name)
}

/// Attaches `prog` to `ifindex` (in the calling thread's namespace) with a BPF link; it
/// stays attached while the returned descriptor is open.
pub fn link(prog: &OwnedFd, ifindex: u32, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_SIZE];
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &ifindex.to_ne_bytes());
    put(&mut attr, 8, &attach_type.to_ne_bytes());
    sys_bpf(BPF_LINK_CREATE, &mut attr)
}
