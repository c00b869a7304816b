//! Symbol addresses from `/proc/kallsyms`.
//!
//! Data symbols such as `namespace_sem` are listed only with `CONFIG_KALLSYMS_ALL`, and
//! addresses read as zero unless the reader has CAP_SYSLOG (or `kptr_restrict` allows it).

use std::fs;

const KALLSYMS: &str = "/proc/kallsyms";

/// Address of `symbol`, or `None` when it is not listed or its address is hidden.
pub fn lookup(symbol: &str) -> Option<u64> {
    let text = fs::read_to_string(KALLSYMS).ok()?;
    find(&text, symbol)
}

fn find(text: &str, symbol: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let address = fields.next()?;
        let _kind = fields.next()?;
        let name = fields.next()?;
        if name != symbol {
            return None;
        }
        let address = u64::from_str_radix(address, 16).ok()?;
        (address != 0).then_some(address)
    })
}

/// Whether data symbols are listed, the mark of `CONFIG_KALLSYMS_ALL`: `init_task` is a data
/// symbol present in every kernel.
pub fn lists_data_symbols() -> bool {
    fs::read_to_string(KALLSYMS)
        .map(|text| {
            text.lines().any(|line| {
                let mut fields = line.split_whitespace().skip(1);
                matches!(fields.next(), Some("D" | "d")) && fields.next() == Some("init_task")
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "ffffffff81000000 T _stext\n\
                          ffffffff82a0b2c0 d namespace_sem\n\
                          0000000000000000 d hidden_sym\n";

    #[test]
    fn finds_listed_symbol() {
        assert_eq!(find(SAMPLE, "namespace_sem"), Some(0xffffffff82a0b2c0));
    }

    #[test]
    fn missing_symbol_is_none() {
        assert_eq!(find(SAMPLE, "mount_lock"), None);
    }

    #[test]
    fn zero_address_is_none() {
        assert_eq!(find(SAMPLE, "hidden_sym"), None);
    }
}
