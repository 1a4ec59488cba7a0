//! The filter language on arbitrary input: what `vethtrace trace FILTER…` and `vethtrace ping`
//! accept from the user.
//!
//! Input: the filter text (lossy UTF-8) up to the first NUL byte; the bytes after it fill the
//! flows the compiled program is evaluated on (fixed sample flows when there are none).
//!
//! Never a panic, and for every input:
//! - a rejected filter points inside the text, at the token it names;
//! - an accepted filter compiles to a program the kernel's evaluator can run (at most
//!   `MAX_FILTER_INSNS` instructions, known opcodes, a stack that never underflows nor grows past
//!   `MAX_FILTER_STACK`, one value left), or fails with the "too large" error;
//! - when it compiles, its rendering parses back to the same expression, and `Filter::new`
//!   agrees with `parse` + `compile`;
//! - the compiled program, run by the user-space copy of the kernel's evaluator, agrees with a
//!   direct evaluation of the syntax tree on every flow, outer and VXLAN-inner.
//!
//! Public entry points used: `vethtrace::filter::{parse, compile, eval, accepts, matches,
//! Filter}`, `vethtrace_common::{op, MAX_FILTER_INSNS, MAX_FILTER_STACK}`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vethtrace::filter::{accepts, compile, eval, matches, parse, Filter};
use vethtrace_common::{op, FilterInsn, Flow, MAX_FILTER_INSNS, MAX_FILTER_STACK};

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    check(&text, &flows(rest));
});

fn check(text: &str, flows: &[(Flow, Flow, bool)]) {
    let expr = match parse(text) {
        Ok(e) => e,
        Err(e) => {
            let chars = text.chars().count();
            assert!(e.pos <= chars, "{text:?}: error at {} of {chars}", e.pos);
            let at: String = text.chars().skip(e.pos).collect();
            assert!(at.starts_with(&e.token), "{text:?}: {e} not at its token");
            assert!(
                !e.expected.is_empty(),
                "{text:?}: {e} says nothing expected"
            );
            assert!(Filter::new(&[text.to_string()]).is_err(), "{text:?}");
            return;
        }
    };
    let insns = match compile(&expr) {
        Ok(insns) => insns,
        Err(e) => {
            assert!(
                e.expected.contains("at most"),
                "{text:?}: compile error that is not about size: {e}"
            );
            assert!(Filter::new(&[text.to_string()]).is_err(), "{text:?}");
            return;
        }
    };
    check_program(text, &insns);
    // Only for filters that compile: a long one's rendering (parenthesized) may be over the
    // parser's token limit when its text was not.
    let rendered = expr.to_string();
    assert_eq!(
        parse(&rendered).as_ref(),
        Ok(&expr),
        "{text:?} renders as {rendered:?}"
    );
    let filter = Filter::new(&[text.to_string()]).expect("parse and compile succeeded");
    assert_eq!(filter.insns, insns, "{text:?}: Filter::new differs");
    for (outer, inner, encap) in flows {
        let want = matches(&expr, outer, *encap);
        assert_eq!(
            eval(&insns, outer, *encap),
            want,
            "{text:?} ({expr}) on {outer:?}, encap {encap}"
        );
        let want_any = want || (*encap && matches(&expr, inner, false));
        assert_eq!(
            accepts(&insns, outer, inner, *encap),
            want_any,
            "{text:?} on {outer:?} / {inner:?}"
        );
        assert_eq!(filter.accepts(outer, inner, *encap), want_any);
    }
}

/// The program is one the kernel's evaluator can run to the end.
fn check_program(text: &str, insns: &[FilterInsn]) {
    assert!(
        insns.len() <= MAX_FILTER_INSNS,
        "{text:?}: {} instructions",
        insns.len()
    );
    let mut depth = 0usize;
    for (i, insn) in insns.iter().enumerate() {
        depth = match insn.op {
            op::TEST => depth + 1,
            op::AND | op::OR if depth >= 2 => depth - 1,
            op::NOT if depth >= 1 => depth,
            _ => panic!("{text:?}: instruction {i} ({insn:?}) at depth {depth}"),
        };
        assert!(depth <= MAX_FILTER_STACK, "{text:?}: stack depth {depth}");
    }
    assert!(
        insns.is_empty() || depth == 1,
        "{text:?}: leaves {depth} values"
    );
}

/// Flows to evaluate on: from the input's bytes, or samples of each kind when there are none.
fn flows(bytes: &[u8]) -> Vec<(Flow, Flow, bool)> {
    if bytes.is_empty() {
        let v4 = |a: [u8; 4]| {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&a);
            x
        };
        let tcp = Flow {
            ethertype: 0x0800,
            src: v4([10, 0, 0, 1]),
            dst: v4([10, 0, 0, 2]),
            l4: 6,
            sport: 40000,
            dport: 80,
            ..Flow::default()
        };
        let mut fd = [0u8; 16];
        fd[0] = 0xfd;
        fd[15] = 1;
        let ping6 = Flow {
            ethertype: 0x86dd,
            src: fd,
            dst: fd,
            l4: 58,
            icmp_type: 128,
            icmp_id: 7,
            ..Flow::default()
        };
        let vxlan = Flow {
            l4: 17,
            dport: 8472,
            ..tcp
        };
        let arp = Flow {
            ethertype: 0x0806,
            arp_op: 1,
            ..tcp
        };
        return vec![
            (tcp, Flow::default(), false),
            (ping6, Flow::default(), false),
            (vxlan, ping6, true),
            (arp, tcp, false),
        ];
    }
    bytes
        .chunks(2 * FLOW_BYTES + 1)
        .map(|c| {
            (
                flow(c),
                flow(c.get(FLOW_BYTES..).unwrap_or(&[])),
                c.len() % 2 == 1,
            )
        })
        .collect()
}

const FLOW_BYTES: usize = 32;

/// A flow whose fields come from `b` (missing bytes are zero). The ethertype and protocol are
/// drawn mostly from the ones the language names, so the tests are not almost always false.
fn flow(b: &[u8]) -> Flow {
    let mut x = [0u8; FLOW_BYTES];
    let n = b.len().min(FLOW_BYTES);
    x[..n].copy_from_slice(&b[..n]);
    let be16 = |i: usize| u16::from_be_bytes([x[i], x[i + 1]]);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&[x[0..8].to_vec(), x[0..8].to_vec()].concat());
    dst.copy_from_slice(&[x[8..16].to_vec(), x[0..8].to_vec()].concat());
    let ethertype = match x[16] % 5 {
        0 => 0x0800,
        1 => 0x86dd,
        2 => 0x0806,
        3 => 0x8847,
        _ => be16(17),
    };
    let l4 = match x[19] % 6 {
        0 => 1,
        1 => 6,
        2 => 17,
        3 => 58,
        4 => 47,
        _ => x[20],
    };
    Flow {
        src,
        dst,
        ethertype,
        l4,
        sport: be16(21),
        dport: be16(23),
        icmp_id: be16(25),
        icmp_type: x[27],
        arp_op: x[28],
        ttl: x[29],
        vlan: be16(30) & 0x0fff,
        ..Flow::default()
    }
}
