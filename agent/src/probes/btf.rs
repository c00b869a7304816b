//! Kernel structure offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The programs read `rw_semaphore.owner`, a task's pid, tgid, comm and mount namespace
//! through these offsets, because aya's Rust programs have no CO-RE relocations. Only what
//! is needed to find a struct member is parsed: the type section and the string section.

use std::{collections::HashMap, fs, path::Path};

use thiserror::Error;

/// The BTF file of the running kernel.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error(
        "failed to read `{path}`: {source}; mountscope needs a kernel built with CONFIG_DEBUG_INFO_BTF"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not valid BTF: {reason}")]
    Invalid { path: String, reason: String },
    #[error("struct `{0}` not found in the kernel's BTF")]
    StructNotFound(String),
    #[error("member `{member}` not found in struct `{strukt}` in the kernel's BTF")]
    MemberNotFound { strukt: String, member: String },
}

/// One struct or union member.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

/// A parsed type: its kind, the type it refers to (typedefs, modifiers) and members.
#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    referenced: u32,
    members: Vec<Member>,
}

/// The types of one BTF blob, indexed by type id (id 0 is `void`).
pub struct Btf {
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

impl Btf {
    /// Parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(&data).map_err(|reason| BtfError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Btf, String> {
        let u16_at = |at: usize| -> Result<u16, String> {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or_else(|| format!("truncated at byte {at}"))
        };
        let u32_at = |at: usize| -> Result<u32, String> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| format!("truncated at byte {at}"))
        };

        if u16_at(0)? != BTF_MAGIC {
            return Err("bad magic (big-endian BTF is not supported)".to_string());
        }
        let header_len = u32_at(4)? as usize;
        let type_start = header_len + u32_at(8)? as usize;
        let type_end = type_start + u32_at(12)? as usize;
        let str_start = header_len + u32_at(16)? as usize;
        let str_end = str_start + u32_at(20)? as usize;
        if type_end > data.len() || str_end > data.len() {
            return Err("section past the end of the file".to_string());
        }
        let strings = &data[str_start..str_end];
        let name_at = |offset: u32| -> String {
            let rest = strings.get(offset as usize..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };

        let void = Type {
            kind: 0,
            referenced: 0,
            members: Vec::new(),
        };
        let mut types = vec![void];
        let mut structs_by_name = HashMap::new();
        let mut at = type_start;
        while at < type_end {
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let size_or_type = u32_at(at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;

            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(m + 8)?;
                        members.push(Member {
                            name: name_at(u32_at(m)?),
                            type_id: u32_at(m + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            at += extra;

            let name = name_at(name_off);
            let id = types.len() as u32;
            if kind == KIND_STRUCT && !name.is_empty() {
                structs_by_name.entry(name).or_insert(id);
            }
            let referenced = match kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    size_or_type
                }
                _ => 0,
            };
            types.push(Type {
                kind,
                referenced,
                members,
            });
        }
        Ok(Btf {
            types,
            structs_by_name,
        })
    }

    /// Byte offset of `path` (members separated by dots, for example `ns.inum`) inside struct
    /// `strukt`. Anonymous struct and union members are searched through, as C allows.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u64, BtfError> {
        let mut type_id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::StructNotFound(strukt.to_string()))?;
        let mut bits = 0u64;
        for member in path.split('.') {
            let (offset, member_type) =
                self.find_member(type_id, member)
                    .ok_or_else(|| BtfError::MemberNotFound {
                        strukt: strukt.to_string(),
                        member: path.to_string(),
                    })?;
            bits += offset;
            type_id = self.resolve(member_type);
        }
        Ok(bits / 8)
    }

    /// Follows typedefs and modifiers to the underlying type.
    fn resolve(&self, mut type_id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(type_id as usize) {
                Some(t) if t.referenced != 0 => type_id = t.referenced,
                _ => break,
            }
        }
        type_id
    }

    /// (bit offset, type id) of a named member, searching anonymous members depth first.
    fn find_member(&self, type_id: u32, name: &str) -> Option<(u64, u32)> {
        let t = self.types.get(self.resolve(type_id) as usize)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for member in &t.members {
            if member.name == name {
                return Some((member.bit_offset as u64, member.type_id));
            }
        }
        for member in t.members.iter().filter(|m| m.name.is_empty()) {
            if let Some((offset, id)) = self.find_member(member.type_id, name) {
                return Some((member.bit_offset as u64 + offset, id));
            }
        }
        None
    }

    /// Whether the BTF names a struct, for example to check a probe target exists.
    pub fn has_struct(&self, name: &str) -> bool {
        self.structs_by_name.contains_key(name)
    }
}

/// The offsets the programs need, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KernelOffsets {
    pub rwsem_owner: u64,
    pub task_pid: u64,
    pub task_tgid: u64,
    pub task_comm: u64,
    pub task_nsproxy: u64,
    pub nsproxy_mnt_ns: u64,
    pub mnt_ns_inum: u64,
}

impl KernelOffsets {
    /// Reads every offset from `btf`.
    pub fn from_btf(btf: &Btf) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            rwsem_owner: btf.member_offset("rw_semaphore", "owner")?,
            task_pid: btf.member_offset("task_struct", "pid")?,
            task_tgid: btf.member_offset("task_struct", "tgid")?,
            task_comm: btf.member_offset("task_struct", "comm")?,
            task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
            nsproxy_mnt_ns: btf.member_offset("nsproxy", "mnt_ns")?,
            mnt_ns_inum: btf.member_offset("mnt_namespace", "ns.inum")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob with `struct outer { int a; struct { int b; }; struct inner in; }`
    /// and `struct inner { long x; int y; }`.
    fn sample_btf() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0inner\0in\0x\0y\0";
        let name = |s: &str| -> u32 {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[name("int"), KIND_INT << 24, 4, 32]);
        // 2: anonymous struct { int b; }
        push(&[0, KIND_STRUCT << 24 | 1, 4, name("b"), 1, 0]);
        // 3: struct inner { long x @0; int y @64 }
        push(&[
            name("inner"),
            KIND_STRUCT << 24 | 2,
            16,
            name("x"),
            1,
            0,
            name("y"),
            1,
            64,
        ]);
        // 4: struct outer { int a @0; anon @32; struct inner in @64 }
        push(&[
            name("outer"),
            KIND_STRUCT << 24 | 3,
            24,
            name("a"),
            1,
            0,
            0,
            2,
            32,
            name("in"),
            3,
            64,
        ]);

        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        blob.extend_from_slice(&24u32.to_le_bytes());
        blob.extend_from_slice(&0u32.to_le_bytes());
        blob.extend_from_slice(&(types.len() as u32).to_le_bytes());
        blob.extend_from_slice(&(types.len() as u32).to_le_bytes());
        blob.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn direct_member_offset() {
        let btf = Btf::parse(&sample_btf()).unwrap();
        assert_eq!(btf.member_offset("inner", "y").unwrap(), 8);
    }

    #[test]
    fn anonymous_member_offset() {
        let btf = Btf::parse(&sample_btf()).unwrap();
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 4);
    }

    #[test]
    fn nested_member_offset() {
        let btf = Btf::parse(&sample_btf()).unwrap();
        assert_eq!(btf.member_offset("outer", "in.y").unwrap(), 16);
    }

    #[test]
    fn missing_member_is_named() {
        let btf = Btf::parse(&sample_btf()).unwrap();
        let err = btf.member_offset("outer", "zz").unwrap_err().to_string();
        assert!(err.contains("`zz`"), "{err}");
    }

    #[test]
    fn bad_magic_rejected() {
        assert!(Btf::parse(&[0, 0, 0, 0]).is_err());
    }

    #[test]
    fn running_kernel_rwsem_owner() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: {VMLINUX_BTF} is not readable");
            return;
        };
        // `owner` follows the 8-byte `count` in every kernel since 5.3.
        assert_eq!(btf.member_offset("rw_semaphore", "owner").unwrap(), 8);
    }
}
