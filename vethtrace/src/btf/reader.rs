//! A reader of the BTF format (the kernel's Documentation/bpf/btf.rst) that keeps only what
//! vethtrace asks of the kernel's BTF: types by name among structs, unions, enums and functions,
//! struct members (through anonymous members, telling bitfields apart), enumerators, and
//! modifier/typedef chains.
//!
//! Why hand-written rather than a crate (STYLE: reach for a crate first): btf-rs 2, which this
//! replaced, parses and indexes all ~150k types of /sys/kernel/btf/vmlinux up front. Measured
//! here (kernel 6.18, release build, 2 busy CPUs, median of 5 runs), `KernelBtf::load` +
//! `offsets` + `drop_reasons` + one `function_id` took 422 ms with btf-rs and a 41 MiB peak RSS
//! for the whole process; with this reader 22 ms (about 10 of them reading the 5.5 MB file, which
//! sysfs hands out a page per read) and 9 MiB, for the same ~15 questions. aya's `Btf` parses the
//! file in ~20 ms too, but keeps type lookup by id, members and names crate-private (only ids
//! by name are public), so it cannot answer member offsets or enumerator names.
//!
//! What is kept: the file's bytes, one record offset per type id and a sorted (name hash, id)
//! list for the named kinds asked about; names are read from the buffer, never copied. Every
//! read is bounds-checked: malformed BTF is a [`BtfError`], never a panic.

use std::{fmt, hash::BuildHasher, ops::Range};

use foldhash::fast::FixedState;

const MAGIC: u16 = 0xeb9f;
const VERSION: u8 = 1;
/// `struct btf_header` up to `str_len`; a longer `hdr_len` is allowed (newer fields we ignore).
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_LEN: usize = 12;
/// Longer than any chain of modifiers or nesting of anonymous members in a real kernel: deeper
/// means a loop in malformed BTF.
const MAX_CHAIN: usize = 32;

/// `BTF_KIND_*` values (include/uapi/linux/btf.h).
pub mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// Why a BTF blob could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfError {
    /// Shorter than its header, a wrong magic or version, or a section outside the data.
    Header(&'static str),
    /// Type `id`'s record runs past the end of the type section.
    Truncated { id: u32 },
    /// Type `id` has a kind this reader does not know.
    UnknownKind { id: u32, kind: u32 },
    /// A name offset outside the string section, or a name without its NUL or not UTF-8.
    Name { off: u32 },
    /// A reference to a type id the BTF does not have (or to void where a type is needed).
    NoType { id: u32 },
    /// A chain of modifiers or anonymous members from type `id` longer than any real one.
    Loop { id: u32 },
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(what) => write!(f, "bad BTF header: {what}"),
            Self::Truncated { id } => {
                write!(f, "BTF type {id} runs past the end of the type section")
            }
            Self::UnknownKind { id, kind } => write!(f, "BTF type {id} has unknown kind {kind}"),
            Self::Name { off } => write!(
                f,
                "BTF name at string offset {off} is outside the string section, unterminated or not UTF-8"
            ),
            Self::NoType { id } => write!(f, "BTF refers to type {id}, which it does not have"),
            Self::Loop { id } => write!(f, "BTF type chain from type {id} loops"),
        }
    }
}

impl std::error::Error for BtfError {}

/// One type record's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Type {
    pub id: u32,
    pub kind: u32,
    pub name_off: u32,
    /// Members, enumerators or parameters by kind (a FUNC's linkage).
    pub vlen: u16,
    pub kind_flag: bool,
    /// `size` or `type` by kind.
    pub size_or_type: u32,
    /// Where the record starts in the data.
    at: usize,
}

/// A struct or union member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    /// From the start of the struct; for a bitfield, its first bit.
    pub bit_offset: u32,
    /// The bitfield's width when the struct has kind_flag set, else 0 (a plain member, or a
    /// bitfield told only by its offset or its int type: see [`Btf::member_at`]).
    pub bitfield_size: u32,
}

/// Where a member found by name lies in the struct it was looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberAt {
    /// From the start of that struct (through any anonymous members); a bitfield's first bit.
    pub bit_offset: u32,
    /// A bitfield shares its bytes with its neighbours: there is no byte offset at which a
    /// program could read it, and only its first bit is known here.
    pub bitfield: bool,
}

/// An ENUM or ENUM64 value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enumerator {
    pub name_off: u32,
    /// The bits as stored: an ENUM's 32 zero-extended (a negative one is not sign-extended).
    pub value: u64,
}

/// A BTF blob, indexed for lookups by name and id.
pub struct Btf {
    data: Vec<u8>,
    big_endian: bool,
    strings: Range<usize>,
    /// Where each type's record starts in `data`, by id; entry 0 is void's and unused.
    offsets: Vec<u32>,
    /// (hash of the name, id) for every named struct, union, enum, enum64 and func, sorted.
    names: Vec<(u64, u32)>,
}

impl Btf {
    /// Checks the header and walks the type section once.
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        if u32::try_from(data.len()).is_err() {
            return Err(BtfError::Header("larger than 4 GiB"));
        }
        let big_endian = match data.get(0..2) {
            Some(&[a, b]) if u16::from_le_bytes([a, b]) == MAGIC => false,
            Some(&[a, b]) if u16::from_be_bytes([a, b]) == MAGIC => true,
            Some(_) => return Err(BtfError::Header("wrong magic")),
            None => return Err(BtfError::Header("shorter than its header")),
        };
        let mut btf = Self {
            data,
            big_endian,
            strings: 0..0,
            offsets: Vec::new(),
            names: Vec::new(),
        };
        let short = BtfError::Header("shorter than its header");
        if btf.data.get(2) != Some(&VERSION) {
            return Err(BtfError::Header("unknown version"));
        }
        let hdr_len = btf.u32_at(4).ok_or(short.clone())? as usize;
        if hdr_len < HEADER_LEN || hdr_len > btf.data.len() {
            return Err(short);
        }
        let types = btf.section(hdr_len, 8)?;
        btf.strings = btf.section(hdr_len, 16)?;
        btf.index(types)?;
        Ok(btf)
    }

    /// The section whose offset (from the end of the header) and length are at `field`.
    fn section(&self, hdr_len: usize, field: usize) -> Result<Range<usize>, BtfError> {
        let short = BtfError::Header("shorter than its header");
        let off = self.u32_at(field).ok_or(short.clone())? as usize;
        let len = self.u32_at(field + 4).ok_or(short)? as usize;
        let start = hdr_len.checked_add(off);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.data.len() => Ok(start..end),
            _ => Err(BtfError::Header("a section lies outside the data")),
        }
    }

    /// Fills `offsets` and `names` in one walk of the type section.
    fn index(&mut self, types: Range<usize>) -> Result<(), BtfError> {
        // vmlinux averages ~25 bytes a record; a guess only saves regrowth.
        let mut offsets = Vec::with_capacity(types.len() / 20 + 1);
        offsets.push(0);
        let mut names = Vec::new();
        let mut pos = types.start;
        while pos < types.end {
            // Fits: each record takes at least 12 of the data's at most 4 GiB.
            let id = offsets.len() as u32;
            let truncated = BtfError::Truncated { id };
            let fixed_end = pos + TYPE_LEN;
            if fixed_end > types.end {
                return Err(truncated);
            }
            let name_off = self.u32_at(pos).ok_or(truncated.clone())?;
            let info = self.u32_at(pos + 4).ok_or(truncated.clone())?;
            let (kind, vlen, _) = split_info(info);
            let vlen = usize::from(vlen);
            let extra = match kind {
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => 0,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
                kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
                _ => return Err(BtfError::UnknownKind { id, kind }),
            };
            let end = fixed_end + extra;
            if end > types.end {
                return Err(truncated);
            }
            // Fits: the data's length was checked against u32 in `parse`.
            offsets.push(pos as u32);
            if name_off != 0
                && matches!(
                    kind,
                    kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::FUNC
                )
            {
                names.push((hash(self.name_bytes(name_off)?), id));
            }
            pos = end;
        }
        names.sort_unstable();
        self.offsets = offsets;
        self.names = names;
        Ok(())
    }

    fn u32_at(&self, pos: usize) -> Option<u32> {
        let bytes: [u8; 4] = self.data.get(pos..pos.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    fn name_bytes(&self, off: u32) -> Result<&[u8], BtfError> {
        if off == 0 {
            return Ok(b"");
        }
        let bad = BtfError::Name { off };
        let start = self
            .strings
            .start
            .checked_add(off as usize)
            .ok_or(bad.clone())?;
        let rest = self.data.get(start..self.strings.end).ok_or(bad.clone())?;
        let len = rest.iter().position(|&b| b == 0).ok_or(bad)?;
        Ok(&rest[..len])
    }

    /// The name at string offset `off` (offset 0 is the empty name of anonymous types).
    pub fn name(&self, off: u32) -> Result<&str, BtfError> {
        std::str::from_utf8(self.name_bytes(off)?).map_err(|_| BtfError::Name { off })
    }

    /// Type `id` (0, void, is not a type record).
    pub fn type_by_id(&self, id: u32) -> Result<Type, BtfError> {
        let at = match self.offsets.get(id as usize) {
            Some(&at) if id != 0 => at as usize,
            _ => return Err(BtfError::NoType { id }),
        };
        let truncated = BtfError::Truncated { id };
        let name_off = self.u32_at(at).ok_or(truncated.clone())?;
        let info = self.u32_at(at + 4).ok_or(truncated.clone())?;
        let size_or_type = self.u32_at(at + 8).ok_or(truncated)?;
        let (kind, vlen, kind_flag) = split_info(info);
        Ok(Type {
            id,
            kind,
            name_off,
            vlen,
            kind_flag,
            size_or_type,
            at,
        })
    }

    /// The structs, unions, enums, enum64s and funcs named `name`, by ascending id.
    pub fn types_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Type> + 'a {
        let h = hash(name.as_bytes());
        let first = self.names.partition_point(|&(nh, _)| nh < h);
        self.names[first..]
            .iter()
            .take_while(move |&&(nh, _)| nh == h)
            // Every indexed id and name was read once in `parse`: these lookups do not fail.
            .filter_map(|&(_, id)| self.type_by_id(id).ok())
            .filter(move |t| self.name_bytes(t.name_off).ok() == Some(name.as_bytes()))
    }

    /// A struct's or union's members (none for other kinds).
    pub fn members<'a>(&'a self, t: &Type) -> impl Iterator<Item = Result<Member, BtfError>> + 'a {
        let count = match t.kind {
            kind::STRUCT | kind::UNION => t.vlen,
            _ => 0,
        };
        let (id, at, bitfields) = (t.id, t.at, t.kind_flag);
        (0..usize::from(count)).map(move |i| {
            let pos = at + TYPE_LEN + 12 * i;
            let read = |k: usize| self.u32_at(pos + 4 * k).ok_or(BtfError::Truncated { id });
            let offset = read(2)?;
            // With kind_flag set, the top 8 bits are the bitfield's size.
            let (bit_offset, bitfield_size) = if bitfields {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            Ok(Member {
                name_off: read(0)?,
                type_id: read(1)?,
                bit_offset,
                bitfield_size,
            })
        })
    }

    /// An ENUM's or ENUM64's values (none for other kinds).
    pub fn enumerators<'a>(
        &'a self,
        t: &Type,
    ) -> impl Iterator<Item = Result<Enumerator, BtfError>> + 'a {
        let (count, len) = match t.kind {
            kind::ENUM => (t.vlen, 8),
            kind::ENUM64 => (t.vlen, 12),
            _ => (0, 0),
        };
        let (id, at) = (t.id, t.at);
        (0..usize::from(count)).map(move |i| {
            let pos = at + TYPE_LEN + len * i;
            let read = |k: usize| self.u32_at(pos + 4 * k).ok_or(BtfError::Truncated { id });
            let low = u64::from(read(1)?);
            let high = if len == 12 { u64::from(read(2)?) } else { 0 };
            Ok(Enumerator {
                name_off: read(0)?,
                value: high << 32 | low,
            })
        })
    }

    /// The type `id` stands for once typedefs and modifiers (const, volatile, restrict, type
    /// tags) are followed.
    pub fn resolve(&self, id: u32) -> Result<Type, BtfError> {
        let mut t = self.type_by_id(id)?;
        for _ in 0..MAX_CHAIN {
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    t = self.type_by_id(t.size_or_type)?;
                }
                _ => return Ok(t),
            }
        }
        Err(BtfError::Loop { id })
    }

    /// Where the member `field` lies in the struct or union `t`, looking through anonymous
    /// struct and union members, and whether it is a bitfield; `None` when it has no such member.
    pub fn member_at(&self, t: &Type, field: &str) -> Result<Option<MemberAt>, BtfError> {
        self.find_member(t, field, 0, 0)
    }

    fn find_member(
        &self,
        t: &Type,
        field: &str,
        base: u32,
        depth: usize,
    ) -> Result<Option<MemberAt>, BtfError> {
        if depth > MAX_CHAIN {
            return Err(BtfError::Loop { id: t.id });
        }
        for m in self.members(t) {
            let m = m?;
            let name = self.name_bytes(m.name_off)?;
            let offset = base.saturating_add(m.bit_offset);
            if name == field.as_bytes() {
                return Ok(Some(MemberAt {
                    bit_offset: offset,
                    bitfield: self.is_bitfield(&m, offset)?,
                }));
            }
            if name.is_empty() {
                let inner = self.resolve(m.type_id)?;
                if matches!(inner.kind, kind::STRUCT | kind::UNION) {
                    if let Some(found) = self.find_member(&inner, field, offset, depth + 1)? {
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Whether member `m`, at `bit_offset` from the outermost struct, is a bitfield. The BTF
    /// spec says it in one of three ways: a width in the offset word (struct kind_flag set, what
    /// pahole writes today); without kind_flag, an offset that is not byte-aligned, or an int
    /// type narrower than its size or shifted by BTF_INT_OFFSET (the older encoding, where
    /// `u8 x:3` at a byte boundary is told only by its type). Any of them is enough, whatever
    /// the flag: under kind_flag a narrow int type is malformed, and refusing is the safe answer.
    fn is_bitfield(&self, m: &Member, bit_offset: u32) -> Result<bool, BtfError> {
        if m.bitfield_size != 0 || !bit_offset.is_multiple_of(8) {
            return Ok(true);
        }
        let t = self.resolve(m.type_id)?;
        if t.kind != kind::INT {
            return Ok(false);
        }
        // The int's encoding word: BTF_INT_OFFSET in bits 16-23, BTF_INT_BITS in bits 0-7.
        let encoding = self
            .u32_at(t.at + TYPE_LEN)
            .ok_or(BtfError::Truncated { id: t.id })?;
        let (shift, bits) = ((encoding >> 16) & 0xff, encoding & 0xff);
        Ok(shift != 0 || u64::from(bits) < u64::from(t.size_or_type) * 8)
    }
}

/// (kind, vlen, kind_flag) from a type's `info`: bits 0-15, 24-28 and 31.
fn split_info(info: u32) -> (u32, u16, bool) {
    ((info >> 24) & 0x1f, (info & 0xffff) as u16, info >> 31 == 1)
}

fn hash(name: &[u8]) -> u64 {
    FixedState::default().hash_one(name)
}

/// A builder of BTF blobs for the tests here and in the parent module.
#[cfg(test)]
pub(super) mod blob {
    use super::{HEADER_LEN, MAGIC, VERSION};

    /// Builds a BTF blob type by type, as pahole would lay it out.
    pub struct Blob {
        /// The type section as u32 words (every record is a whole number of them).
        pub words: Vec<u32>,
        pub strings: Vec<u8>,
        /// Where each record starts, in words, by id - 1.
        pub starts: Vec<usize>,
    }

    impl Blob {
        pub fn new() -> Self {
            Self {
                words: Vec::new(),
                strings: vec![0],
                starts: Vec::new(),
            }
        }

        pub fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        /// Appends a record and returns its id.
        pub fn ty(
            &mut self,
            name: &str,
            kind: u32,
            flag: bool,
            vlen: u32,
            st: u32,
            extra: &[u32],
        ) -> u32 {
            let name_off = self.s(name);
            self.starts.push(self.words.len());
            let info = u32::from(flag) << 31 | kind << 24 | vlen;
            self.words.extend([name_off, info, st]);
            self.words.extend_from_slice(extra);
            self.starts.len() as u32
        }

        /// A struct or union of (name, type, offset word) members.
        pub fn composite(
            &mut self,
            name: &str,
            kind: u32,
            flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for &(n, t, off) in members {
                extra.extend([self.s(n), t, off]);
            }
            self.ty(name, kind, flag, members.len() as u32, 8, &extra)
        }

        pub fn bytes_with(&self, big_endian: bool, type_len: Option<u32>) -> Vec<u8> {
            let word = |w: u32| {
                if big_endian {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                }
            };
            let types: Vec<u8> = self.words.iter().flat_map(|&w| word(w)).collect();
            let mut out = Vec::new();
            out.extend_from_slice(&if big_endian {
                MAGIC.to_be_bytes()
            } else {
                MAGIC.to_le_bytes()
            });
            out.extend([VERSION, 0]);
            let header = [
                HEADER_LEN as u32,
                0,
                type_len.unwrap_or(types.len() as u32),
                types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in header {
                out.extend(word(w));
            }
            out.extend(types);
            out.extend(&self.strings);
            out
        }

        pub fn bytes(&self) -> Vec<u8> {
            self.bytes_with(false, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{blob::Blob, *};

    /// A blob with every kind and the shapes the queries look for; returns it with the ids of
    /// (struct outer, func f, func last).
    fn sample() -> (Blob, [u32; 3]) {
        let mut b = Blob::new();
        let int = b.ty("int", kind::INT, false, 0, 4, &[32]);
        let inner = b.composite("", kind::STRUCT, false, &[("pad", int, 0), ("y", int, 32)]);
        let union = b.composite("", kind::UNION, false, &[("x", int, 0), ("", inner, 0)]);
        // volatile → type tag → const → typedef → the union.
        let td = b.ty("u_t", kind::TYPEDEF, false, 0, union, &[]);
        let cst = b.ty("", kind::CONST, false, 0, td, &[]);
        let tag = b.ty("tag", kind::TYPE_TAG, false, 0, cst, &[]);
        let vol = b.ty("", kind::VOLATILE, false, 0, tag, &[]);
        let outer = b.composite(
            "outer",
            kind::STRUCT,
            false,
            &[("a", int, 0), ("", vol, 64)],
        );
        // Bitfields: `lo:3` at bit 0, `hi:5` at bit 75.
        b.composite(
            "bits",
            kind::STRUCT,
            true,
            &[("lo", int, 3 << 24), ("hi", int, 5 << 24 | 75)],
        );
        // The same offset word without kind_flag is a plain bit offset.
        b.composite("plain", kind::STRUCT, false, &[("hi", int, 5 << 24 | 75)]);
        let (a, bb, neg) = (b.s("A"), b.s("B"), b.s("NEG"));
        b.ty("e", kind::ENUM, true, 3, 4, &[a, 0, bb, 7, neg, u32::MAX]);
        let (big, small) = (b.s("BIG"), b.s("SMALL"));
        b.ty("e64", kind::ENUM64, false, 2, 8, &[big, 1, 1, small, 5, 0]);
        let p = b.s("p");
        let proto = b.ty("", kind::FUNC_PROTO, false, 1, int, &[p, int]);
        let f = b.ty("f", kind::FUNC, false, 1, proto, &[]);
        // A func and a struct sharing a name.
        b.composite("dup", kind::STRUCT, false, &[("d", int, 16)]);
        let dup_fn = b.ty("dup", kind::FUNC, false, 1, proto, &[]);
        // The remaining kinds, so that every record length is walked.
        let ptr = b.ty("", kind::PTR, false, 0, int, &[]);
        b.ty("", kind::ARRAY, false, 0, 0, &[int, int, 4]);
        b.ty("fwd", kind::FWD, false, 0, 0, &[]);
        b.ty("", kind::RESTRICT, false, 0, ptr, &[]);
        let var = b.ty("v", kind::VAR, false, 0, int, &[1]);
        b.ty(".data", kind::DATASEC, false, 1, 4, &[var, 0, 4]);
        b.ty("double", kind::FLOAT, false, 0, 8, &[]);
        b.ty("tagged", kind::DECL_TAG, false, 0, f, &[u32::MAX]);
        let last = b.ty("last", kind::FUNC, false, 1, proto, &[]);
        assert_eq!(dup_fn, f + 2);
        (b, [outer, f, last])
    }

    fn struct_named(btf: &Btf, name: &str) -> Type {
        btf.types_named(name)
            .find(|t| t.kind == kind::STRUCT)
            .unwrap_or_else(|| panic!("struct {name}"))
    }

    fn offset(btf: &Btf, strukt: &str, field: &str) -> Option<u32> {
        at(btf, strukt, field).map(|m| m.bit_offset)
    }

    fn at(btf: &Btf, strukt: &str, field: &str) -> Option<MemberAt> {
        btf.member_at(&struct_named(btf, strukt), field)
            .expect("well-formed")
    }

    /// A member as found: its bit offset and whether it is a bitfield.
    fn found(bit_offset: u32, bitfield: bool) -> Option<MemberAt> {
        Some(MemberAt {
            bit_offset,
            bitfield,
        })
    }

    fn func_id(btf: &Btf, name: &str) -> Option<u32> {
        btf.types_named(name)
            .find(|t| t.kind == kind::FUNC)
            .map(|t| t.id)
    }

    fn values(btf: &Btf, name: &str) -> Vec<(String, u64)> {
        let t = btf
            .types_named(name)
            .find(|t| matches!(t.kind, kind::ENUM | kind::ENUM64))
            .expect("enum");
        btf.enumerators(&t)
            .map(|e| {
                let e = e.expect("well-formed");
                (btf.name(e.name_off).expect("name").to_string(), e.value)
            })
            .collect()
    }

    fn check_sample(btf: &Btf, [outer, f, last]: [u32; 3]) {
        assert_eq!(struct_named(btf, "outer").id, outer);
        assert_eq!(at(btf, "outer", "a"), found(0, false));
        // x in the anonymous union at bit 64; y in its anonymous struct, 32 bits further.
        assert_eq!(at(btf, "outer", "x"), found(64, false));
        assert_eq!(at(btf, "outer", "y"), found(96, false));
        assert_eq!(at(btf, "outer", "pad"), found(64, false));
        assert_eq!(offset(btf, "outer", "nothere"), None);
        assert_eq!(at(btf, "bits", "lo"), found(0, true));
        assert_eq!(at(btf, "bits", "hi"), found(75, true));
        // Not byte-aligned, so a bitfield even without kind_flag.
        assert_eq!(at(btf, "plain", "hi"), found(5 << 24 | 75, true));
        assert_eq!(
            values(btf, "e"),
            [
                ("A".into(), 0),
                ("B".into(), 7),
                ("NEG".into(), u64::from(u32::MAX))
            ]
        );
        assert_eq!(
            values(btf, "e64"),
            [("BIG".into(), 1 << 32 | 1), ("SMALL".into(), 5)]
        );
        assert_eq!(func_id(btf, "f"), Some(f));
        assert_eq!(func_id(btf, "last"), Some(last));
        assert_eq!(func_id(btf, "dup"), Some(f + 2));
        assert_eq!(at(btf, "dup", "d"), found(16, false));
        assert_eq!(func_id(btf, "outer"), None);
        assert_eq!(func_id(btf, "nothere"), None);
        // Only the kinds asked about are indexed by name.
        assert_eq!(btf.types_named("int").count(), 0);
        assert_eq!(btf.types_named("u_t").count(), 0);
        // The typedef chain resolves to the union.
        let vol = btf.type_by_id(outer - 1).expect("volatile");
        assert_eq!(vol.kind, kind::VOLATILE);
        assert_eq!(btf.resolve(vol.id).expect("chain").kind, kind::UNION);
        assert_eq!(btf.type_by_id(0), Err(BtfError::NoType { id: 0 }));
        assert_eq!(
            btf.type_by_id(last + 1),
            Err(BtfError::NoType { id: last + 1 })
        );
    }

    #[test]
    fn answers_on_a_hand_built_blob() {
        let (b, ids) = sample();
        let btf = Btf::parse(b.bytes()).expect("parses");
        check_sample(&btf, ids);
    }

    /// The three ways BTF says a member is a bitfield, each next to plain members that are still
    /// answered as such.
    #[test]
    fn bitfields_are_told_apart() {
        let mut b = Blob::new();
        let int = b.ty("int", kind::INT, false, 0, 4, &[32]);
        let u8t = b.ty("u8", kind::INT, false, 0, 1, &[8]);
        // The older encoding's bitfield types: `int x:3`, and 6 bits starting 2 bits in.
        let int3 = b.ty("int", kind::INT, false, 0, 4, &[3]);
        let shifted = b.ty("u8", kind::INT, false, 0, 1, &[2 << 16 | 6]);
        let td3 = b.ty("i3_t", kind::TYPEDEF, false, 0, int3, &[]);
        let ptr = b.ty("", kind::PTR, false, 0, int, &[]);
        // kind_flag: the width is in the offset word's top byte; a zero width is a plain member.
        b.composite(
            "flagged",
            kind::STRUCT,
            true,
            &[
                ("a", u8t, 0),
                ("lo", u8t, 3 << 24 | 8),
                ("hi", u8t, 5 << 24 | 11),
                // A bitfield as wide as its type, byte-aligned: still declared a bitfield.
                ("whole", int, 32 << 24 | 32),
                ("after", ptr, 64),
            ],
        );
        // No kind_flag: an offset off a byte boundary, or an int type narrower than its size
        // (through a typedef) or shifted.
        let unflagged = b.composite(
            "unflagged",
            kind::STRUCT,
            false,
            &[
                ("x", int, 0),
                ("odd", int, 36),
                ("narrow", int3, 64),
                ("typed", td3, 96),
                ("shift", shifted, 128),
                ("next", u8t, 136),
            ],
        );
        // Found through an anonymous member: the inner struct's kind_flag decides, and the
        // offset is the outer struct's.
        b.composite(
            "outer",
            kind::STRUCT,
            false,
            &[("head", int, 0), ("", unflagged, 64)],
        );
        let btf = Btf::parse(b.bytes()).expect("parses");
        assert_eq!(at(&btf, "flagged", "a"), found(0, false));
        assert_eq!(at(&btf, "flagged", "lo"), found(8, true));
        assert_eq!(at(&btf, "flagged", "hi"), found(11, true));
        assert_eq!(at(&btf, "flagged", "whole"), found(32, true));
        assert_eq!(at(&btf, "flagged", "after"), found(64, false));
        assert_eq!(at(&btf, "unflagged", "x"), found(0, false));
        assert_eq!(at(&btf, "unflagged", "odd"), found(36, true));
        assert_eq!(at(&btf, "unflagged", "narrow"), found(64, true));
        assert_eq!(at(&btf, "unflagged", "typed"), found(96, true));
        assert_eq!(at(&btf, "unflagged", "shift"), found(128, true));
        assert_eq!(at(&btf, "unflagged", "next"), found(136, false));
        assert_eq!(at(&btf, "outer", "head"), found(0, false));
        assert_eq!(at(&btf, "outer", "odd"), found(100, true));
        assert_eq!(at(&btf, "outer", "next"), found(200, false));
        // The members themselves carry the width only under kind_flag.
        let flagged = struct_named(&btf, "flagged");
        let widths: Vec<u32> = btf
            .members(&flagged)
            .map(|m| m.expect("well-formed").bitfield_size)
            .collect();
        assert_eq!(widths, [0, 3, 5, 32, 0]);
    }

    #[test]
    fn reads_big_endian_blobs() {
        let (b, ids) = sample();
        let btf = Btf::parse(b.bytes_with(true, None)).expect("parses");
        check_sample(&btf, ids);
    }

    #[test]
    fn a_longer_header_is_skipped() {
        let (b, ids) = sample();
        let mut bytes = b.bytes();
        // hdr_len 28 with four extra header bytes; the section offsets stay relative to it.
        bytes[4..8].copy_from_slice(&28u32.to_le_bytes());
        bytes.splice(HEADER_LEN..HEADER_LEN, [0xaa; 4]);
        check_sample(&Btf::parse(bytes).expect("parses"), ids);
    }

    /// Runs every query; on malformed input they may fail but must not panic.
    fn exercise(btf: &Btf) {
        for name in ["outer", "bits", "e", "e64", "f", "dup", "last"] {
            for t in btf.types_named(name) {
                let _ = btf.member_at(&t, "y");
                for e in btf.enumerators(&t).flatten() {
                    let _ = btf.name(e.name_off);
                }
                let _ = btf.resolve(t.size_or_type);
            }
        }
        for id in 0..64 {
            if let Ok(t) = btf.type_by_id(id) {
                let _ = btf.member_at(&t, "x");
                let _ = btf.resolve(id);
                let _ = btf.name(t.name_off);
            }
        }
    }

    #[test]
    fn a_record_cut_by_the_type_section_is_an_error() {
        let (b, _) = sample();
        let type_len = b.words.len() * 4;
        let boundaries: Vec<usize> = b.starts.iter().map(|w| w * 4).collect();
        for cut in 0..type_len {
            let r = Btf::parse(b.bytes_with(false, Some(cut as u32)));
            if boundaries.contains(&cut) || cut == 0 {
                let btf = r.unwrap_or_else(|e| panic!("cut at a record boundary {cut}: {e}"));
                assert_eq!(
                    btf.offsets.len(),
                    1 + boundaries.iter().filter(|&&s| s < cut).count()
                );
                exercise(&btf);
            } else {
                let e = r
                    .err()
                    .unwrap_or_else(|| panic!("cut {cut} inside a record parsed"));
                assert!(matches!(e, BtfError::Truncated { .. }), "cut {cut}: {e}");
            }
        }
    }

    #[test]
    fn truncated_data_is_an_error() {
        let (b, _) = sample();
        let bytes = b.bytes();
        for len in 0..bytes.len() {
            let e = Btf::parse(bytes[..len].to_vec()).err();
            // Both sections are whole only in the full blob.
            assert!(matches!(e, Some(BtfError::Header(_))), "{len}: {e:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_or_answers_never_panic() {
        let (b, _) = sample();
        let good = b.bytes();
        // Every byte of a good blob set to a few values in turn.
        for i in 0..good.len() {
            for v in [0x00, 0x01, 0x7f, 0xff] {
                let mut bytes = good.clone();
                bytes[i] = v;
                if let Ok(btf) = Btf::parse(bytes) {
                    exercise(&btf);
                }
            }
        }
        // A good header over pseudo-random type and string sections (xorshift, fixed seed).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut bytes = good[..HEADER_LEN].to_vec();
            let body = good.len() - HEADER_LEN;
            for _ in 0..body {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly small words so that kinds and vlens are often plausible.
                bytes.push(if x.is_multiple_of(3) {
                    x as u8
                } else {
                    (x as u8) & 0x13
                });
            }
            if let Ok(btf) = Btf::parse(bytes) {
                exercise(&btf);
            }
        }
    }

    #[test]
    fn malformed_headers_are_named() {
        let (b, _) = sample();
        let good = b.bytes();
        let with = |at: usize, bytes: &[u8]| {
            let mut g = good.clone();
            g[at..at + bytes.len()].copy_from_slice(bytes);
            Btf::parse(g).err()
        };
        assert_eq!(with(0, &[0, 0]), Some(BtfError::Header("wrong magic")));
        assert_eq!(with(2, &[2]), Some(BtfError::Header("unknown version")));
        assert_eq!(
            with(4, &8u32.to_le_bytes()),
            Some(BtfError::Header("shorter than its header"))
        );
        assert_eq!(
            with(4, &u32::MAX.to_le_bytes()),
            Some(BtfError::Header("shorter than its header"))
        );
        let outside = Some(BtfError::Header("a section lies outside the data"));
        assert_eq!(with(8, &u32::MAX.to_le_bytes()), outside);
        assert_eq!(with(12, &u32::MAX.to_le_bytes()), outside);
        assert_eq!(with(16, &u32::MAX.to_le_bytes()), outside);
        assert_eq!(with(20, &u32::MAX.to_le_bytes()), outside);
        assert_eq!(
            Btf::parse(Vec::new()).err(),
            Some(BtfError::Header("shorter than its header"))
        );
    }

    #[test]
    fn malformed_types_are_errors() {
        // A kind past ENUM64.
        let mut b = Blob::new();
        b.ty("x", 20, false, 0, 0, &[]);
        assert_eq!(
            Btf::parse(b.bytes()).err(),
            Some(BtfError::UnknownKind { id: 1, kind: 20 })
        );
        // A struct whose name is past the string section.
        let mut b = Blob::new();
        b.ty("", kind::STRUCT, false, 0, 0, &[]);
        b.words[0] = 999;
        assert_eq!(
            Btf::parse(b.bytes()).err(),
            Some(BtfError::Name { off: 999 })
        );
        // A name without its NUL (the string section ends mid-name).
        let mut b = Blob::new();
        b.ty("s", kind::STRUCT, false, 0, 0, &[]);
        b.strings.pop();
        assert_eq!(Btf::parse(b.bytes()).err(), Some(BtfError::Name { off: 1 }));
        // A member name that is not UTF-8.
        let mut b = Blob::new();
        let s = b.composite("s", kind::STRUCT, false, &[("m", 0, 0)]);
        // Member names are written before their struct's: "m" is at offset 1.
        b.strings[1] = 0xff;
        let btf = Btf::parse(b.bytes()).expect("parses");
        let t = btf.type_by_id(s).expect("struct");
        let e = btf
            .members(&t)
            .next()
            .map(|m| m.and_then(|m| btf.name(m.name_off).map(|_| ())));
        assert!(matches!(e, Some(Err(BtfError::Name { .. }))), "{e:?}");
    }

    #[test]
    fn loops_and_dangling_ids_are_errors() {
        let mut b = Blob::new();
        // A struct that is its own anonymous member.
        let selfish = b.composite("selfish", kind::STRUCT, false, &[("", 1, 0)]);
        // A typedef loop under an anonymous member.
        let t1 = b.ty("t1", kind::TYPEDEF, false, 0, 3, &[]);
        let t2 = b.ty("t2", kind::TYPEDEF, false, 0, t1, &[]);
        b.composite("looped", kind::STRUCT, false, &[("", t2, 0)]);
        // An anonymous member of a type the BTF does not have, or of void.
        b.composite("dangling", kind::STRUCT, false, &[("", 99, 0)]);
        b.composite("void", kind::STRUCT, false, &[("", 0, 0)]);
        // The member asked for, of a type the BTF does not have: whether it is a bitfield
        // cannot be told.
        b.composite("named", kind::STRUCT, false, &[("x", 99, 0)]);
        let btf = Btf::parse(b.bytes()).expect("parses");
        let q = |s: &str| btf.member_at(&struct_named(&btf, s), "x");
        assert_eq!(q("selfish"), Err(BtfError::Loop { id: selfish }));
        assert_eq!(q("looped"), Err(BtfError::Loop { id: t2 }));
        assert_eq!(q("dangling"), Err(BtfError::NoType { id: 99 }));
        assert_eq!(q("void"), Err(BtfError::NoType { id: 0 }));
        assert_eq!(q("named"), Err(BtfError::NoType { id: 99 }));
        assert_eq!(btf.resolve(t1), Err(BtfError::Loop { id: t1 }));
    }
}
